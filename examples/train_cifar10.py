"""Train a conv-block / transition-block net on CIFAR-10 with keras-rf.

    python examples/train_cifar10.py                     # CIFAR-10 via keras.datasets
    python examples/train_cifar10.py --data-dir ~/data   # cifar-10-python.tar.gz or cifar-10-batches-py
    python examples/train_cifar10.py --synthetic         # throughput run on random data
    python examples/train_cifar10.py --quick             # smoke test, seconds on a CPU

Prints the RF summary (the model's last spatial layer sees > 44 px), trains with
keras_rf.RFCallback, reports test accuracy, params, RF vs image size, epoch time,
images/s and peak memory, and writes results.json, history.json/.csv, rf_summary.txt
and curves.png under --out. Any Keras backend; a visible GPU is used.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DEFAULTS = dict(epochs=40, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4, dropout=0.05)


def main(argv=None) -> dict:
    parser = common.make_parser(__doc__.splitlines()[0], datasets=["cifar10"],
                                models=["cifar10_200k"], defaults=DEFAULTS)
    parser.add_argument("--cutout", type=int, default=8, help="cutout square size (0: none)")
    args = common.finish_args(parser.parse_args(argv))
    return common.run(args, augment="crop_flip", cutout_size=args.cutout, argv=argv)


if __name__ == "__main__":
    main()
