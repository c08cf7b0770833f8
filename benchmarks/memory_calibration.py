"""Training-memory estimate vs measured peak, and max_batch_size vs the real largest batch.

For each model, batch size and optimizer it prints ``estimate_memory(...).total_bytes``
next to ``measure_memory(...).peak_bytes`` and their ratio, all measured in this run:

* CPU (JAX backend): the measured peak is XLA's memory analysis of the compiled
  training step (nothing runs, so batches up to 512 of ResNet-50 are cheap).
* GPU (JAX or torch backend, e.g. on a lent H100): the device allocator's peak of one
  real step, each case in a fresh process so JAX's unresettable peak stays clean.

Then, for a memory budget, the largest batch found by bisection on the measured peak
(CPU: on the compiled analysis; GPU: by running steps until one runs out of memory)
is compared with ``max_batch_size``.

    KERAS_BACKEND=jax python benchmarks/memory_calibration.py            # full run (~15 min on 2 cores)
    KERAS_BACKEND=jax python benchmarks/memory_calibration.py --quick    # a few cases
    python benchmarks/memory_calibration.py --out benchmarks/results/memory_calibration.md

Held-out models (UNet, causal Conv1D + LayerNorm, VGG with a Dense head,
EfficientNetB0, DenseNet121) were not used to fit the estimator's per-layer constants,
except LayerNorm's (a compromise between the causal Conv1D model and a test model).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import keras  # noqa: E402
from keras import layers  # noqa: E402

import keras_rf  # noqa: E402


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def residual_net(shape=(32, 32, 3)):
    x = inputs = keras.Input(shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    for filters in (32, 64, 128):
        stride = 1 if filters == 32 else 2
        y = layers.Conv2D(filters, 3, padding="same", strides=stride)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(y))
        shortcut = x if stride == 1 else layers.Conv2D(filters, 1, strides=2)(x)
        x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="residual_net")


def depthwise_net(shape=(64, 64, 3)):
    x = inputs = keras.Input(shape)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    for filters in (32, 64, 128):
        x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x)))
        x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(filters, 1)(x)))
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="depthwise_net")


def unet(shape=(64, 64, 3)):
    x = inputs = keras.Input(shape)
    a = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    b = layers.Conv2D(32, 3, padding="same", activation="relu")(layers.MaxPooling2D()(a))
    c = layers.Conv2D(64, 3, padding="same", activation="relu")(layers.MaxPooling2D()(b))
    u = layers.Concatenate()([layers.Conv2DTranspose(32, 2, strides=2)(c), b])
    u = layers.Conv2D(32, 3, padding="same", activation="relu")(u)
    u = layers.Concatenate()([layers.UpSampling2D()(u), a])
    u = layers.Conv2D(16, 3, padding="same", activation="relu")(u)
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(u), name="unet")


def causal_conv1d(shape=(1000, 8)):
    x = inputs = keras.Input(shape)
    for filters in (32, 64, 128):
        x = layers.Conv1D(filters, 5, padding="causal", dilation_rate=2, activation="gelu")(x)
        x = layers.MaxPooling1D(2)(layers.LayerNormalization()(x))
    x = layers.GlobalMaxPooling1D()(x)
    return keras.Model(inputs, layers.Dense(5, activation="softmax")(x), name="causal_conv1d")


def vgg_dense(shape=(48, 48, 3)):
    x = inputs = keras.Input(shape)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.5)(layers.Dense(256, activation="relu")(layers.Flatten()(x)))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="vgg_dense")


def _examples(name):
    import architectures
    return getattr(architectures, name)()


def _app(name, shape):
    return lambda: getattr(keras.applications, name)(weights=None, input_shape=shape)


MODELS = {
    # name: (builder, held_out)
    "mnist_8k (seed family, 28x28x1)": (lambda: _examples("mnist_8k"), False),
    "cifar10_200k (seed family, 32x32x3)": (lambda: _examples("cifar10_200k"), False),
    "residual_net 32x32": (residual_net, False),
    "depthwise_net 64x64": (depthwise_net, False),
    "ResNet50 224x224": (_app("ResNet50", (224, 224, 3)), False),
    "MobileNetV2 224x224": (_app("MobileNetV2", (224, 224, 3)), False),
    "unet 64x64": (unet, True),
    "causal_conv1d 1000": (causal_conv1d, True),
    "vgg_dense 48x48": (vgg_dense, True),
    "EfficientNetB0 128x128": (_app("EfficientNetB0", (128, 128, 3)), True),
    "DenseNet121 64x64": (_app("DenseNet121", (64, 64, 3)), True),
}
FULL_CASES = [(1, "adam"), (32, "sgd"), (128, "rmsprop"), (512, "adam")]
QUICK = {"mnist_8k (seed family, 28x28x1)": [(1, "adam"), (512, "adam")],
         "residual_net 32x32": [(32, "sgd")],
         "unet 64x64": [(128, "adam")]}
MIXED = [("cifar10_200k (seed family, 32x32x3)", 128), ("residual_net 32x32", 128)]


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

def on_gpu() -> bool:
    from keras_rf.measure import gpu_available
    return gpu_available()


def one_case(model, batch, optimizer, mixed=None):
    start = time.perf_counter()
    estimate = keras_rf.estimate_memory(model, batch, optimizer=optimizer, mixed_precision=mixed)
    estimate_seconds = time.perf_counter() - start
    measured = keras_rf.measure_memory(model, batch, optimizer=optimizer)
    return {"batch": batch, "optimizer": optimizer, "policy": mixed or "float32",
            "estimate_bytes": estimate.total_bytes, "measured_bytes": measured.peak_bytes,
            "method": measured.method,
            "ratio": (estimate.total_bytes / measured.peak_bytes) if measured.peak_bytes else None,
            "layer_output_sum_bytes": estimate.output_sum_bytes,
            "estimate_seconds": round(estimate_seconds, 4)}


def case_in_subprocess(model_name, batch, optimizer, mixed=None):
    """On a GPU: one case per process (JAX's allocator peak cannot be reset)."""
    code = ("import json,sys; sys.argv=['x']; import memory_calibration as mc; "
            f"keras=mc.keras; mixed={mixed!r}\n"
            "if mixed: keras.mixed_precision.set_global_policy(mixed)\n"
            f"m=mc.MODELS[{model_name!r}][0](); "
            f"print('JSON'+json.dumps(mc.one_case(m,{batch},{optimizer!r},mixed)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE)
    for line in out.stdout.splitlines():
        if line.startswith("JSON"):
            return json.loads(line[4:])
    return {"batch": batch, "optimizer": optimizer, "policy": mixed or "float32",
            "error": (out.stderr.strip().splitlines() or ["?"])[-1]}


def largest_fitting_batch(fits, limit=1 << 14):
    """Largest batch b with fits(b) (0 if none): doubling, then bisection."""
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def largest_batch_by_measurement(model, budget, optimizer="adam"):
    """Largest batch whose measured peak (XLA's compiled analysis) fits ``budget``."""
    return largest_fitting_batch(lambda b: keras_rf.measure_memory(
        model, b, optimizer=optimizer, run=False).peak_bytes <= budget)


def largest_batch_by_running(model_name, optimizer="adam"):
    """On a GPU: the largest batch whose real step runs (each try in a fresh process)."""
    def runs(b):
        code = ("import sys; sys.argv=['x']; import memory_calibration as mc\n"
                f"m=mc.MODELS[{model_name!r}][0]()\n"
                f"r=mc.keras_rf.measure_memory(m,{b},optimizer={optimizer!r})\n"
                "print('OK', r.peak_bytes)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE)
        return "OK" in out.stdout
    return largest_fitting_batch(runs)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    if on_gpu():
        backend = keras.backend.backend()
        if backend == "jax":
            import jax
            text = f"{jax.devices()[0].device_kind} (JAX), host {text}"
        elif backend == "torch":
            import torch
            text = f"{torch.cuda.get_device_name(0)} (torch), host {text}"
    return text


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def fmt_mib(n):
    return "-" if n is None else f"{n / 2**20:,.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small cases (~1 min)")
    parser.add_argument("--out", help="write the results as Markdown (and .json beside it)")
    parser.add_argument("--budget-mib", type=float, default=None,
                        help="memory budget for the largest-batch check (default: 1024 on CPU, "
                             "the device's memory on a GPU)")
    args = parser.parse_args(argv)

    gpu = on_gpu()
    backend = keras.backend.backend()
    rows = []
    header = (f"{'model':38s} {'held':>4s} {'batch':>5s} {'optimizer':>9s} {'policy':>13s} "
              f"{'estimate MiB':>13s} {'measured MiB':>13s} {'ratio':>6s}")
    print(f"backend {backend}, {'GPU' if gpu else 'CPU'}: {machine()}")
    print(header)
    plan = []
    for name, (build, held_out) in MODELS.items():
        cases = QUICK.get(name, []) if args.quick else FULL_CASES
        plan += [(name, held_out, b, o, None) for b, o in cases]
    if not args.quick:
        plan += [(name, MODELS[name][1], b, "adam", "mixed_float16") for name, b in MIXED]
    models = {}
    for name, held_out, batch, optimizer, mixed in plan:
        if gpu:
            row = case_in_subprocess(name, batch, optimizer, mixed)
        else:
            keras.mixed_precision.set_global_policy(mixed or "float32")
            key = (name, mixed)
            if key not in models:
                keras.backend.clear_session()
                models = {key: MODELS[name][0]()}
            row = one_case(models[key], batch, optimizer, mixed)
            keras.mixed_precision.set_global_policy("float32")
        row["model"], row["held_out"] = name, held_out
        rows.append(row)
        ratio = f"{row['ratio']:.3f}" if row.get("ratio") else row.get("error", "-")
        print(f"{name:38s} {'yes' if held_out else '':>4s} {batch:5d} {optimizer:>9s} "
              f"{row['policy']:>13s} {fmt_mib(row.get('estimate_bytes')):>13s} "
              f"{fmt_mib(row.get('measured_bytes')):>13s} {ratio:>6s}", flush=True)

    ratios = [r["ratio"] for r in rows if r.get("ratio")]
    summary = {"cases": len(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
               "within_0.85_1.15": sum(0.85 <= r <= 1.15 for r in ratios)}
    print(f"\nestimate/measured: {summary['within_0.85_1.15']}/{len(ratios)} within 0.85-1.15; "
          f"range {summary['min_ratio']:.3f} - {summary['max_ratio']:.3f}")

    # largest batch that fits a budget
    budget = int(args.budget_mib * 2**20) if args.budget_mib else None
    batch_rows = []
    for name in (["residual_net 32x32"] if args.quick else
                 ["cifar10_200k (seed family, 32x32x3)", "residual_net 32x32", "unet 64x64",
                  "MobileNetV2 224x224"]):
        keras.backend.clear_session()
        model = MODELS[name][0]()
        if gpu:
            real = largest_batch_by_running(name)
            b = budget or keras_rf.device_memory_bytes()
            predicted = keras_rf.max_batch_size(model, b)
            how = "real steps until OOM"
        else:
            b = budget or 2**30
            real = largest_batch_by_measurement(model, b)
            predicted = keras_rf.max_batch_size(model, b)
            how = "bisection on XLA's compiled analysis"
        batch_rows.append({"model": name, "budget_bytes": b, "max_batch_size": predicted,
                           "largest_measured": real, "how": how,
                           "ratio": predicted / real if real else None})
        print(f"largest batch in {fmt_mib(b)} MiB, {name}: max_batch_size {predicted}, "
              f"measured {real} ({how}) -> {predicted / real if real else float('nan'):.3f}")

    if args.out:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        versions = f"keras {keras.__version__}, backend {backend}"
        if backend == "jax":
            import jax
            versions += f" (jax {jax.__version__})"
        lines = ["# Memory calibration: estimate vs measured peak of one training step", "",
                 f"Run {stamp} on {machine()}; {versions}.",
                 f"Command: `KERAS_BACKEND={backend} python benchmarks/memory_calibration.py"
                 f"{' --quick' if args.quick else ''} --out {args.out}`", "",
                 "Measured peak: " + ("the GPU allocator's peak of one real step (fresh process "
                                      "per case)." if gpu else
                                      "XLA's memory analysis of the compiled training step "
                                      "(arguments + outputs - donated + temporaries), CPU."), "",
                 f"**{summary['within_0.85_1.15']}/{len(ratios)} cases within 0.85-1.15; "
                 f"estimate/measured from {summary['min_ratio']:.3f} to "
                 f"{summary['max_ratio']:.3f}.**", "",
                 "| model | held out | batch | optimizer | policy | estimate MiB | measured MiB "
                 "| estimate / measured | layer outputs MiB |",
                 "|---|---|--:|---|---|--:|--:|--:|--:|"]
        for r in rows:
            lines.append(f"| {r['model']} | {'yes' if r['held_out'] else ''} | {r['batch']} | "
                         f"{r['optimizer']} | {r['policy']} | {fmt_mib(r.get('estimate_bytes'))} | "
                         f"{fmt_mib(r.get('measured_bytes'))} | "
                         f"{(format(r['ratio'], '.3f') if r.get('ratio') else r.get('error', '-'))} | "
                         f"{fmt_mib(r.get('layer_output_sum_bytes'))} |")
        lines += ["", "## Largest batch that fits", "",
                  "| model | budget MiB | max_batch_size | largest measured | ratio | how |",
                  "|---|--:|--:|--:|--:|---|"]
        for r in batch_rows:
            lines.append(f"| {r['model']} | {fmt_mib(r['budget_bytes'])} | {r['max_batch_size']} | "
                         f"{r['largest_measured']} | "
                         f"{(format(r['ratio'], '.3f') if r['ratio'] else '-')} | {r['how']} |")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"date": stamp, "machine": machine(), "versions": versions, "summary": summary,
                       "cases": rows, "largest_batch": batch_rows}, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
