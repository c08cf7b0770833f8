"""The README's figures: report.plot() of the CIFAR-10 net and RF boxes on an MNIST digit.

    python examples/figures.py [--data-dir PATH/mnist.npz] [--out examples/images]

The digit comes from --data-dir (any MNIST file the examples read); without it a
drawn stand-in is used.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import architectures  # noqa: E402
import keras_rf  # noqa: E402


def digit(data_dir):
    if data_dir:
        import data
        (x, _), _ = data.load("mnist", data_dir=data_dir, download=False)
        return x[0].squeeze()
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255  # a "1"
    return image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "images"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    cifar = keras_rf.analyze(architectures.cifar10_200k(), batch_size=128)
    path = os.path.join(args.out, "rf_plot_cifar10_200k.png")
    cifar.plot(path, title="cifar10_200k: receptive field per layer and activation memory (batch 128)")
    print("wrote", path)

    mnist = keras_rf.analyze(architectures.mnist_8k())
    layers = [info.name for info in mnist.leaf_layers if info.receptive_field
              and not info.sees_whole_input and info.class_name == "Conv2D"]
    fig_path = os.path.join(args.out, "rf_boxes_mnist_8k.png")
    picks = [layers[0], layers[len(layers) // 2], mnist.last_spatial_layer.name]
    from keras_rf.plotting import new_figure
    fig = new_figure(figsize=(12, 4.2), layout="constrained")
    for ax, name in zip(fig.subplots(1, 3), picks):
        keras_rf.draw_receptive_field(mnist, name, digit(args.data_dir), ax=ax,
                                      title=f"{name}: RF {'x'.join(map(str, mnist.layer(name).receptive_field))}")
    fig.savefig(fig_path, dpi=100)
    print("wrote", fig_path)


if __name__ == "__main__":
    main()
