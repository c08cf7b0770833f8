"""Train a conv-block / transition-block net on MNIST (or Fashion-MNIST) with keras-rf.

    python examples/train_mnist.py                          # MNIST via keras.datasets
    python examples/train_mnist.py --data-dir ~/data/mnist  # mnist.npz or the IDX .gz files
    python examples/train_mnist.py --dataset fashion_mnist  # Debian's dataset-fashion-mnist
    python examples/train_mnist.py --quick                  # smoke test, seconds on a CPU

Prints the RF summary, trains with keras_rf.RFCallback, reports test accuracy, params,
the last spatial layer's RF vs the image size, epoch time, images/s and peak memory, and
writes results.json, history.json/.csv, rf_summary.txt and curves.png under --out.
Any Keras backend (--backend or KERAS_BACKEND); a visible GPU is used.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# Adam (no weight decay) one-cycle 0.01 won over SGD-nesterov 0.05/0.1 on a held-out 1,000 of
# mnist-10k (examples/RESULTS.md, "Tuning").
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.01, optimizer="adam", weight_decay=0.0, dropout=0.05)


def main(argv=None) -> dict:
    parser = common.make_parser(__doc__.splitlines()[0], datasets=["mnist", "fashion_mnist"],
                                models=["mnist_8k", "mnist_8k_rf28", "mnist_20k"], defaults=DEFAULTS)
    args = common.finish_args(parser.parse_args(argv))
    return common.run(args, augment="affine", argv=argv)


if __name__ == "__main__":
    main()
