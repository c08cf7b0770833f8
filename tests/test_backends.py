"""The same summary on TensorFlow, JAX and PyTorch (each backend in its own process)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKEND_PACKAGE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

ZOO = r'''
import json, keras
from keras import layers
import keras_rf

def zoo():
    x = inputs = keras.Input((33, 31, 3))
    x = layers.Conv2D(4, (3, 5), strides=2, padding="same")(x)
    y = layers.DepthwiseConv2D(3, dilation_rate=2, padding="same")(x)
    y = layers.SeparableConv2D(4, 3, padding="same")(y)
    x = layers.Add()([x, y])
    a = layers.Conv2D(2, 1)(x)
    b = layers.Conv2D(2, 5, padding="same")(x)
    c = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.Concatenate()([a, b, c])
    x = layers.Conv2DTranspose(3, 3, strides=2, padding="same")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.ZeroPadding2D(((1, 0), (2, 1)))(x)
    x = layers.Cropping2D(1)(x)
    out = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, out, name="zoo")

keras.utils.set_random_seed(0)
print("JSON" + json.dumps(keras_rf.analyze(zoo(), batch_size=4).to_dict()))
'''


def run_on(backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", ZOO], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("JSON"))
    return json.loads(line[4:])


def available(backend: str) -> bool:
    return importlib.util.find_spec(BACKEND_PACKAGE[backend]) is not None


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_summary_as_tensorflow(backend):
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    reference = run_on("tensorflow")
    other = run_on(backend)
    assert other == reference
    assert reference["layers"][-2]["receptive_field"] is not None


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_core_suite_passes_on(backend):
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_core.py", "tests/test_readme.py", "tests/test_memory.py",
                           "tests/test_callback.py"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout.splitlines()[-1]
