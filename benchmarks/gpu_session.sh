#!/usr/bin/env bash
# Run the GPU measurements on a machine that has JAX/PyTorch with CUDA but no Keras and no
# package index (the project's lent H100/H200). Writes everything under ${OUT:-gpu_out}/.
#
# Here (with internet):  bash benchmarks/gpu_session.sh download   # wheels into .wheels/
# There:                 bash benchmarks/gpu_session.sh run jax calibration   # then: run jax examples,
#                        run torch calibration, run torch examples (each under 10 minutes)
#
# "run BACKEND PART" does, with Keras on that backend:
#   1. benchmarks/memory_calibration.py: estimate vs the GPU allocator's peak of one real
#      step (a fresh process per case), and max_batch_size vs the largest batch that runs;
#   2. the examples on synthetic data (throughput, peak memory vs estimate), and on
#      MNIST-10k when it is carried (shared/data/mnist-10k.npz).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.wheels
OUT=${OUT:-gpu_out}

case "${1:-run}" in
download)
    mkdir -p "$WHEELS"
    for py in 3.10 3.11 3.12 3.13; do
        pip download -q --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
            -d "$WHEELS" "keras>=3" namex optree tabulate rich h5py ml-dtypes --no-deps
    done
    pip download -q --no-deps -d "$WHEELS" markdown-it-py mdurl pygments
    du -sh "$WHEELS"
    ;;
run)
    mkdir -p "$OUT"
    python -m pip install -q --no-index --find-links "$WHEELS" --no-deps \
        keras namex optree tabulate 2>&1 | tail -2
    for dep in rich h5py ml_dtypes markdown_it mdurl pygments; do
        python -c "import $dep" 2>/dev/null || \
            python -m pip install -q --no-index --find-links "$WHEELS" --no-deps "${dep//_/-}" 2>&1 | tail -1
    done
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # keras_rf without installing it
    nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
    backend=${2:-jax}      # jax | torch
    part=${3:-all}         # calibration | examples | all  (each fits the device's 10-minute call)
    if [ "$part" != examples ]; then
        KERAS_BACKEND=$backend python benchmarks/memory_calibration.py ${QUICK:+--quick} \
            --out "$OUT/memory_calibration_$backend.md" 2>&1 | grep -v "^I0000\|^W0000" | tail -60
    fi
    if [ "$part" != calibration ]; then
        KERAS_BACKEND=$backend python examples/train_cifar10.py --synthetic --epochs 3 \
            --workers 4 --out "$OUT/cifar10-synthetic-$backend" 2>&1 | tail -8
        if [ -f shared/data/mnist-10k.npz ]; then
            KERAS_BACKEND=$backend python examples/train_mnist.py --data-dir shared/data/mnist-10k.npz \
                --workers 4 --out "$OUT/mnist10k-$backend" 2>&1 | tail -8
        fi
    fi
    ;;
*)
    echo "usage: $0 download|run" >&2
    exit 2
    ;;
esac
