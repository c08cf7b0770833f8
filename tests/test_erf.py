"""Effective receptive field: exact on linear nets, Gaussian-like and small on random ReLU nets,
the same gradients on TensorFlow (in process), JAX and PyTorch (subprocesses)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

import keras_rf
from keras_rf import effective_receptive_field
from keras_rf.erf import mass_radius

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Built the same way in this process and in the backend subprocesses.
SHARED = r'''
import keras, numpy as np
from keras import layers

def ones_net():
    x = inputs = keras.Input((15, 15, 2))
    x = layers.Conv2D(3, 3, use_bias=False, kernel_initializer="ones", name="a")(x)
    x = layers.Conv2D(1, 3, use_bias=False, kernel_initializer="ones", name="b")(x)
    return keras.Model(inputs, x, name="ones")

def relu_net():
    x = inputs = keras.Input((20, 20, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="tanh", name="c2")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(2, 3, padding="same", name="c3")(x)
    model = keras.Model(inputs, x, name="relu")
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") + (1.0 if "variance" in v.path else 0.0)
                       for v, w in zip(model.weights, model.get_weights())])
    return model
'''
exec(SHARED)

BACKEND_SCRIPT = SHARED + r'''
import json, keras_rf
ones = keras_rf.effective_receptive_field(ones_net(), "b", n_inputs=2)
relu = keras_rf.effective_receptive_field(relu_net(), "c3", n_inputs=3, seed=5)
print("JSON" + json.dumps({"backend": relu.backend, "ones": ones.map.tolist(),
                           "relu": relu.map.tolist(), "radius": relu.radius}))
'''


def test_linear_net_is_exact():
    erf = effective_receptive_field(ones_net(), "b", n_inputs=2)
    tri = np.array([1, 2, 3, 2, 1], dtype=float)
    expected = np.zeros((15, 15))
    expected[5:10, 5:10] = np.outer(tri, tri) * 3 * 2  # 3 middle channels, 2 input channels
    np.testing.assert_allclose(erf.map, expected)
    assert erf.position == (5, 5)
    assert erf.window == ((5, 9), (5, 9)) and erf.centre == (7.0, 7.0)
    assert erf.receptive_field == (5, 5) and erf.mass_inside_window() == pytest.approx(1.0)
    assert erf.radius == pytest.approx(mass_radius(expected, (7, 7), 0.95))
    assert erf.backend == keras.backend.backend()


def test_mass_radius():
    w = np.zeros((11, 11))
    w[5, 5] = 10
    w[5, 8] = 1  # 3 px away, 1/11 of the mass
    assert mass_radius(w, (5, 5), 0.9) == 0
    assert mass_radius(w, (5, 5), 0.95) == 3
    assert mass_radius(np.zeros((3, 3)), (1, 1)) == 0
    with pytest.raises(ValueError):
        mass_radius(w, (5, 5), 1.5)


def test_random_relu_net_is_a_small_central_blob():
    """Luo et al.: on a deep random net the ERF is a Gaussian-like blob, peaked at the
    centre and much smaller than the theoretical field."""
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((48, 48, 1))
    for k in range(12):
        x = layers.Conv2D(8, 3, padding="same", activation="relu",
                          kernel_initializer="he_normal", name=f"c{k}")(x)
    erf = effective_receptive_field(keras.Model(inputs, x), n_inputs=8)
    assert erf.layer == "c11" and erf.receptive_field == (25, 25)
    assert erf.mass_inside_window() == pytest.approx(1.0)
    assert erf.radius < 0.85 * erf.theoretical_radius
    assert erf.radius_for(0.5) < 0.5 * erf.theoretical_radius
    peak = np.unravel_index(np.argmax(erf.map), erf.map.shape)
    assert all(abs(p - c) <= 3 for p, c in zip(peak, erf.centre))
    profile = erf.map.sum(axis=0)[erf.window[1][0]:erf.window[1][1] + 1]
    assert profile[len(profile) // 2] > 3 * profile[1]  # falls off towards the edges


def test_real_inputs_positions_and_plot(tmp_path):
    model = relu_net()
    images = np.random.default_rng(0).random((5, 20, 20, 1))
    erf = effective_receptive_field(model, "c2", images, position=(0, 0),
                                    path=tmp_path / "erf.png")
    assert erf.n_inputs == 5 and erf.position == (0, 0)
    assert erf.window == ((-3, 4), (-3, 4))  # the corner unit sees padding
    assert (tmp_path / "erf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert erf.figure is not None and erf._repr_png_()[:4] == b"\x89PNG"
    one = effective_receptive_field(model, "c2", images[0])  # one image, no batch axis
    assert one.n_inputs == 1 and one.position == (5, 5)
    text = str(one)
    assert "theoretical RF 8x8" in text and "95%" in text
    assert json.dumps(one.to_dict())


def test_errors():
    model = relu_net()
    with pytest.raises(ValueError, match="outside"):
        effective_receptive_field(model, "c2", position=(10, 0), n_inputs=1)
    with pytest.raises(ValueError, match="2 spatial axes"):
        effective_receptive_field(model, "c2", position=(1,), n_inputs=1)
    with pytest.raises(KeyError):
        effective_receptive_field(model, "nope", n_inputs=1)
    x = inputs = keras.Input((None, None, 1))
    fcn = keras.Model(inputs, layers.Conv2D(1, 3)(x))
    with pytest.raises(ValueError, match="input_shape"):
        effective_receptive_field(fcn)
    assert effective_receptive_field(fcn, input_shape=(9, 9, 1), n_inputs=1).map.shape == (9, 9)


def test_whole_input_layer():
    x = inputs = keras.Input((10, 10, 1))
    x = layers.Conv2D(2, 3, kernel_initializer="ones", name="c")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    erf = effective_receptive_field(keras.Model(inputs, x), "gap", n_inputs=1)
    assert erf.position == () and erf.window is None
    assert erf.map.shape == (10, 10) and erf.map.min() > 0  # every pixel counts


def _run_backend(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("JSON"))
    return json.loads(line[4:])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_erf_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    other = _run_backend(backend)
    assert other["backend"] == backend
    ones = effective_receptive_field(ones_net(), "b", n_inputs=2)
    relu = effective_receptive_field(relu_net(), "c3", n_inputs=3, seed=5)
    np.testing.assert_allclose(np.array(other["ones"]), ones.map, rtol=1e-5)
    np.testing.assert_allclose(np.array(other["relu"]), relu.map, rtol=1e-3, atol=1e-6)
    assert other["radius"] == pytest.approx(relu.radius)


def test_example_before_after_quick(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import erf_before_after
    finally:
        sys.path.remove(str(ROOT / "examples"))
    out = tmp_path / "erf.png"
    before, after = erf_before_after.main(["--quick", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert before.receptive_field == after.receptive_field == (25, 25)
    assert before.radius < before.uniform_radius and after.radius < after.uniform_radius
