"""Training-memory estimate: parts checked against Keras's own objects, the total against
XLA's compiled memory analysis (JAX backend; test_backends runs this file on JAX)."""

import math
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_rf
from keras_rf import ModelNotReadyError, UnknownOptimizerError, estimate_memory, max_batch_size

BACKEND = keras.backend.backend()
jax_only = pytest.mark.skipif(BACKEND != "jax", reason="XLA's compiled memory analysis needs JAX")


def small_cnn(shape=(24, 24, 3)):
    x = inputs = keras.Input(shape)
    x = layers.Conv2D(8, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="small_cnn")


def variable_bytes(variables):
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def slot_bytes_built_by_keras(model, optimizer):
    """What the optimizer really allocates per weight (its scalars excluded)."""
    optimizer.build(model.trainable_variables)
    return variable_bytes([v for v in optimizer.variables if len(v.shape) > 0])


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.SGD(),
    lambda: keras.optimizers.SGD(momentum=0.9),
    lambda: keras.optimizers.Adam(),
    lambda: keras.optimizers.Adam(amsgrad=True),
    lambda: keras.optimizers.AdamW(),
    lambda: keras.optimizers.RMSprop(),
    lambda: keras.optimizers.RMSprop(momentum=0.9, centered=True),
    lambda: keras.optimizers.Adagrad(),
    lambda: keras.optimizers.Adadelta(),
    lambda: keras.optimizers.Adamax(),
    lambda: keras.optimizers.Nadam(),
    lambda: keras.optimizers.Lion(),
    lambda: keras.optimizers.Ftrl(),
    lambda: keras.optimizers.Adafactor(),
    lambda: keras.optimizers.Adam(use_ema=True),
], ids=["sgd", "sgd_momentum", "adam", "amsgrad", "adamw", "rmsprop", "rmsprop_centered",
        "adagrad", "adadelta", "adamax", "nadam", "lion", "ftrl", "adafactor", "adam_ema"])
def test_optimizer_slots_match_what_keras_allocates(make):
    model = small_cnn()
    estimate = estimate_memory(model, 2, optimizer=make())
    assert estimate.optimizer_bytes == slot_bytes_built_by_keras(model, make())


def test_optimizer_names_and_instances_agree():
    model = small_cnn()
    assert (estimate_memory(model, 4, optimizer="adam").optimizer_bytes
            == estimate_memory(model, 4, optimizer=keras.optimizers.Adam()).optimizer_bytes
            == 2 * variable_bytes(model.trainable_variables))
    assert estimate_memory(model, 4, optimizer="sgd").optimizer_bytes == 0
    assert estimate_memory(model, 4, optimizer="rms-prop").optimizer == "RMSprop"


def test_weights_and_gradients_are_the_models_variables():
    model = small_cnn()
    estimate = estimate_memory(model, 8)
    assert estimate.weights_bytes == variable_bytes(model.weights)
    assert estimate.gradients_bytes == variable_bytes(model.trainable_weights)
    assert estimate.total_bytes == (estimate.weights_bytes + estimate.optimizer_bytes
                                    + estimate.gradients_live_bytes + estimate.activations_bytes
                                    + estimate.transient_bytes)


def test_total_is_linear_in_the_batch_and_exceeds_layer_outputs():
    model = small_cnn()
    totals = [estimate_memory(model, b).total_bytes for b in (1, 11, 21)]
    assert totals[2] - totals[1] == pytest.approx(totals[1] - totals[0], rel=1e-6, abs=4)
    big = estimate_memory(model, 256)
    # a training step holds much more than one forward pass's outputs
    assert big.total_bytes > 1.5 * big.output_sum_bytes
    assert big.output_sum_bytes == keras_rf.analyze(model, batch_size=256).total_activation_bytes


def test_mixed_precision_halves_activations_not_weights():
    model = small_cnn()
    full = estimate_memory(model, 64)
    half = estimate_memory(model, 64, mixed_precision="mixed_bfloat16", device="gpu")
    assert half.weights_bytes == full.weights_bytes  # float32 master weights
    assert half.optimizer_bytes == full.optimizer_bytes
    assert half.activations_bytes < 0.6 * full.activations_bytes
    assert "mixed_bfloat16" in str(half)


def test_model_built_under_a_mixed_policy_is_read_from_its_layers(built_under_policy):
    model = built_under_policy("mixed_float16", small_cnn)
    assert estimate_memory(model, 64, device="gpu").activations_bytes < \
        0.6 * estimate_memory(small_cnn(), 64, device="gpu").activations_bytes


def test_max_batch_size_is_the_largest_that_fits():
    model = small_cnn()
    budget = 64 * 2**20
    best = max_batch_size(model, budget)
    assert best > 1
    assert estimate_memory(model, best).total_bytes <= budget
    assert estimate_memory(model, best + 1).total_bytes > budget
    assert max_batch_size(model, 1024) == 0  # not even the weights fit


def test_str_gives_the_breakdown():
    text = str(estimate_memory(small_cnn(), 32, optimizer="sgd", device_memory=2**40))
    assert "batch 32" in text and "SGD" in text
    for part in ("weights", "optimizer slots", "saved activations", "gradients", "transient"):
        assert part in text
    assert "fits in" in text


def test_rf_summary_shows_the_training_estimate_and_warns_when_it_does_not_fit():
    model = small_cnn()
    lines = []
    report = keras_rf.rf_summary(model, batch_size=16, optimizer="adam", print_fn=lines.append)
    assert report.training_memory.total_bytes == estimate_memory(model, 16).total_bytes
    assert any("Training memory (batch 16, Adam" in line for line in lines)
    with pytest.warns(UserWarning, match="more than the device"):
        keras_rf.rf_summary(model, batch_size=16, optimizer="adam", device_memory=2**20,
                            print_fn=lambda line: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        keras_rf.rf_summary(model, batch_size=16, optimizer="adam", device_memory=2**40,
                            print_fn=lambda line: None)


def test_clear_errors():
    model = small_cnn()
    with pytest.raises(ValueError, match="batch_size"):
        estimate_memory(model, 0)
    with pytest.raises(UnknownOptimizerError, match="Unknown optimizer 'adamm'"):
        estimate_memory(model, 1, optimizer="adamm")
    unbuilt = keras.Sequential([layers.Conv2D(4, 3)])
    with pytest.raises(ModelNotReadyError, match="not built"):
        estimate_memory(unbuilt, 1)
    with pytest.raises(TypeError):
        estimate_memory("model.keras", 1)
    fully_convolutional = keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="input_shape"):
        estimate_memory(fully_convolutional, 1)
    assert estimate_memory(fully_convolutional, 2, input_shape=(None, 16, 16, 3)).total_bytes \
        > estimate_memory(fully_convolutional, 2, input_shape=(None, 8, 8, 3)).total_bytes
    if keras_rf.device_memory_bytes() is None:
        with pytest.raises(ValueError, match="memory_bytes is required"):
            max_batch_size(model)


def test_measure_memory_says_why_when_it_cannot():
    if BACKEND == "jax":
        pytest.skip("JAX measures on CPU")
    result = keras_rf.measure_memory(small_cnn(), 4)
    if result.peak_bytes is None:  # CPU
        assert result.reason and "GPU" in result.reason.upper()
        assert "not available" in str(result)


# ---------------------------------------------------------------------------
# Ground truth: XLA's memory analysis of the compiled training step (JAX)
# ---------------------------------------------------------------------------

def residual(shape=(20, 20, 3)):
    x = inputs = keras.Input(shape)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(x))
    x = layers.ReLU()(layers.Add()([x, y]))
    y = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Concatenate()([y, layers.AveragePooling2D(2)(x)])
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, layers.Dense(4, activation="softmax")(x))


def separable_1d(shape=(300, 4)):
    x = inputs = keras.Input(shape)
    x = layers.Conv1D(16, 5, padding="causal", dilation_rate=2, activation="gelu")(x)
    x = layers.SeparableConv1D(32, 3, activation="relu")(x)
    x = layers.LayerNormalization()(x)
    x = layers.MaxPooling1D(3)(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(3)(x))


def depthwise_upsample(shape=(32, 32, 3)):
    x = inputs = keras.Input(shape)
    x = layers.Conv2D(12, 3, strides=2, padding="same")(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x)))
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="swish")(x)
    x = layers.UpSampling2D(interpolation="bilinear")(x)
    return keras.Model(inputs, layers.Conv2D(1, 1)(x))


def wide_separable(shape=(8, 8, 160)):
    """Wide separable convs: at small batches XLA's (CPU) dense weight gradient of each
    depthwise kernel, kh*kw*C*C, dominates the step."""
    x = inputs = keras.Input(shape)
    for _ in range(3):
        x = layers.SeparableConv2D(160, 3, padding="same")(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def wide_depthwise_then_separable(shape=(8, 8, 192)):
    x = inputs = keras.Input(shape)
    x = layers.ReLU()(layers.DepthwiseConv2D(3, padding="same")(x))
    x = layers.SeparableConv2D(192, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


@jax_only
@pytest.mark.parametrize("build", [small_cnn, residual, separable_1d, depthwise_upsample,
                                   wide_separable],
                         ids=["small_cnn", "residual", "separable_1d", "depthwise_upsample",
                              "wide_separable"])
@pytest.mark.parametrize("batch,optimizer", [(1, "adam"), (8, "sgd"), (64, "rmsprop")])
def test_estimate_within_15_percent_of_the_compiled_step(build, batch, optimizer):
    model = build()
    estimate = estimate_memory(model, batch, optimizer=optimizer)
    measured = keras_rf.measure_memory(model, batch, optimizer=optimizer)
    assert measured.method == "xla_memory_analysis"
    ratio = estimate.total_bytes / measured.peak_bytes
    if measured.peak_bytes >= 4 * 2**20:
        assert 0.85 <= ratio <= 1.15, (estimate.total_bytes, measured.peak_bytes)
    else:
        # steps of a few hundred KiB: XLA's buffer reuse varies more (README, Memory)
        assert 0.8 <= ratio <= 1.25, (estimate.total_bytes, measured.peak_bytes)


@jax_only
@pytest.mark.xfail(strict=True, reason="known limit (README): with a depthwise and a separable "
                   "conv this wide, XLA schedules the dense depthwise weight gradients apart from "
                   "the activations at batch 8; the estimate is ~1.4x the compiled peak there")
def test_wide_depthwise_at_a_small_batch():
    model = wide_depthwise_then_separable()
    estimate = estimate_memory(model, 8, optimizer="sgd")
    measured = keras_rf.measure_memory(model, 8, optimizer="sgd")
    assert 0.85 <= estimate.total_bytes / measured.peak_bytes <= 1.15


@jax_only
def test_max_batch_size_within_15_percent_of_the_measured_largest_batch():
    model = residual()
    budget = 48 * 2**20

    def fits(batch):
        return keras_rf.measure_memory(model, batch, run=False).peak_bytes <= budget
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    assert 0.85 <= max_batch_size(model, budget) / lo <= 1.15
