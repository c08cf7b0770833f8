"""Data loaders for the training examples: MNIST, Fashion-MNIST, CIFAR-10.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` as numpy arrays, images
``uint8`` channels-last (MNIST-like: ``(N, 28, 28, 1)``, CIFAR-10: ``(N, 32, 32, 3)``),
labels ``uint8`` of shape ``(N,)``.

Where the data comes from, in order:

1. ``data_dir`` when given — a folder or a file in one of the standard formats:
   ``mnist.npz`` (keys ``x_train``/``y_train``/``x_test``/``y_test``, as
   ``keras.datasets`` writes it; any ``*.npz`` file with those keys), the four IDX
   files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
   ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``),
   ``cifar-10-python.tar.gz`` or its extracted folder ``cifar-10-batches-py``;
2. Fashion-MNIST only: Debian's ``dataset-fashion-mnist`` package
   (``/usr/share/datasets/fashion-mnist``, IDX files);
3. ``keras.datasets`` (its cache in ``~/.keras/datasets``, or a download).

When none works, :class:`DataNotFoundError` says how to get the data.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]
Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# IDX type codes -> numpy dtypes (big-endian), from the format's definition.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000), "cifar10": (50000, 10000)}
NUM_CLASSES = 10

HOW_TO_GET = {
    "mnist": (
        "MNIST not found. Either run once on a machine with internet access "
        "(keras.datasets.mnist.load_data() caches ~/.keras/datasets/mnist.npz; copy that file), "
        "or download mnist.npz from https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz "
        "or the four IDX .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), and pass their folder (or the .npz file) "
        "with --data-dir."),
    "fashion_mnist": (
        "Fashion-MNIST not found. On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` "
        "(IDX files in /usr/share/datasets/fashion-mnist, used automatically); or run once with internet "
        "access (keras.datasets.fashion_mnist caches ~/.keras/datasets/fashion-mnist); or pass a folder "
        "with the four IDX .gz files with --data-dir."),
    "cifar10": (
        "CIFAR-10 not found. Download cifar-10-python.tar.gz (CIFAR-10 python version, "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) and pass it, its folder, or the "
        "extracted cifar-10-batches-py folder with --data-dir; or run once with internet access "
        "(keras.datasets.cifar10 caches ~/.keras/datasets/cifar-10-batches-py)."),
}


class DataNotFoundError(FileNotFoundError):
    """No usable copy of the data set; the message says how to get one."""


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------

def _open(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not): magic ``0x0000TTNN`` (TT the type
    code, NN the number of dimensions), NN big-endian uint32 sizes, then the data."""
    path = Path(path)
    with _open(path) as f:
        header = f.read(4)
        if len(header) != 4 or header[0] != 0 or header[1] != 0:
            raise ValueError(f"{path}: not an IDX file (magic {header.hex()})")
        type_code, ndim = header[2], header[3]
        if type_code not in _IDX_DTYPES:
            raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        dtype = np.dtype(_IDX_DTYPES[type_code])
        count = int(np.prod(shape)) if shape else 1
        data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} of {count * dtype.itemsize} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: PathLike, array: np.ndarray, compress: Optional[bool] = None) -> None:
    """Write ``array`` (uint8 here) as an IDX file; gzip when the name ends in .gz."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    compress = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(header + array.tobytes())


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def has_idx(folder: PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and all(_find_idx(folder, s) for s in IDX_FILES.values())


def load_idx_folder(folder: PathLike) -> Split:
    """The four MNIST-style IDX files of ``folder`` (.gz or not)."""
    folder = Path(folder)
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _find_idx(folder, stem)
        if path is None:
            raise DataNotFoundError(f"{folder}: no {stem}[.gz]")
        arrays[key] = read_idx(path)
    return _mnist_like(arrays, str(folder))


def load_npz(path: PathLike) -> Split:
    """An ``.npz`` with x_train, y_train, x_test, y_test (keras.datasets' mnist.npz)."""
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in IDX_FILES if k not in f.files]
        if missing:
            raise ValueError(f"{path}: missing keys {missing} (has {f.files})")
        arrays = {k: f[k] for k in IDX_FILES}
    return _mnist_like(arrays, str(path))


def _mnist_like(arrays: dict, source: str) -> Split:
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    y_train = np.asarray(arrays["y_train"]).reshape(-1).astype(np.uint8)
    y_test = np.asarray(arrays["y_test"]).reshape(-1).astype(np.uint8)
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"{source}: {len(x_train)} train images but {len(y_train)} labels, "
                         f"{len(x_test)} test images but {len(y_test)} labels")
    return (x_train.astype(np.uint8), y_train), (x_test.astype(np.uint8), y_test)


def _cifar_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    batch = pickle.loads(raw, encoding="bytes")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{name}: not a CIFAR-10 batch (keys {list(batch)})")
    x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, np.asarray(labels, dtype=np.uint8)


CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"


def load_cifar10_folder(folder: PathLike) -> Split:
    """The extracted ``cifar-10-batches-py`` folder (pickled batches)."""
    folder = Path(folder)
    parts = []
    for name in CIFAR_TRAIN + [CIFAR_TEST]:
        path = folder / name
        if not path.is_file():
            raise DataNotFoundError(f"{folder}: no {name}")
        parts.append(_cifar_batch(path.read_bytes(), str(path)))
    x_train = np.concatenate([p[0] for p in parts[:-1]])
    y_train = np.concatenate([p[1] for p in parts[:-1]])
    return (x_train, y_train), parts[-1]


def load_cifar10_tar(path: PathLike) -> Split:
    """``cifar-10-python.tar.gz`` read in place (no extraction)."""
    found = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in CIFAR_TRAIN + [CIFAR_TEST]:
                found[base] = _cifar_batch(tar.extractfile(member).read(), f"{path}:{member.name}")
    missing = [n for n in CIFAR_TRAIN + [CIFAR_TEST] if n not in found]
    if missing:
        raise DataNotFoundError(f"{path}: missing {missing}")
    x_train = np.concatenate([found[n][0] for n in CIFAR_TRAIN])
    y_train = np.concatenate([found[n][1] for n in CIFAR_TRAIN])
    return (x_train, y_train), found[CIFAR_TEST]


# ---------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------

def _from_path(dataset: str, path: Path) -> Optional[Split]:
    """Load ``dataset`` from a file or folder; None if nothing there fits."""
    if dataset == "cifar10":
        if path.is_file():
            return load_cifar10_tar(path)
        for folder in (path, path / "cifar-10-batches-py"):
            if (folder / CIFAR_TEST).is_file():
                return load_cifar10_folder(folder)
        if (path / "cifar-10-python.tar.gz").is_file():
            return load_cifar10_tar(path / "cifar-10-python.tar.gz")
        return None
    if path.is_file():
        return load_npz(path) if path.suffix == ".npz" else None
    npz_names = ["mnist.npz"] if dataset == "mnist" else ["fashion_mnist.npz", "fashion-mnist.npz"]
    for name in npz_names:
        if (path / name).is_file():
            return load_npz(path / name)
    for folder in (path, path / dataset.replace("_", "-"), path / dataset):
        if has_idx(folder):
            return load_idx_folder(folder)
    return None


def _from_keras(dataset: str) -> Split:
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist,
              "cifar10": keras.datasets.cifar10}[dataset]
    (x_train, y_train), (x_test, y_test) = loader.load_data()
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return ((x_train.astype(np.uint8), y_train.reshape(-1).astype(np.uint8)),
            (x_test.astype(np.uint8), y_test.reshape(-1).astype(np.uint8)))


def load(dataset: str, data_dir: Optional[PathLike] = None, download: bool = True) -> Split:
    """Load ``dataset`` ('mnist', 'fashion_mnist', 'cifar10'); see the module docstring.

    With ``data_dir`` only that path is tried (no download). Raises
    :class:`DataNotFoundError` with instructions when no copy is found.
    """
    if dataset not in SHAPES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(SHAPES)}")
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        split = _from_path(dataset, path) if path.exists() else None
        if split is None:
            raise DataNotFoundError(f"{path}: no {dataset} data there. {HOW_TO_GET[dataset]}")
        return _check(dataset, split)
    if dataset == "fashion_mnist" and has_idx(DEBIAN_FASHION_MNIST):
        return _check(dataset, load_idx_folder(DEBIAN_FASHION_MNIST))
    if download:
        try:
            return _check(dataset, _from_keras(dataset))
        except Exception as err:  # no network, no cache: one clear message
            raise DataNotFoundError(f"{HOW_TO_GET[dataset]} (keras.datasets failed: "
                                    f"{type(err).__name__}: {err})") from None
    raise DataNotFoundError(HOW_TO_GET[dataset])


def _check(dataset: str, split: Split) -> Split:
    (x_train, y_train), (x_test, y_test) = split
    want = SHAPES[dataset]
    for name, x in (("train", x_train), ("test", x_test)):
        if x.shape[1:] != want:
            raise ValueError(f"{dataset} {name} images have shape {x.shape[1:]}, expected {want}")
    return split


def synthetic(dataset: str, n_train: Optional[int] = None, n_test: Optional[int] = None,
              seed: int = 0) -> Split:
    """Random uint8 images and labels of ``dataset``'s shape (full size by default):
    for smoke tests and throughput runs, not for accuracy."""
    full_train, full_test = SIZES[dataset]
    n_train = full_train if n_train is None else n_train
    n_test = full_test if n_test is None else n_test
    rng = np.random.default_rng(seed)
    shape = SHAPES[dataset]
    return ((rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
             rng.integers(0, NUM_CLASSES, n_train, dtype=np.uint8)),
            (rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
             rng.integers(0, NUM_CLASSES, n_test, dtype=np.uint8)))
