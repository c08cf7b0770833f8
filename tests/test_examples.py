"""The examples: the architecture builder, its presets' budgets and receptive fields
(checked with keras_rf), the augmentations and schedule, and the training scripts'
quick mode (synthetic data, 1 epoch, CPU, seconds)."""

import json
import pathlib
import sys

import keras
import numpy as np
import pytest

import keras_rf

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import architectures  # noqa: E402
import common  # noqa: E402
from architectures import conv_block_net  # noqa: E402


def _geometry(report):
    return [(i.output_shape, i.receptive_field, i.effective_stride, i.params) for i in report.layers]


def test_notes_400_is_the_seed_architecture():
    seed = keras_rf.analyze(architectures.seed_architecture())
    notes = keras_rf.analyze(architectures.notes_400())
    assert _geometry(notes) == _geometry(seed)
    assert notes.last_spatial_layer.receptive_field == (38, 38)
    assert notes.total_params == seed.total_params == 3_187_584


@pytest.mark.parametrize("name, budget, last_rf, input_size", [
    ("mnist_8k", 8_000, (20, 20), (28, 28)),
    ("mnist_8k_rf28", 8_000, (28, 28), (28, 28)),
    ("mnist_20k", 20_000, (20, 20), (28, 28)),
    ("cifar10_200k", 200_000, (76, 76), (32, 32)),
])
def test_presets_budgets_and_receptive_fields(name, budget, last_rf, input_size):
    model = architectures.MODELS[name]()
    report = keras_rf.analyze(model)
    assert model.count_params() < budget
    assert report.total_params == model.count_params()
    assert report.last_spatial_layer.receptive_field == last_rf
    assert report.input_spatial_size == input_size
    assert model.output_shape == (None, 10)
    assert not any(i.class_name == "Dense" for i in report.layers)  # GAP head, no big dense


def test_cifar_preset_meets_the_issue_targets():
    report = keras_rf.analyze(architectures.cifar10_200k())
    assert min(report.last_spatial_layer.receptive_field) > 44
    assert report.covers_input()
    classes = {i.class_name for i in report.layers}
    assert {"SeparableConv2D", "GlobalAveragePooling2D"} <= classes
    dilated = report.layer("block3_sepconv2")
    # RF before it 24 at jump 4; a dilation-2 3x3 adds (5 - 1) * 4 = 16.
    assert dilated.receptive_field == (40, 40) and dilated.effective_stride == (4, 4)


def test_mnist_transition_comes_after_rf_7():
    report = keras_rf.analyze(architectures.mnist_8k())
    assert report.layer("block1_conv3").receptive_field == (7, 7)
    assert report.layer("transition1_pool").receptive_field == (8, 8)
    assert report.layer("transition1_pool").effective_stride == (2, 2)


def test_builder_blocks_transitions_and_options():
    model = conv_block_net((32, 32, 3), blocks=[16, 24, (32,)], transitions=[8, None],
                           convs_per_block=[2, 3, 1], batch_norm=True, dropout=0.1,
                           num_classes=5, name="t")
    names = [layer.name for layer in model.layers]
    assert [n for n in names if n.startswith("block") and n[-1].isdigit()] == [
        "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block2_conv3", "block3_conv1"]
    assert "transition1_conv" in names and "transition2_pool" in names
    assert "transition2_conv" not in names  # None: pool only
    assert "block3_conv1_drop" not in names and "block2_conv3_drop" in names  # no dropout on the last conv
    assert model.get_layer("block1_conv1").use_bias is False  # BatchNorm follows
    assert model.output_shape == (None, 5)
    report = keras_rf.analyze(model)
    # 3, 5 | pool 6 (j 2) | 10, 14, 18 | pool 20 (j 4) | 28
    assert report.layer("block2_conv3").receptive_field == (18, 18)
    assert report.last_spatial_layer.receptive_field == (28, 28)


def test_builder_without_batchnorm_puts_activation_in_the_conv():
    model = conv_block_net((28, 28, 1), blocks=[(4, 4)], head=None)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Conv2D", "Conv2D"]
    assert model.get_layer("block1_conv1").activation.__name__ == "relu"
    assert model.output_shape == (None, 24, 24, 4)


def test_builder_head_variants_and_errors():
    dense = conv_block_net((16, 16, 1), blocks=[(4,)], head="gap_dense", num_classes=3)
    assert dense.get_layer("head_dense").units == 3 and dense.output_shape == (None, 3)
    plain = conv_block_net((16, 16, 1), blocks=[(4,)], head="gap")
    assert plain.output_shape == (None, 4)
    with pytest.raises(ValueError, match="transitions"):
        conv_block_net((16, 16, 1), blocks=[(4,), (4,)], transitions=[4, 4])
    with pytest.raises(ValueError, match="separable"):
        conv_block_net((16, 16, 1), blocks=[(4,), (4,)], separable=[True])
    with pytest.raises(ValueError, match="dilation"):
        conv_block_net((16, 16, 1), blocks=[(4, 4)], dilation=[(1, 2, 3)])
    with pytest.raises(ValueError, match="head"):
        conv_block_net((16, 16, 1), blocks=[(4,)], head="flatten")


def test_random_affine_identity_and_shift():
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(common.random_affine(x, rng, 0.0, 0.0), x, atol=1e-6)
    # A pure integer shift moves pixels exactly: use max_shift with a fixed draw.
    class FixedRng:
        def uniform(self, low, high, size):
            return np.zeros(size) if np.ndim(size) == 0 else np.full(size, 2.0)
    shifted = common.random_affine(x, FixedRng(), 8.0, 2.0)
    np.testing.assert_allclose(shifted[:, 2:, 2:], x[:, :-2, :-2], atol=1e-5)
    assert np.all(shifted[:, :2] == 0) and np.all(shifted[:, :, :2] == 0)


def test_crop_flip_and_cutout_shapes():
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 3)).astype(np.float32)
    y = common.crop_flip(x, rng)
    assert y.shape == x.shape
    cut = common.cutout(np.ones((16, 32, 32, 3), np.float32), rng, 8)
    zeros_per_image = (cut[..., 0] == 0).sum(axis=(1, 2))
    assert zeros_per_image.max() == 64 and zeros_per_image.min() > 0  # clipped at borders


def test_one_cycle_schedule():
    schedule = common.one_cycle(0.1, total_steps=100, pct_start=0.25)
    lr = [float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 25, 100)]
    assert lr[0] == pytest.approx(0.01) and lr[1] == pytest.approx(0.1) and lr[2] == pytest.approx(0.001)


def _quick(module_name, tmp_path, *extra, n_train=256):
    module = __import__(module_name)
    out = tmp_path / module_name
    results = module.main(["--quick", "--out", str(out), "--verbose", "0", *extra])
    on_disk = json.loads((out / "results.json").read_text())
    history = json.loads((out / "history.json").read_text())
    for key in ("test_accuracy", "params", "last_rf", "input_size", "epoch_seconds",
                "images_per_second", "peak_memory_bytes", "estimated_memory_bytes"):
        assert key in on_disk, key
    assert on_disk["synthetic"] is True and on_disk["n_train"] == n_train and on_disk["n_test"] == 128
    # the estimate comes from RFCallback's logs and agrees with estimate_memory's breakdown
    assert on_disk["estimated_memory_bytes"] == on_disk["estimated_memory"]["total_bytes"] > 0
    assert history["estimated_memory_bytes"] == [float(on_disk["estimated_memory_bytes"])]
    if keras.backend.backend() == "jax":  # XLA's analysis of the compiled step, even on CPU
        assert on_disk["peak_memory_bytes"] > 0
        assert on_disk["peak_memory_method"] == "xla_memory_analysis"
    elif on_disk["peak_memory_bytes"] is None:  # nothing to measure: null, and why
        assert "GPU" in on_disk["peak_memory_method"] or "CPU" in on_disk["peak_memory_method"]
    assert 0.0 <= on_disk["test_accuracy"] <= 1.0
    assert on_disk["epoch_seconds"] > 0 and on_disk["images_per_second"] > 0
    assert len(history["loss"]) == 1 and "val_accuracy" in history
    assert (out / "rf_summary.txt").read_text().startswith("Model:")
    assert (out / "history.csv").exists()
    return results, out


def test_train_mnist_quick(tmp_path, capsys):
    results, out = _quick("train_mnist", tmp_path)
    assert results["params"] == 7_730
    assert results["last_rf"] == [20, 20] and results["input_size"] == [28, 28]
    assert (out / "curves.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "Receptive field of head_conv (last spatial layer): 20x20 on a 28x28" in printed
    assert "Test accuracy:" in printed and "images/s" in printed and "Peak memory" in printed


def test_train_cifar10_quick(tmp_path):
    results, _ = _quick("train_cifar10", tmp_path, "--batch-size", "64")
    assert results["params"] == 196_314
    assert results["last_rf"] == [76, 76] and results["covers_input"] is True


def test_train_mnist_quick_holdout_and_mixed_precision(tmp_path):
    results, _ = _quick("train_mnist", tmp_path, "--holdout", "56", "--mixed-precision",
                        "--model", "mnist_20k", "--no-augment", n_train=200)
    assert results["n_train"] == 200 and results["validation"] == "last 56 training images"
    assert results["dtype_policy"] in ("mixed_bfloat16", "mixed_float16")
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored


def test_missing_data_is_one_clear_message(tmp_path):
    import train_cifar10

    with pytest.raises(SystemExit) as err:
        train_cifar10.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "cifar-10-python.tar.gz" in str(err.value) and "--data-dir" in str(err.value)


def test_real_format_end_to_end(tmp_path):
    """--data-dir with IDX .gz files written in the real format trains (tiny)."""
    import data
    import train_mnist

    rng = np.random.default_rng(0)
    for key, stem in data.IDX_FILES.items():
        n = 64 if "train" in key else 32
        arr = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if key.startswith("x") else \
            rng.integers(0, 10, n, dtype=np.uint8)
        data.write_idx(tmp_path / (stem + ".gz"), arr)
    results = train_mnist.main(["--data-dir", str(tmp_path), "--epochs", "1", "--batch-size", "32",
                                "--out", str(tmp_path / "o"), "--verbose", "0"])
    assert results["n_train"] == 64 and results["n_test"] == 32 and not results["synthetic"]
