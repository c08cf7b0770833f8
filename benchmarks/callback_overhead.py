"""RFCallback's cost: fit() with and without it, measured in one run.

    python benchmarks/callback_overhead.py [--epochs 3] [--out benchmarks/results/callback_overhead.md]
    KERAS_BACKEND=jax python benchmarks/callback_overhead.py --out ... --append

mnist_8k, batch 128, random data of MNIST's shape; fit() is warmed up (compiled) first,
then timed plain and with RFCallback. Reports the callback's one-off setup at train
begin and the per-epoch difference beyond it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import architectures  # noqa: E402
import keras_rf  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--out", default=None)
    parser.add_argument("--append", action="store_true", help="add a row to an existing --out")
    args = parser.parse_args(argv)

    model = architectures.mnist_8k()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.images)
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)  # compile outside the timing

    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0)
    plain = time.perf_counter() - start
    callback = keras_rf.RFCallback(batch_size=128, print_fn=lambda *a: None)
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0, callbacks=[callback])
    with_callback = time.perf_counter() - start
    per_epoch = (with_callback - callback.setup_seconds - plain) / args.epochs

    backend = keras.backend.backend()
    row = (f"| {backend} | {plain:.2f} | {with_callback:.2f} | {callback.setup_seconds:.2f} | "
           f"{per_epoch:+.3f} | {callback.peak_method or callback.unavailable_reason} |")
    print(row)
    if args.out:
        header = [
            "# RFCallback overhead", "",
            f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPU cores, keras "
            f"{keras.__version__}. mnist_8k, batch 128, {args.images} images, {args.epochs} "
            "epochs after a warm-up fit. Command: `KERAS_BACKEND=<backend> python "
            "benchmarks/callback_overhead.py --out <file> [--append]`.", "",
            "| backend | fit s | fit + RFCallback s | callback setup s | per-epoch difference s "
            "| peak memory from |",
            "|---|--:|--:|--:|--:|---|"]
        mode = "a" if args.append and os.path.exists(args.out) else "w"
        with open(args.out, mode) as f:
            f.write(("" if mode == "a" else "\n".join(header) + "\n") + row + "\n")


if __name__ == "__main__":
    main()
