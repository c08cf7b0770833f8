"""How long analyze() takes next to Keras's own model.summary(), measured in one run.

    python benchmarks/speed.py [--chain 1000,2000,5000,10000] [--out benchmarks/results/speed.md]

Prints, per model, the best of N timings of each and their ratio (analyze / summary;
below 1 means analyze is faster), then analyze() time per layer on generated
chains of growing depth: a constant per-layer time means it scales linearly.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_rf  # noqa: E402

APPLICATIONS = ["ResNet152", "EfficientNetB7", "ConvNeXtXLarge", "InceptionResNetV2"]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def chain(depth: int) -> keras.Model:
    """A plain chain of small 1D convs, stride 1 and 'same' padding."""
    x = inputs = keras.Input((64, 1))
    for _ in range(depth):
        x = keras.layers.Conv1D(1, 3, padding="same")(x)
    return keras.Model(inputs, x)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(APPLICATIONS))
    parser.add_argument("--chain", default="1000,2000,5000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the results table (Markdown) here")
    args = parser.parse_args(argv)

    lines = [
        f"# analyze() vs model.summary() — {datetime.date.today().isoformat()}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"keras {keras.__version__}, backend {keras.backend.backend()}. Best of {args.repeats}.",
        "",
        "| model | layers | analyze() s | model.summary() s | ratio analyze/summary |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in filter(None, args.models.split(",")):
        model = getattr(keras.applications, name)(weights=None)
        t_analyze = best_of(lambda: keras_rf.analyze(model), args.repeats)
        t_summary = best_of(lambda: model.summary(print_fn=lambda *a, **k: None), args.repeats)
        rows = len(keras_rf.analyze(model).layers)
        lines.append(f"| {name} | {rows} | {t_analyze:.3f} | {t_summary:.3f} | {t_analyze / t_summary:.2f} |")
        print(lines[-1], flush=True)
        del model
        keras.backend.clear_session()

    lines += ["", "Generated chains (Conv1D, k=3, same):", "",
              "| depth | analyze() s | µs per layer |", "|---:|---:|---:|"]
    for depth in (int(d) for d in args.chain.split(",") if d):
        model = chain(depth)
        t = best_of(lambda: keras_rf.analyze(model), args.repeats)
        lines.append(f"| {depth} | {t:.3f} | {t / depth * 1e6:.1f} |")
        print(lines[-1], flush=True)
        del model
        keras.backend.clear_session()
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return text


if __name__ == "__main__":
    sys.setrecursionlimit(100000)
    print(main())
