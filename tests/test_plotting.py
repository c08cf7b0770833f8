"""report.plot() and draw_receptive_field: figures that open, with the right content."""

import io

import keras
import numpy as np
import pytest
from keras import layers

pytest.importorskip("matplotlib")

import keras_rf
from keras_rf import analyze, draw_receptive_field

PNG = b"\x89PNG\r\n\x1a\n"


def mnist_like(shape=(28, 28, 1)):
    x = inputs = keras.Input(shape, name="image")
    x = layers.Conv2D(4, 3, padding="same", name="c1")(x)
    x = layers.Conv2D(4, 3, padding="same", name="c2")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(4, 3, padding="same", name="c3")(x)
    x = layers.Conv2D(4, 3, padding="same", name="c4")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, name="head")(x), name="mnist_like")


def test_report_plot_content(tmp_path):
    report = analyze(mnist_like(), batch_size=4)
    path = tmp_path / "report.png"
    fig = report.plot(path)
    assert path.read_bytes()[:8] == PNG
    ax_rf, ax_mem = fig.axes[:2]
    line = ax_rf.lines[0]
    rfs = [i.receptive_field[0] if not i.sees_whole_input else None for i in report.leaf_layers]
    ys = list(line.get_ydata())
    assert [int(y) for y, r in zip(ys, rfs) if r is not None] == [r for r in rfs if r is not None]
    assert any(28 == l.get_ydata()[0] for l in ax_rf.lines[1:])  # the input-size line
    heights = [p.get_height() for p in ax_mem.patches]
    c1 = report.layer("c1").activation_bytes / 1024  # KiB
    assert heights[1] == pytest.approx(c1)
    assert "batch of 4" in ax_mem.get_title(loc="left")
    labels = [t.get_text() for t in ax_mem.get_xticklabels()]
    assert labels[1] == "c1 (Conv2D)"


def test_figure_shows_itself_in_jupyter():
    fig = analyze(mnist_like()).plot()
    assert fig._repr_png_()[:8] == PNG
    import matplotlib.pyplot as plt
    assert fig not in [plt.figure(n) for n in plt.get_fignums()]  # no pyplot leak


def test_big_model_thins_labels():
    x = inputs = keras.Input((64, 64, 1))
    for k in range(70):
        x = layers.Conv2D(1, 3, padding="same", name=f"conv{k}")(x)
    fig = analyze(keras.Model(inputs, x)).plot(max_labels=30)
    assert len(fig.axes[1].get_xticklabels()) <= 30


def test_unknown_sizes_plot():
    x = inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same")(x)
    x = layers.GlobalMaxPooling2D()(x)
    fig = analyze(keras.Model(inputs, x)).plot()
    assert "?" in [t.get_text() for t in fig.axes[1].texts]


def test_draw_receptive_field_box(tmp_path):
    report = analyze(mnist_like())
    image = np.random.default_rng(0).random((28, 28))
    fig = draw_receptive_field(report, "c4", image, path=tmp_path / "box.png")
    assert (tmp_path / "box.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    outline = [p for p in ax.patches if not p.get_fill()][-1]
    (r0, r1), (c0, c1) = report.layer("c4").window((7, 7))
    assert (outline.get_x(), outline.get_y()) == (c0 - 0.5, r0 - 0.5)
    assert (outline.get_width(), outline.get_height()) == (c1 - c0 + 1, r1 - r0 + 1) == (14, 14)
    assert "unit (7, 7)" in ax.get_title()


def test_draw_several_units_with_padding():
    report = analyze(mnist_like())
    image = np.zeros((1, 1, 28, 28))  # batch of 1, channels_first: both accepted
    fig = draw_receptive_field(report, report.layer("c4"), image, position=[(0, 0), (7, 8)])
    ax = fig.axes[0]
    assert "rows -6..7, cols -6..7 (up to 6 px of padding)" in ax.get_title()
    assert ax.get_xlim()[0] < -6  # the box outside the image is shown


def test_draw_on_model_and_own_axes():
    from matplotlib.figure import Figure
    fig = Figure()
    ax = fig.add_subplot()
    out = draw_receptive_field(mnist_like(), "gap", np.zeros((28, 28, 1)), ax=ax)
    assert out is fig and "whole input" in ax.get_title()


def test_draw_errors():
    report = analyze(mnist_like())
    with pytest.raises(ValueError, match="28x28"):
        draw_receptive_field(report, "c1", np.zeros((32, 32)))
    with pytest.raises(KeyError):
        draw_receptive_field(report, "nope", np.zeros((28, 28)))
    flat = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(2, 3), layers.Flatten(name="f")])
    with pytest.raises(ValueError, match="flattened"):
        draw_receptive_field(analyze(flat), "f", np.zeros((8, 8)))


def test_draw_1d():
    x = inputs = keras.Input((50, 2))
    x = layers.Conv1D(2, 5, dilation_rate=2, name="c")(x)
    fig = draw_receptive_field(analyze(keras.Model(inputs, x)), "c", np.zeros((50, 2)))
    assert "pixels 21..29" in fig.axes[0].get_title()
