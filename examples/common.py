"""Shared training harness of examples/train_mnist.py and examples/train_cifar10.py.

Runs on any Keras 3 backend (``--backend`` or ``KERAS_BACKEND``) and uses the GPU
when the backend sees one (``--cpu`` hides it). Keras and the backends are imported
only after the flags are parsed, so ``--backend``/``--cpu`` take effect.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import data as data_lib  # noqa: E402

QUICK = dict(epochs=1, limit_train=256, limit_test=128)


# ---------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------

def make_parser(description: str, *, datasets: list[str], models: list[str], defaults: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=datasets, default=datasets[0])
    p.add_argument("--model", choices=models, default=models[0])
    p.add_argument("--epochs", type=int, default=defaults["epochs"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"],
                   help="peak learning rate of the one-cycle schedule")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=defaults.get("optimizer", "sgd"))
    p.add_argument("--weight-decay", type=float, default=defaults.get("weight_decay", 0.0))
    p.add_argument("--dropout", type=float, default=defaults.get("dropout", 0.05))
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train without data augmentation")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on a GPU, mixed_bfloat16 on the CPU")
    p.add_argument("--data-dir", default=None,
                   help="folder or file with the data in a standard format (see examples/data.py); "
                        "default: keras.datasets (cache or download)")
    p.add_argument("--synthetic", action="store_true",
                   help="random data of the right shape (smoke tests, throughput); accuracy is meaningless")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--limit-test", type=int, default=None, help="use only the first N test images")
    p.add_argument("--holdout", type=int, default=0,
                   help="validate on the last N training images (not trained on) instead of the test "
                        "set; the test set is then only evaluated once, at the end (for tuning)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: --synthetic, 1 epoch, {QUICK['limit_train']} train / "
                        f"{QUICK['limit_test']} test images")
    p.add_argument("--out", default=None, help="output folder (results.json, history, curves.png)")
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default=None,
                   help="Keras backend (default: KERAS_BACKEND or Keras' default)")
    p.add_argument("--cpu", action="store_true", help="hide GPUs: run on the CPU")
    p.add_argument("--workers", type=int, default=1,
                   help="threads that prepare (augment) batches; >1 helps keep a GPU busy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=2, help="model.fit verbosity")
    return p


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.quick:
        args.synthetic = True
        args.epochs = QUICK["epochs"]
        args.limit_train = args.limit_train or QUICK["limit_train"]
        args.limit_test = args.limit_test or QUICK["limit_test"]
    if args.out is None:
        args.out = str(Path("runs") / f"{args.model}-{args.dataset}{'-synthetic' if args.synthetic else ''}")
    return args


def setup_environment(args: argparse.Namespace) -> None:
    """Before keras is imported: backend, visible devices, log noise."""
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" in sys.modules and args.backend:
        import keras
        if keras.backend.backend() != args.backend:
            raise SystemExit(f"--backend {args.backend}: keras is already imported with the "
                             f"{keras.backend.backend()} backend; set KERAS_BACKEND instead")


# ---------------------------------------------------------------------------
# Devices and memory (backend-agnostic)
# ---------------------------------------------------------------------------

def accelerator() -> dict[str, Any]:
    """The device Keras computes on: {'backend', 'kind': 'gpu'|'cpu', 'name'}."""
    import keras

    backend = keras.backend.backend()
    kind, name = "cpu", platform.processor() or platform.machine()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                kind = "gpu"
                details = tf.config.experimental.get_device_details(gpus[0])
                name = details.get("device_name", gpus[0].name)
        elif backend == "jax":
            import jax
            dev = jax.devices()[0]
            if dev.platform == "gpu" or dev.platform == "cuda" or dev.platform == "rocm":
                kind, name = "gpu", dev.device_kind
        elif backend == "torch":
            import torch
            if torch.cuda.is_available():
                kind, name = "gpu", torch.cuda.get_device_name(0)
    except Exception as err:  # pragma: no cover - diagnostic only
        name = f"{name} (device query failed: {err})"
    return {"backend": backend, "kind": kind, "name": name, "cpu_count": os.cpu_count()}


def peak_rss_bytes() -> Optional[int]:
    """Peak resident memory of this process (host RAM; Linux reports KiB)."""
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
    except Exception:
        return None


# ---------------------------------------------------------------------------
# Data pipeline: numpy augmentation in a PyDataset (works with every backend)
# ---------------------------------------------------------------------------

def random_affine(x: np.ndarray, rng: np.random.Generator, max_degrees: float, max_shift: float) -> np.ndarray:
    """Rotate by U(-max_degrees, max_degrees) and shift by U(-max_shift, max_shift) px,
    bilinear, zero outside. ``x``: (B, H, W, C) float32."""
    b, h, w, c = x.shape
    theta = np.deg2rad(rng.uniform(-max_degrees, max_degrees, b)).astype(np.float32)
    ty, tx = (rng.uniform(-max_shift, max_shift, (2, b)).astype(np.float32))
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    dy = yy[None] - cy - ty[:, None, None]
    dx = xx[None] - cx - tx[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    sy = cos * dy - sin * dx + cy
    sx = sin * dy + cos * dx + cx
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    bi = np.arange(b)[:, None, None]
    out = np.zeros_like(x)
    for oy, ox, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                           (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yi, xi = y0 + oy, x0 + ox
        valid = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[..., None]
        out += weight * valid * x[bi, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return out


def crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop from a reflect-padded image, random horizontal flip. (B, H, W, C)."""
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    oy, ox = rng.integers(0, 2 * pad + 1, (2, b))
    rows = oy[:, None] + np.arange(h)
    cols = ox[:, None] + np.arange(w)
    out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(b) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def cutout(x: np.ndarray, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    """Zero one size x size square per image (after normalisation: the mean colour)."""
    b, h, w, _ = x.shape
    top = rng.integers(0, h, b)[:, None, None] - size // 2  # centre uniform on the image
    left = rng.integers(0, w, b)[:, None, None] - size // 2
    yy, xx = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    mask = (yy >= top) & (yy < top + size) & (xx >= left) & (xx < left + size)
    x = x.copy()
    x[mask] = 0.0
    return x


AUGMENTATIONS = {
    # MNIST-like: small rotations and shifts (digits stay legible).
    "affine": lambda x, rng: random_affine(x, rng, max_degrees=8.0, max_shift=2.0),
    # CIFAR-10: pad-4 random crop + horizontal flip (cutout after normalisation).
    "crop_flip": crop_flip,
}


def make_batches(x, y, batch_size, *, mean, std, augment=None, cutout_size=0, shuffle=True, seed=0,
                 workers=1):
    """A keras.utils.PyDataset of normalised float32 batches, augmented on the fly."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False,
                             max_queue_size=max(10, 2 * workers))
            self.epoch = 0
            self.order = np.arange(len(x))
            if shuffle:
                np.random.default_rng([seed, 0]).shuffle(self.order)

        def __len__(self):
            return math.ceil(len(x) / batch_size)

        def __getitem__(self, i):
            # One generator per (epoch, batch): reproducible, and safe with worker threads.
            rng = np.random.default_rng([seed, self.epoch, i, 1])
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            xb = x[idx].astype(np.float32) / 255.0
            if augment is not None:
                xb = AUGMENTATIONS[augment](xb, rng)
            xb = (xb - mean) / std
            if cutout_size:
                xb = cutout(xb, rng, cutout_size)
            return xb.astype(np.float32), y[idx].astype(np.int32)

        def on_epoch_end(self):
            self.epoch += 1
            if shuffle:
                np.random.default_rng([seed, self.epoch]).shuffle(self.order)

    return Batches()


def normalised(x, mean, std):
    return ((x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


# ---------------------------------------------------------------------------
# Schedule and callbacks
# ---------------------------------------------------------------------------

def one_cycle(max_lr: float, total_steps: int, pct_start: float = 0.25,
              div_factor: float = 10.0, final_div: float = 100.0):
    """One-cycle learning rate: linear warm-up from max_lr/div_factor to max_lr over
    pct_start of the steps, then cosine annealing to max_lr/final_div."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="keras_rf_examples")
    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, max_lr, total_steps, pct_start, div_factor, final_div):
            self.max_lr, self.total_steps = float(max_lr), int(total_steps)
            self.pct_start, self.div_factor, self.final_div = pct_start, div_factor, final_div

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = float(max(1, int(self.total_steps * self.pct_start)))
            rest = float(max(1, self.total_steps - warm))
            start, end = self.max_lr / self.div_factor, self.max_lr / self.final_div
            up = start + (self.max_lr - start) * step / warm
            t = ops.clip((step - warm) / rest, 0.0, 1.0)
            down = end + (self.max_lr - end) * 0.5 * (1.0 + ops.cos(math.pi * t))
            return ops.where(step < warm, up, down)

        def get_config(self):
            return dict(max_lr=self.max_lr, total_steps=self.total_steps, pct_start=self.pct_start,
                        div_factor=self.div_factor, final_div=self.final_div)

    return OneCycle(max_lr, total_steps, pct_start, div_factor, final_div)


def timing_callback(n_train: int):
    """Per epoch: training seconds (first to last train batch, validation excluded) and
    images/s, added to the logs (so to the history)."""
    import keras

    class Timing(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch == self.params.get("steps", 0) - 1 and logs and "loss" in logs:
                float(logs["loss"])  # wait for asynchronous backends (JAX) to finish the epoch
            self.t_train = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = self.t_train - self.t0
            if logs is not None:
                logs["epoch_seconds"] = seconds
                logs["images_per_second"] = n_train / seconds
                logs["epoch_wall_seconds"] = time.perf_counter() - self.t0

    return Timing()


def rf_callback(batch_size: int):
    """keras_rf.RFCallback for this batch size (the summary is printed by the script
    already, so the callback's own print goes nowhere)."""
    from keras_rf import RFCallback
    return RFCallback(batch_size=batch_size, print_fn=lambda *a, **k: None)


def estimated_memory(model, batch_size: int, optimizer) -> tuple[Optional[int], Optional[dict]]:
    """keras_rf.estimate_memory(...).total_bytes and its breakdown (None if it fails)."""
    from keras_rf import estimate_memory
    try:
        est = estimate_memory(model, batch_size, optimizer=optimizer)
    except Exception as err:
        print(f"estimate_memory failed: {type(err).__name__}: {err}")
        return None, None
    details = est.to_dict() if hasattr(est, "to_dict") else None
    return int(est.total_bytes), details


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------

def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if hasattr(value, "numpy"):
        return _jsonable(np.asarray(value))
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def plot_curves(history: dict, path: Path, title: str, val_label: str = "test") -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no training-curve PNG")
        return None
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if key in history:
            ax.plot(epochs, history[key], "o-", label="train")
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], "s-", label=val_label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def run(args: argparse.Namespace, *, augment: Optional[str], cutout_size: int = 0,
        argv: Optional[list[str]] = None) -> dict:
    """Load data, build, summarise, train, evaluate, write the outputs; return results."""
    setup_environment(args)
    import keras

    import keras_rf
    from architectures import MODELS

    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    device = accelerator()
    policy = "float32"
    if args.mixed_precision:
        policy = "mixed_float16" if device["kind"] == "gpu" else "mixed_bfloat16"
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        return _run(args, keras, keras_rf, MODELS, device, policy, augment, cutout_size, argv)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def _run(args, keras, keras_rf, MODELS, device, policy, augment, cutout_size, argv):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"Keras {keras.__version__}, backend {device['backend']}, device {device['kind']} "
          f"({device['name']}), dtype policy {policy}")

    # -- data ----------------------------------------------------------------
    if args.synthetic:
        (x_train, y_train), (x_test, y_test) = data_lib.synthetic(
            args.dataset, args.limit_train, args.limit_test, seed=args.seed)
        source = "synthetic (random pixels and labels)"
    else:
        try:
            (x_train, y_train), (x_test, y_test) = data_lib.load(args.dataset, args.data_dir)
        except data_lib.DataNotFoundError as err:
            raise SystemExit(f"error: {err}") from None
        source = args.data_dir or ("Debian dataset-fashion-mnist" if args.dataset == "fashion_mnist"
                                   and data_lib.has_idx(data_lib.DEBIAN_FASHION_MNIST) else "keras.datasets")
    if args.limit_train:
        x_train, y_train = x_train[:args.limit_train], y_train[:args.limit_train]
    if args.limit_test:
        x_test, y_test = x_test[:args.limit_test], y_test[:args.limit_test]
    x_val = y_val = None
    if args.holdout:
        if not 0 < args.holdout < len(x_train):
            raise SystemExit(f"--holdout {args.holdout}: need 0 < N < {len(x_train)} training images")
        x_val, y_val = x_train[-args.holdout:], y_train[-args.holdout:]
        x_train, y_train = x_train[:-args.holdout], y_train[:-args.holdout]
    mean = (x_train.reshape(-1, x_train.shape[-1]).mean(0) / 255.0).astype(np.float32)
    std = (x_train.reshape(-1, x_train.shape[-1]).std(0) / 255.0).astype(np.float32) + 1e-6
    print(f"Data: {args.dataset} from {source}: {len(x_train)} train, {len(x_test)} test images "
          f"{x_train.shape[1:]}{f', {len(x_val)} held out for validation' if args.holdout else ''}")

    # -- model and its receptive fields ----------------------------------------
    model = MODELS[args.model](input_shape=x_train.shape[1:], num_classes=data_lib.NUM_CLASSES,
                               dropout=args.dropout)
    report = keras_rf.rf_summary(model, batch_size=args.batch_size)
    (out / "rf_summary.txt").write_text(report.to_text() + "\n")
    last = report.last_spatial_layer
    last_rf = list(last.receptive_field) if last and last.receptive_field else None
    input_size = list(report.input_spatial_size or [])
    params = int(model.count_params())

    # -- optimisation ------------------------------------------------------------
    train_batches = make_batches(x_train, y_train, args.batch_size, mean=mean, std=std,
                                 augment=augment if args.augment else None,
                                 cutout_size=cutout_size if args.augment else 0, seed=args.seed,
                                 workers=args.workers)
    steps = len(train_batches)
    schedule = one_cycle(args.lr, steps * args.epochs)
    if args.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                         weight_decay=args.weight_decay or None)
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    est_bytes, est_details = estimated_memory(model, args.batch_size, optimizer)
    x_test_n = normalised(x_test, mean, std)
    y_test_i = y_test.astype(np.int32)
    validation = (x_test_n, y_test_i) if x_val is None else (normalised(x_val, mean, std),
                                                              y_val.astype(np.int32))

    callbacks = [timing_callback(len(x_train))]
    rfcb = rf_callback(args.batch_size)
    callbacks.append(rfcb)
    print(f"Training {args.epochs} epoch(s), batch {args.batch_size}, {steps} steps/epoch, "
          f"{args.optimizer} one-cycle peak lr {args.lr}, augmentation "
          f"{(augment + (f'+cutout{cutout_size}' if cutout_size else '')) if args.augment else 'none'}"
          )
    t0 = time.perf_counter()
    history = model.fit(train_batches, epochs=args.epochs, validation_data=validation,
                        validation_batch_size=max(args.batch_size, 256),
                        callbacks=callbacks, verbose=args.verbose)
    train_wall = time.perf_counter() - t0
    test_loss, test_acc = model.evaluate(x_test_n, y_test_i, batch_size=max(args.batch_size, 256), verbose=0)

    # -- results -------------------------------------------------------------------
    hist = {k: [_jsonable(v) for v in vals] for k, vals in history.history.items()}
    epoch_seconds = hist.get("epoch_seconds", [])
    # The first epoch includes tracing/compilation: the median is the steady state.
    median_epoch = statistics.median(epoch_seconds) if epoch_seconds else None
    # NaN where the backend cannot measure (TensorFlow / torch on CPU): recorded as null
    peak_values = [v for v in hist.get("peak_memory_bytes", []) if v is not None and v == v]
    peak = int(max(peak_values)) if peak_values else None
    hist = {k: [None if (isinstance(v, float) and v != v) else v for v in vals]
            for k, vals in hist.items()}
    est_from_logs = [v for v in hist.get("estimated_memory_bytes", []) if v is not None]
    if est_bytes is None and est_from_logs:
        est_bytes = int(est_from_logs[-1])
    val_acc = hist.get("val_accuracy", [])
    results = {
        "script": Path(sys.argv[0]).name if argv is None else "in-process",
        "command": " ".join(["python"] + sys.argv) if argv is None else " ".join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": args.dataset,
        "data_source": source,
        "synthetic": bool(args.synthetic),
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "model": model.name,
        "params": params,
        "trainable_params": int(report.trainable_params),
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "validation": "test set" if x_val is None else f"last {len(x_val)} training images",
        # Per-epoch validation accuracy (on the test set unless --holdout): shown, not used
        # to pick the model; test_accuracy is the final epoch's.
        "best_epoch_val_accuracy": max(val_acc) if val_acc else None,
        "best_epoch": (int(np.argmax(val_acc)) + 1) if val_acc else None,
        "final_val_accuracy": val_acc[-1] if val_acc else None,
        "last_rf": last_rf,
        "last_rf_layer": last.name if last else None,
        "input_size": input_size,
        "covers_input": report.covers_input(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "epoch_seconds": median_epoch,
        "epoch_seconds_per_epoch": epoch_seconds,
        "images_per_second": (len(x_train) / median_epoch) if median_epoch else None,
        "train_wall_seconds": train_wall,
        "peak_memory_bytes": peak,
        "estimated_memory_bytes": est_bytes,
        "estimated_memory": est_details,
        "activation_memory_bytes": report.total_activation_bytes,
        "peak_host_rss_bytes": peak_rss_bytes(),
        "optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
        "dropout": args.dropout, "augment": bool(args.augment),
        "dtype_policy": policy,
        "device": device,
        "keras_version": keras.__version__,
        "peak_memory_method": rfcb.peak_method or rfcb.unavailable_reason,
    }
    (out / "history.json").write_text(json.dumps(hist, indent=1) + "\n")
    keys = list(hist)
    with open(out / "history.csv", "w") as f:
        f.write("epoch," + ",".join(keys) + "\n")
        for i in range(len(hist.get("loss", []))):
            f.write(f"{i + 1}," + ",".join(str(hist[k][i]) if i < len(hist[k]) else "" for k in keys) + "\n")
    title = (f"{model.name} on {args.dataset}{' (synthetic)' if args.synthetic else ''} "
             f"({len(x_train):,} train / {len(x_test):,} test): {params:,} params, "
             f"last RF {last_rf} on {input_size}, test acc {test_acc:.4f}")
    results["curves_png"] = plot_curves(hist, out / "curves.png", title,
                                        "test" if x_val is None else "held-out")
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1) + "\n")

    rf_text = "x".join(map(str, last_rf)) if last_rf else "?"
    size_text = "x".join(map(str, input_size)) if input_size else "?"
    print(f"\nTest accuracy: {test_acc:.4f} ({len(x_test)} images"
          f"{', SYNTHETIC: meaningless' if args.synthetic else ''})")
    print(f"Params: {params:,}")
    print(f"Receptive field of {results['last_rf_layer']} (last spatial layer): {rf_text} on a "
          f"{size_text} image ({'covers' if results['covers_input'] else 'does not cover'} it)")
    if median_epoch:
        print(f"Epoch time: {median_epoch:.2f} s (median of {len(epoch_seconds)}, training only), "
              f"{results['images_per_second']:.0f} images/s on {device['kind']}")
    print(f"Peak memory: {fmt_bytes(peak)}; estimated: {fmt_bytes(est_bytes)}; "
          f"activations for a batch: {fmt_bytes(report.total_activation_bytes)}; "
          f"host peak RSS: {fmt_bytes(results['peak_host_rss_bytes'])}")
    print(f"Wrote {out}/results.json, history.json, history.csv, rf_summary.txt"
          f"{', curves.png' if results['curves_png'] else ''}")
    return results
