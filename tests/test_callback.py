"""RFCallback: the summary at train begin, memory numbers in every epoch's logs."""

import csv
import math
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_rf
from keras_rf import RFCallback

BACKEND = keras.backend.backend()


def tiny(shape=(12, 12, 1), covering=True):
    x = inputs = keras.Input(shape)
    x = layers.Conv2D(4, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(4, 3, activation="relu")(x)
    if covering:
        x = layers.Conv2D(4, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    return model


def data(n=32, shape=(12, 12, 1)):
    rng = np.random.default_rng(0)
    return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 3, n)


def test_two_epochs_log_estimated_and_peak_memory(tmp_path):
    model = tiny()
    lines = []
    callback = RFCallback(batch_size=8, print_fn=lines.append)
    log_file = tmp_path / "log.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(*data(), batch_size=8, epochs=2, verbose=0,
                            callbacks=[callback, keras.callbacks.CSVLogger(str(log_file))])

    # the summary was printed once, at train begin, with the training estimate under it
    assert sum("Param #" in line for line in lines) == 1
    assert any("Training memory (batch 8, SGD" in line for line in lines)

    estimated = history.history["estimated_memory_bytes"]
    peak = history.history["peak_memory_bytes"]
    assert len(estimated) == len(peak) == 2
    expected = keras_rf.estimate_memory(model, 8, optimizer=model.optimizer).total_bytes
    assert estimated == [float(expected)] * 2

    measurement = keras_rf.measure_memory(model, 8, optimizer=model.optimizer)
    if measurement.peak_bytes is not None and BACKEND == "jax":
        # XLA's analysis of the compiled step, the same number each epoch
        assert peak == [float(measurement.peak_bytes)] * 2
        assert 0.8 <= estimated[0] / peak[0] <= 1.25
    elif measurement.peak_bytes is None:
        # nothing to measure here (TensorFlow / torch on CPU): NaN, and one warning saying why
        assert all(math.isnan(p) for p in peak)
        reasons = [w for w in caught if "peak_memory_bytes is NaN" in str(w.message)]
        assert len(reasons) == 1
    else:  # a GPU: the allocator's peak during the epoch
        assert all(p > 0 for p in peak)

    # loggers placed after the callback record both numbers
    with open(log_file) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert float(rows[0]["estimated_memory_bytes"]) == float(expected)
    assert "peak_memory_bytes" in rows[0]


def test_warns_when_the_receptive_field_does_not_cover_the_input():
    model = tiny((20, 20, 1), covering=False)
    with pytest.warns(UserWarning, match="does not cover the 20x20 input"):
        model.fit(*data(16, (20, 20, 1)), batch_size=8, epochs=1, verbose=0,
                  callbacks=[RFCallback(batch_size=8, print_fn=lambda line: None)])
    assert keras_rf.analyze(model).covers_input() is False


def test_no_coverage_warning_when_the_field_covers_the_input():
    model = tiny()
    assert keras_rf.analyze(model).covers_input() is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data(), batch_size=8, epochs=1, verbose=0,
                  callbacks=[RFCallback(batch_size=8, summary=False, measure=False)])
    assert not [w for w in caught if "does not cover" in str(w.message)]


def test_summary_off_prints_nothing_and_bad_batch_size_is_an_error(capsys):
    model = tiny()
    model.fit(*data(), batch_size=8, epochs=1, verbose=0,
              callbacks=[RFCallback(batch_size=8, summary=False, measure=False)])
    assert "Param #" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="batch_size"):
        RFCallback(batch_size=0)
