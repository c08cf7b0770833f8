"""The examples' data loaders, on small files the tests write in the real formats:
keras.datasets' mnist.npz, IDX (.gz and raw, real magic numbers), CIFAR-10 python
pickled batches in a tar.gz and in the extracted folder."""

import gzip
import pathlib
import pickle
import struct
import sys
import tarfile

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import data  # noqa: E402


def _mnist_arrays(n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}


def _check_mnist(split, arrays):
    (x_train, y_train), (x_test, y_test) = split
    assert x_train.shape == (len(arrays["x_train"]), 28, 28, 1) and x_train.dtype == np.uint8
    np.testing.assert_array_equal(x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(y_train, arrays["y_train"])
    np.testing.assert_array_equal(x_test[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])


def _write_idx_by_hand(path, array, gz=True):
    """Independent of data.write_idx: magic 0x00000803 (images) / 0x00000801 (labels)."""
    magic = 0x00000800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        pathlib.Path(path).write_bytes(raw)
    return raw


def test_npz_as_keras_writes_it(tmp_path):
    arrays = _mnist_arrays()
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    _check_mnist(data.load("mnist", tmp_path), arrays)          # the folder
    _check_mnist(data.load("mnist", tmp_path / "mnist.npz"), arrays)  # the file


def test_npz_missing_key_is_an_error(tmp_path):
    arrays = _mnist_arrays()
    del arrays["y_test"]
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(ValueError, match="y_test"):
        data.load("mnist", tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files(tmp_path, gz):
    arrays = _mnist_arrays()
    for key, stem in data.IDX_FILES.items():
        raw = _write_idx_by_hand(tmp_path / (stem + (".gz" if gz else "")), arrays[key], gz=gz)
        assert raw[:4] == (b"\x00\x00\x08\x03" if key.startswith("x") else b"\x00\x00\x08\x01")
    _check_mnist(data.load("mnist", tmp_path), arrays)
    _check_mnist(data.load("fashion_mnist", tmp_path), arrays)


def test_idx_in_a_subfolder_named_after_the_dataset(tmp_path):
    arrays = _mnist_arrays()
    (tmp_path / "fashion-mnist").mkdir()
    for key, stem in data.IDX_FILES.items():
        _write_idx_by_hand(tmp_path / "fashion-mnist" / (stem + ".gz"), arrays[key])
    _check_mnist(data.load("fashion_mnist", tmp_path), arrays)


def test_write_idx_round_trip_and_header(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data.write_idx(tmp_path / "a-idx3-ubyte.gz", array)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    assert raw[:4] == b"\x00\x00\x08\x03" and struct.unpack(">3I", raw[4:16]) == (2, 3, 4)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a-idx3-ubyte.gz"), array)


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"\x00\x01\x02")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short")


def test_idx_wider_types_are_big_endian(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "ints").write_bytes(b"\x00\x00\x0c\x01" + struct.pack(">I", 3) + values.tobytes())
    np.testing.assert_array_equal(data.read_idx(tmp_path / "ints"), [1, -2, 70000])


def _cifar_batches(per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    batches = {}
    for name in data.CIFAR_TRAIN + [data.CIFAR_TEST]:
        # The real layout: rows of 3072 = 1024 R, 1024 G, 1024 B, each row-major 32x32.
        batches[name] = {b"batch_label": name.encode(),
                         b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
                         b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         b"filenames": [b"x.png"] * per_batch}
    return batches


def _write_cifar_folder(folder, batches):
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))


def _check_cifar(split, batches):
    (x_train, y_train), (x_test, y_test) = split
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    first = batches["data_batch_1"][b"data"][0]
    # pixel (row 1, col 2): R at 1*32+2, G at 1024 + that, B at 2048 + that
    np.testing.assert_array_equal(x_train[0, 1, 2], [first[34], first[1024 + 34], first[2048 + 34]])
    np.testing.assert_array_equal(y_train[:4], batches["data_batch_1"][b"labels"])
    np.testing.assert_array_equal(y_train[16:], batches["data_batch_5"][b"labels"])
    np.testing.assert_array_equal(y_test, batches["test_batch"][b"labels"])
    np.testing.assert_array_equal(x_test[3, 31, 31, 2], batches["test_batch"][b"data"][3][3071])


def test_cifar_extracted_folder(tmp_path):
    batches = _cifar_batches()
    _write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    _check_cifar(data.load("cifar10", tmp_path / "cifar-10-batches-py"), batches)
    _check_cifar(data.load("cifar10", tmp_path), batches)  # its parent folder


def test_cifar_tar_gz(tmp_path):
    batches = _cifar_batches()
    _write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py", batches)
    tar_path = tmp_path / "dl" / "cifar-10-python.tar.gz"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _check_cifar(data.load("cifar10", tar_path), batches)         # the file
    _check_cifar(data.load("cifar10", tar_path.parent), batches)  # the folder holding it


def test_cifar_missing_batch(tmp_path):
    batches = _cifar_batches()
    del batches["data_batch_3"]
    _write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(data.DataNotFoundError, match="data_batch_3"):
        data.load("cifar10", tmp_path / "cifar-10-batches-py")


@pytest.mark.parametrize("dataset, hint", [("mnist", "mnist.npz"), ("fashion_mnist", "apt-get install"),
                                           ("cifar10", "cifar-10-python.tar.gz")])
def test_nothing_there_says_how_to_get_the_data(tmp_path, dataset, hint):
    with pytest.raises(data.DataNotFoundError, match="--data-dir") as err:
        data.load(dataset, tmp_path / "empty")
    assert hint in str(err.value)
    with pytest.raises(data.DataNotFoundError):
        data.load(dataset, tmp_path)  # exists, but empty


def test_no_download_without_data(monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", pathlib.Path("/nonexistent"))
    with pytest.raises(data.DataNotFoundError, match="--data-dir"):
        data.load("fashion_mnist", download=False)


def test_wrong_shape_is_rejected(tmp_path):
    arrays = _mnist_arrays()
    arrays["x_train"] = arrays["x_train"][:, :20]
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(ValueError, match="expected"):
        data.load("mnist", tmp_path)


def test_synthetic_shapes():
    (x, y), (xt, yt) = data.synthetic("cifar10", 10, 3)
    assert x.shape == (10, 32, 32, 3) and xt.shape == (3, 32, 32, 3)
    assert x.dtype == np.uint8 and y.max() < 10
    (x, _), (xt, _) = data.synthetic("mnist")
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
