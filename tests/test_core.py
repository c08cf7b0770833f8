"""The public API of the core summary: analyze, rf_summary, Report, errors, custom rules."""

import json
import math
import warnings
from fractions import Fraction

import keras
import numpy as np
import pytest
from keras import layers

import keras_rf
from keras_rf import analyze, rf_summary


def small_cnn(input_shape=(28, 28, 1)):
    x = inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(4, 3, name="c1")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs, name="small")


def test_layers_in_order_with_distill_numbers():
    report = analyze(small_cnn())
    assert [i.name for i in report.layers] == ["image", "c1", "pool", "c2", "gap", "head"]
    c1, pool, c2 = report.layer("c1"), report.layer("pool"), report.layer("c2")
    assert c1.receptive_field == (3, 3) and c1.effective_stride == (1, 1)
    # Pooling doubles the jump, adds (k-1)*j = 1 to the RF: 4, not 6.
    assert pool.receptive_field == (4, 4) and pool.effective_stride == (2, 2)
    # 13x13 input, stride 2, 'same': total pad = (7-1)*2+3-13 = 2 -> 1 before (jump 2 -> 2 px).
    assert c2.receptive_field == (8, 8) and c2.effective_stride == (4, 4)
    assert c2.effective_padding == (2, 2)
    assert report.layer("gap").sees_whole_input
    assert report.layer("gap").receptive_field == (28, 28)
    assert report.layer("head").effective_stride is None
    assert report.last_spatial_layer.name == "c2"
    assert report.covers_input() is False


def test_params_match_keras():
    model = small_cnn()
    report = analyze(model)
    assert report.total_params == model.count_params()
    assert sum(i.params for i in report.layers) == model.count_params()
    assert report.layer("c1").params == 4 * 9 + 4


@pytest.mark.parametrize("batch", [1, 7])
def test_activation_bytes_is_batch_times_shape_times_dtype(batch):
    report = analyze(small_cnn(), batch_size=batch)
    c1 = report.layer("c1")
    assert c1.activation_count == batch * 26 * 26 * 4
    assert c1.activation_bytes == batch * 26 * 26 * 4 * 4
    assert report.total_activation_bytes == sum(i.activation_bytes for i in report.layers)
    assert report.activation_bytes_per_sample * batch == report.total_activation_bytes


def test_mixed_precision_uses_the_compute_dtype(built_under_policy):
    model = built_under_policy("mixed_float16", small_cnn)
    report = analyze(model, batch_size=3)
    c1 = report.layer("c1")
    assert c1.dtype == "float16"
    assert c1.activation_bytes == 3 * 26 * 26 * 4 * 2
    assert report.layer("image").activation_bytes == 3 * 28 * 28 * 4  # inputs stay float32


def test_seed_architecture_exact_values_vs_doubling_rule():
    x = inputs = keras.Input((400, 400, 3))
    for f in (32, 64, 128, 256, 512):
        x = layers.Conv2D(f, 3)(x)
    x = layers.MaxPooling2D(2, name="t1_pool")(x)
    x = layers.Conv2D(32, 1, name="t1_1x1")(x)
    for f in (64, 128, 256, 512):
        x = layers.Conv2D(f, 3)(x)
    x = layers.MaxPooling2D(2, name="t2_pool")(x)
    x = layers.Conv2D(32, 1)(x)
    x = layers.Conv2D(64, 3, name="b3_conv1")(x)
    report = analyze(keras.Model(inputs, x))
    assert report.layer("t1_pool").receptive_field == (12, 12)  # notes say 22
    assert report.layer("t1_1x1").receptive_field == (12, 12)
    assert report.layer("t2_pool").receptive_field == (30, 30)  # notes say 60
    assert report.layer("b3_conv1").receptive_field == (38, 38)
    assert report.layer("b3_conv1").effective_stride == (4, 4)


def test_199_image_needs_99_valid_3x3_convs():
    x = inputs = keras.Input((199, 199, 1))
    for _ in range(99):
        x = layers.Conv2D(1, 3)(x)
    report = analyze(keras.Model(inputs, x))
    last = report.layers[-1]
    assert last.output_shape == (None, 1, 1, 1)
    assert last.receptive_field == (199, 199)
    assert report.covers_input() is True


def test_rf_summary_prints_lines_through_print_fn_and_returns_report():
    lines = []
    report = rf_summary(small_cnn(), batch_size=2, print_fn=lines.append)
    assert isinstance(report, keras_rf.Report)
    assert all("\n" not in line for line in lines)
    text = "\n".join(lines)
    for column in ("Layer (type)", "Output Shape", "RF", "Jump", "Param #", "Memory"):
        assert column in text
    assert "c2 (Conv2D)" in text and "8x8" in text
    assert "28x28 (all)" in text
    assert "does NOT cover" in text
    assert f"Total params: {report.total_params:,}" in text


def test_rf_summary_prints_to_stdout_by_default(capsys):
    rf_summary(small_cnn())
    assert "c1 (Conv2D)" in capsys.readouterr().out


def test_formats():
    report = analyze(small_cnn())
    data = json.loads(json.dumps(report.to_dict()))
    assert data["layers"][1]["receptive_field"] == [3, 3]
    assert data["total_params"] == report.total_params
    assert "| c1 (Conv2D)" in report.to_markdown()
    assert "<table>" in report.to_html() and report._repr_html_() == report.to_html()
    assert "c1 (Conv2D)" in str(report)


def test_sequential_built_and_unbuilt():
    seq = keras.Sequential([layers.Conv2D(2, 5), layers.MaxPooling2D(3)])
    with pytest.raises(keras_rf.ModelNotReadyError, match="not built"):
        analyze(seq)
    report = analyze(seq, input_shape=(None, 32, 32, 3))
    assert report.layers[-1].receptive_field == (7, 7)
    assert report.layers[-1].effective_stride == (3, 3)
    built = keras.Sequential([keras.Input((32, 32, 3)), layers.Conv2D(2, 5, dilation_rate=2)])
    assert analyze(built).layers[-1].receptive_field == (9, 9)


def test_non_model_input_is_rejected():
    with pytest.raises(TypeError, match="keras.Model"):
        analyze(layers.Conv2D(2, 3))
    with pytest.raises(ValueError, match="batch_size"):
        analyze(small_cnn(), batch_size=0)


class TwoConvs(keras.Model):
    def __init__(self):
        super().__init__(name="two_convs")
        self.a = layers.Conv2D(3, 3)
        self.b = layers.Conv2D(3, 3, strides=2)
        self.pool = layers.GlobalAveragePooling2D()

    def call(self, x):
        y = self.b(self.a(x))
        return self.pool(y)


def test_subclassed_model_never_called_gives_clear_error():
    with pytest.raises(keras_rf.ModelNotReadyError, match="never been built or called"):
        analyze(TwoConvs())


def test_subclassed_model_is_traced_once_called():
    model = TwoConvs()
    model(np.zeros((1, 20, 20, 1), "float32"))
    report = analyze(model)
    convs = [i for i in report.layers if i.class_name == "Conv2D"]
    assert [c.receptive_field for c in convs] == [(3, 3), (5, 5)]
    assert convs[1].effective_stride == (2, 2)
    assert report.total_params == model.count_params()


def test_unknown_spatial_size_keeps_sizes_and_strides():
    x = inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, padding="same", name="c1")(x)
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="c2")(x)
    x = layers.Conv2D(4, 3, name="c3")(x)
    report = analyze(keras.Model(inputs, x))
    c1, c2, c3 = (report.layer(n) for n in ("c1", "c2", "c3"))
    assert c1.effective_padding == (1, 1)  # stride 1: padding does not depend on size
    assert c2.receptive_field == (5, 5) and c2.effective_stride == (2, 2)
    assert c2.effective_padding == (None, None)  # depends on the parity of the size
    assert c3.receptive_field == (9, 9)
    assert c3.activation_bytes is None
    assert "?" in str(report)


def test_residual_with_unknown_size_still_knows_rf():
    x = inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="down")(x)
    y = layers.Conv2D(4, 3, padding="same")(x)
    y = layers.Conv2D(4, 3, padding="same")(y)
    out = layers.Add(name="add")([x, y])  # both branches share the unknown offset
    report = analyze(keras.Model(inputs, out))
    assert report.layer("add").receptive_field == (3 + 4 * 2, 3 + 4 * 2)


def test_nested_models_are_expanded_and_shared_calls_listed():
    inner_in = keras.Input((None, None, 2))
    inner = keras.Model(inner_in, layers.Conv2D(2, 3, name="inner_conv")(inner_in), name="block")
    x = inputs = keras.Input((16, 16, 2))
    x = inner(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = inner(x)  # the same sub-model again
    report = analyze(keras.Model(inputs, x))
    calls = [i for i in report.layers if i.name == "inner_conv"]
    assert [c.receptive_field for c in calls] == [(3, 3), (8, 8)]
    assert calls[1].shared and calls[1].params == 0
    assert report.layer("block", call_index=1).receptive_field == (8, 8)
    assert report.layer("block").is_container and report.layer("inner_conv").depth == 1
    assert report.total_params == sum(i.params for i in report.leaf_layers)


def test_multiple_inputs_have_separate_fields():
    a = keras.Input((20, 20, 1), name="a")
    b = keras.Input((20, 20, 1), name="b")
    xa = layers.Conv2D(1, 5, name="ca")(a)
    xb = layers.Conv2D(1, 3, padding="same", name="cb")(b)
    xb = layers.Cropping2D(1, name="crop")(xb)
    xb = layers.Cropping2D(1)(xb)
    merged = layers.Concatenate(name="cat")([xa, xb])
    report = analyze(keras.Model([a, b], merged))
    cat = report.layer("cat")
    assert cat.receptive_fields == {"a": (5, 5), "b": (3, 3)}


class Blur(layers.Layer):
    def call(self, x):
        return keras.ops.average_pool(x, 5, strides=1, padding="same")


def test_layer_without_rule_shows_question_mark_and_one_warning():
    x = inputs = keras.Input((32, 32, 1))
    x = Blur(name="blur1")(x)
    x = Blur(name="blur2")(x)
    x = layers.Conv2D(1, 3, name="after")(x)
    model = keras.Model(inputs, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = analyze(model)
    messages = [str(w.message) for w in caught if "Blur" in str(w.message)]
    assert len(messages) == 1 and "register_rule" in messages[0]
    assert report.layer("blur1").receptive_field is None
    assert report.layer("after").receptive_field is None
    assert "no rule for Blur" in report.layer("after").unknown_reason
    assert "?" in str(report)


def test_custom_layer_can_declare_its_geometry():
    keras_rf.register_rule(Blur, keras_rf.Window(kernel_size=5, strides=1, dilation_rate=1,
                                                 padding="same"))
    try:
        x = inputs = keras.Input((32, 32, 1))
        x = Blur(name="blur")(x)
        x = layers.Conv2D(1, 3, name="after")(x)
        report = analyze(keras.Model(inputs, x))
        assert report.layer("blur").receptive_field == (5, 5)
        assert report.layer("blur").effective_padding == (2, 2)
        assert report.layer("after").receptive_field == (7, 7)
    finally:
        keras_rf.unregister_rule(Blur)


def test_layer_attribute_declares_rule():
    class Gate(layers.Layer):
        receptive_field_rule = "pointwise"

        def call(self, x):
            return x * keras.ops.sigmoid(x)

    x = inputs = keras.Input((10, 10, 1))
    x = layers.Conv2D(1, 3)(x)
    x = Gate(name="gate")(x)
    assert analyze(keras.Model(inputs, x)).layer("gate").receptive_field == (3, 3)


def test_upsampling_gives_fractional_jump():
    x = inputs = keras.Input((16, 16, 1))
    x = layers.Conv2D(1, 3, strides=2, padding="same")(x)
    x = layers.UpSampling2D(2, name="up")(x)
    x = layers.Conv2D(1, 3, padding="same", name="after_up")(x)
    x = layers.UpSampling2D(2, name="up2")(x)
    report = analyze(keras.Model(inputs, x))
    assert report.layer("up").effective_stride == (1, 1)
    assert report.layer("after_up").receptive_field == (5, 5)
    assert report.layer("up2").effective_stride == (Fraction(1, 2), Fraction(1, 2))
    assert "1/2x1/2" in str(report)


def test_flatten_dense_sees_whole_input():
    x = inputs = keras.Input((12, 10, 1))
    x = layers.Conv2D(2, 3)(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(3, name="dense")(x)
    report = analyze(keras.Model(inputs, x))
    # Each flattened unit still sees one 3x3 box; the Dense that mixes them sees all.
    assert report.layer("flat").receptive_field == (3, 3)
    assert not report.layer("flat").sees_whole_input
    assert report.layer("flat").effective_stride is None
    assert report.layer("dense").sees_whole_input
    assert report.layer("dense").receptive_field == (12, 10)
    assert report.last_spatial_layer.class_name == "Conv2D"


def test_tokens_from_patches_keep_their_box_until_mixed():
    x = inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 8, strides=8, name="patches")(x)
    x = layers.Reshape((16, 8), name="tokens")(x)
    x = layers.Dense(8, name="per_token")(x)
    x = layers.LayerNormalization(name="norm")(x)
    y = layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    pooled = layers.GlobalAveragePooling1D(name="pool")(x)
    report = analyze(keras.Model(inputs, [y, pooled]))
    for name in ("tokens", "per_token", "norm"):
        assert report.layer(name).receptive_field == (8, 8), name
    assert report.layer("mha").sees_whole_input
    assert report.layer("pool").receptive_field == (32, 32)


def test_conv1d_causal_and_dense_per_step():
    x = inputs = keras.Input((50, 8))
    x = layers.Conv1D(4, 3, padding="causal", dilation_rate=4, name="causal")(x)
    x = layers.Dense(4, name="per_step")(x)
    report = analyze(keras.Model(inputs, x))
    assert report.layer("causal").receptive_field == (9,)
    assert report.layer("causal").effective_padding == (8,)
    assert report.layer("per_step").receptive_field == (9,)


def test_unit_windows_are_exposed():
    report = analyze(small_cnn())
    # c2 unit 3 (jump 4, first unit starts at -2) sees pixels 10..17.
    assert report.layer("c2").window((3, 0)) == ((10, 17), (-2, 5))
    assert math.prod(report.layer("c1").output_shape[1:3]) == 26 * 26


def test_channels_first_axes_follow_the_layer_data_format():
    x = inputs = keras.Input((3, 20, 24))
    x = layers.Conv2D(2, (3, 5), strides=(1, 2), data_format="channels_first", name="c")(x)
    x = layers.MaxPooling2D(2, data_format="channels_first", name="p")(x)
    report = analyze(keras.Model(inputs, x))
    assert report.input_spatial_size == (20, 24)
    assert report.layer("c").receptive_field == (3, 5)
    assert report.layer("p").receptive_field == (4, 7)
    assert report.layer("p").effective_stride == (2, 4)


def test_markdown_keeps_title_and_footer_out_of_the_table():
    model = keras.Sequential([keras.Input((10, 10, 1)), layers.Conv2D(2, 3, name="c"),
                              layers.Flatten(), layers.Dense(2)])
    blocks = keras_rf.analyze(model).to_markdown().split("\n\n")
    tables = [b for b in blocks if b.startswith("|")]
    assert len(tables) == 1
    rows = tables[0].splitlines()
    assert all(row.startswith("|") and row.endswith("|") for row in rows)
    assert len(rows) == 2 + len(model.layers) + 1  # header, rule, input layer + layers
    assert "---:" in rows[1]  # numbers right-aligned
    assert any(b.startswith("Total params: 278") for b in blocks)
    assert any("3x3 on a 10x10 input" in b for b in blocks)
    html = keras_rf.analyze(model)._repr_html_()
    assert html.count("<tr>") == len(model.layers) + 2 and "text-align: right" in html


def test_input_shape_gives_sizes_to_a_model_built_with_unknown_ones():
    x = inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="c1")(x)
    model = keras.Model(inputs, layers.Conv2D(2, 3, name="c2")(x))
    unknown = analyze(model, batch_size=2)
    assert unknown.total_activation_bytes is None
    assert unknown.layer("c2").receptive_field == (7, 7)
    known = analyze(model, batch_size=2, input_shape=(None, 16, 16, 3))
    assert known.layer("c2").output_shape == (None, 6, 6, 2)
    assert known.layer("c2").receptive_field == (7, 7)
    assert known.layer("c2").activation_bytes == 2 * 6 * 6 * 2 * 4
    assert model.inputs[0].shape == (None, None, None, 3)  # the user's model is left alone
    with pytest.raises(ValueError, match="only the unknown"):
        keras_rf.with_input_shape(keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(1, 3)]),
                                  [(16, 16, 3)])
