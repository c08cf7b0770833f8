"""Effective receptive field before and after training (Luo et al., NeurIPS 2016).

A plain stack of twelve 3x3 'same' ReLU convolutions has a theoretical receptive
field of 25x25. Its classifier reads only the centre unit of the last conv layer, so
that unit has to take in the whole (centred) MNIST digit. The script measures the
centre unit's effective receptive field (|d unit / d pixel|, averaged over test
digits) with the random initial weights, after every epoch, and at the end, and
draws both maps over the theoretical field.

    python examples/erf_before_after.py                 # ~1-2 min on a laptop CPU
    python examples/erf_before_after.py --quick         # smoke test, seconds
    KERAS_BACKEND=jax python examples/erf_before_after.py

Data: an .npz with x_train/y_train/x_test/y_test (default: the 10k-digit MNIST
subset at /work/shared/data/mnist-10k.npz if present, else keras.datasets.mnist).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path("/work/shared/data/mnist-10k.npz")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="MNIST .npz (x_train, y_train, x_test, y_test)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train", type=int, default=8000, help="training images to use")
    p.add_argument("--layers", type=int, default=12, help="3x3 conv layers (RF = 2*layers + 1)")
    p.add_argument("--filters", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--probe", type=int, default=256, help="test digits the ERF is averaged over")
    p.add_argument("--out", default=str(HERE / "images" / "erf_before_after.png"))
    p.add_argument("--quick", action="store_true", help="1 epoch on 128 images (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.train, args.probe = 1, 128, 8
    return args


def load_digits(path, pad: int = 2):
    """MNIST digits in [0, 1], centred on a (28 + 2*pad)^2 canvas, with a channel axis."""
    path = Path(path) if path else (DEFAULT_DATA if DEFAULT_DATA.exists() else None)
    if path is not None:
        with np.load(path) as d:
            x_train, y_train, x_test, y_test = (d["x_train"], d["y_train"], d["x_test"], d["y_test"])
    else:  # pragma: no cover - needs the network
        import keras
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()

    def prep(x):
        x = np.asarray(x, dtype="float32") / 255.0
        return np.pad(x, ((0, 0), (pad, pad), (pad, pad)))[..., None]

    return prep(x_train), np.asarray(y_train), prep(x_test), np.asarray(y_test)


def build_model(size: int, n_layers: int, filters: int):
    import keras
    from keras import layers

    x = inputs = keras.Input((size, size, 1), name="digit")
    for k in range(n_layers):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                          kernel_initializer="he_normal", name=f"conv{k + 1}")(x)
    centre = size // 2
    x = layers.Cropping2D(((centre, size - centre - 1),) * 2, name="centre_unit")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(10, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name=f"plain{n_layers}")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    import keras_rf

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits(args.data)
    x_train, y_train = x_train[:args.train], y_train[:args.train]
    size = x_train.shape[1]
    model = build_model(size, args.layers, args.filters)
    layer = f"conv{args.layers}"
    probe = x_test[:args.probe]

    def measure():
        return keras_rf.effective_receptive_field(model, layer, probe)

    before = measure()
    print(f"[{keras.backend.backend()}] untrained: {before}")
    history = [(0, before.radius, before.radius_for(0.5))]

    class TrackERF(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            erf = measure()
            history.append((epoch + 1, erf.radius, erf.radius_for(0.5)))
            print(f"  epoch {epoch + 1}: ERF radius 95% {erf.radius:.1f} px, "
                  f"50% {erf.radius_for(0.5):.1f} px, val accuracy {logs.get('val_accuracy', 0):.3f}",
                  flush=True)

    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=args.quick)  # tracing would dominate --quick
    start = time.time()
    n_val = 200 if args.quick else 1000
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0,
              validation_data=(x_test[:n_val], y_test[:n_val]), callbacks=[TrackERF()])
    seconds = time.time() - start
    after = measure()
    n_test = 500 if args.quick else len(x_test)
    accuracy = model.evaluate(x_test[:n_test], y_test[:n_test], verbose=0)[1]
    print(f"trained ({args.epochs} epochs on {len(x_train)} digits, {seconds:.0f} s, "
          f"test accuracy {accuracy:.3f}): {after}")
    half = after.receptive_field[0] / 2
    print(f"95%-mass radius: untrained {before.radius:.1f} px -> trained {after.radius:.1f} px "
          f"(the {after.receptive_field[0]}x{after.receptive_field[1]} theoretical RF filled evenly: "
          f"{after.uniform_radius:.1f} px; half-width {half:g} px); 50%-mass radius "
          f"{before.radius_for(0.5):.1f} -> {after.radius_for(0.5):.1f} px "
          f"(evenly: {uniform_radius(after, 0.5):.1f} px)")
    if args.out:
        figure(before, after, history, accuracy, args).savefig(args.out, dpi=110,
                                                               bbox_inches="tight")
        print(f"saved {args.out}")
    return before, after


def uniform_radius(erf, fraction):
    """The radius holding ``fraction`` of an ERF that filled the theoretical window evenly."""
    from keras_rf.erf import mass_radius

    uniform = np.zeros_like(erf.map)
    uniform[tuple(slice(max(lo, 0), hi + 1) for lo, hi in erf.window)] = 1.0
    return mass_radius(uniform, erf.centre, fraction)


def figure(before, after, history, accuracy, args):
    from keras_rf.plotting import new_figure

    fig = new_figure(figsize=(11, 9.2), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, erf, name in ((axes[0, 0], before, "untrained (random weights)"),
                          (axes[0, 1], after, f"trained, test accuracy {accuracy:.1%}")):
        from keras_rf.erf import _plot_map
        _plot_map(erf, ax, zoom=True, cmap="magma")
        ax.set_title(f"{name}\n95% of the mass within {erf.radius:.1f} px, "
                     f"50% within {erf.radius_for(0.5):.1f} px", fontsize=10, pad=34)

    ax = axes[1, 0]
    from keras_rf.erf import cumulative_mass
    for erf, style, name in ((before, "--", "untrained"), (after, "-", "trained")):
        radii, mass = cumulative_mass(erf.map, erf.centre)
        ax.plot(radii, mass, style, lw=2, label=f"{name}: 95% within {erf.radius:.1f} px")
    (r0, r1), (c0, c1) = after.window
    uniform = np.zeros_like(after.map)
    uniform[max(r0, 0):r1 + 1, max(c0, 0):c1 + 1] = 1.0
    radii, mass = cumulative_mass(uniform, after.centre)
    ax.plot(radii, mass, ":", color="#4fc3f7", lw=2.5,
            label=f"theoretical RF filled evenly: {after.uniform_radius:.1f} px")
    for level in (0.5, 0.95):
        ax.axhline(level, color="#999999", lw=0.8)
    ax.set_xlim(0, after.uniform_radius * 1.25)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("radius around the unit's centre (input pixels)")
    ax.set_ylabel("fraction of the gradient mass within the radius")
    ax.set_title("How much of the influence lies within a radius", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")

    ax = axes[1, 1]
    epochs = [h[0] for h in history]
    ax.plot(epochs, [h[1] for h in history], marker="o", label="95% of the mass")
    ax.plot(epochs, [h[2] for h in history], marker="s", label="50% of the mass")
    ax.axhline(after.uniform_radius, color="#1f77b4", ls=":", lw=2,
               label=f"95% if the RF were filled evenly ({after.uniform_radius:.1f} px)")
    ax.axhline(uniform_radius(after, 0.5), color="#ff7f0e", ls=":", lw=2,
               label=f"50% if the RF were filled evenly ({uniform_radius(after, 0.5):.1f} px)")
    ax.set_ylim(0, after.uniform_radius * 1.45)
    ax.set_xlabel("epoch (0 = random weights)")
    ax.set_ylabel("ERF radius (input pixels)")
    ax.set_title("ERF radius during training", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper center", ncol=2)
    fig.suptitle(f"Effective receptive field of the centre unit of {before.layer} "
                 f"({args.layers} plain 3x3 convs, theoretical RF "
                 f"{before.receptive_field[0]}x{before.receptive_field[1]}), MNIST, "
                 f"backend {before.backend}", fontsize=11)
    return fig


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
