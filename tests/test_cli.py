"""The keras-rf console script: summary of saved models in every format, plan, errors."""

import inspect
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import pytest
from keras import layers

import keras_rf
from keras_rf.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]

CUSTOM_MODULE = textwrap.dedent('''
    import keras

    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}
''')


def small_cnn(shape=(32, 32, 3), name="small"):
    x = inputs = keras.Input(shape, name="image")
    x = layers.Conv2D(4, 3, name="c1")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, name="head")(x), name=name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    small_cnn().save(folder / "small.keras")
    small_cnn().save(folder / "small.h5")
    small_cnn((None, None, 3), name="fcn").save(folder / "fcn.keras")
    seq = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(4, 3),
                            layers.MaxPooling2D(), layers.Conv2D(4, 3)], name="seq")
    seq.save(folder / "seq.keras")
    (folder / "my_layers.py").write_text(CUSTOM_MODULE)
    sys.path.insert(0, str(folder))
    try:
        import my_layers
        x = inputs = keras.Input((16, 16, 1))
        x = layers.Conv2D(2, 3, name="c")(x)
        x = my_layers.Scale(name="scale")(x)
        keras.Model(inputs, x, name="custom").save(folder / "custom.keras")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("my_layers", None)
    x = inputs = keras.Input((8, 8, 1))
    x = layers.Lambda(lambda t: t * 2, name="double")(x)
    keras.Model(inputs, layers.Conv2D(1, 3)(x), name="lam").save(folder / "lam.keras")
    (folder / "notes.keras").write_text("not a model")
    (folder / "notes.txt").write_text("not a model")
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["small.keras", "small.h5"])
def test_summary_table(saved, capsys, name):
    code, out, err = run(capsys, "summary", saved / name)
    assert code == 0, err
    assert out.startswith('Model: "small"')
    assert "c2 (Conv2D)" in out and "8x8" in out
    assert "Total params:" in out and "does NOT cover" in out


def test_summary_json_matches_analyze(saved, capsys):
    code, out, _ = run(capsys, "summary", saved / "small.keras", "--format", "json",
                       "--batch-size", "8")
    assert code == 0
    data = json.loads(out)
    expected = keras_rf.analyze(small_cnn(), batch_size=8).to_dict()
    assert data["batch_size"] == 8
    assert data["total_activation_bytes"] == expected["total_activation_bytes"]
    assert [l["receptive_field"] for l in data["layers"]] == \
        [l["receptive_field"] for l in expected["layers"]]


def test_summary_markdown_and_html(saved, capsys):
    code, out, _ = run(capsys, "summary", saved / "small.keras", "--format", "markdown")
    assert code == 0 and "| c2 (Conv2D)" in out
    assert "|\n\nTotal params:" in out  # a paragraph, not a table row, when rendered
    code, out, _ = run(capsys, "summary", saved / "small.keras", "--format", "html")
    assert code == 0
    assert out.lstrip().startswith("<!DOCTYPE html>") and "<table>" in out
    assert out.rstrip().endswith("</html>")


def test_unknown_size_hint_and_input_shape(saved, capsys):
    code, out, _ = run(capsys, "summary", saved / "fcn.keras")
    assert code == 0 and "--input-shape" in out and "? per sample" in out
    code, out, _ = run(capsys, "summary", saved / "fcn.keras", "--input-shape", "32,32,3",
                       "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["input_shapes"] == [[None, 32, 32, 3]]
    reference = keras_rf.analyze(small_cnn()).to_dict()
    assert data["total_activation_bytes"] == reference["total_activation_bytes"]
    assert data["layers"][3]["effective_padding"] == [2, 2]  # known once the size is known


def test_input_shape_sequential(saved, capsys):
    code, out, _ = run(capsys, "summary", saved / "seq.keras", "--input-shape", "28x28x1")
    assert code == 0 and "(None, 11, 11, 4)" in out


def test_input_shape_conflict(saved, capsys):
    code, _, err = run(capsys, "summary", saved / "fcn.keras", "--input-shape", "32,32,1")
    assert code == 1 and "does not match" in err
    code, _, err = run(capsys, "summary", saved / "fcn.keras", "--input-shape", "32,32")
    assert code == 1 and "has 2 sizes" in err


def test_missing_file(saved, capsys):
    code, out, err = run(capsys, "summary", saved / "nope.keras")
    assert code == 1 and out == ""
    assert "no such file" in err and "Traceback" not in err


@pytest.mark.parametrize("name, message", [("notes.keras", "not a Keras model"),
                                           ("notes.txt", "unsupported file type")])
def test_not_a_model(saved, capsys, name, message):
    code, _, err = run(capsys, "summary", saved / name)
    assert code == 1 and message in err


def test_custom_layer_needs_custom_objects(saved, capsys, monkeypatch):
    code, _, err = run(capsys, "summary", saved / "custom.keras")
    assert code == 1
    assert "custom class 'Scale'" in err and "--custom-objects my_layers:Scale" in err
    monkeypatch.chdir(saved)  # a module in the current folder, as a user would run it
    code, out, err = run(capsys, "summary", "custom.keras", "--custom-objects", "my_layers:Scale")
    assert code == 0, err
    assert "scale (Scale)" in out
    sys.modules.pop("my_layers", None)


def test_custom_objects_file_path_and_errors(saved, capsys):
    code, out, err = run(capsys, "summary", saved / "custom.keras", "--custom-objects",
                         f"{saved / 'my_layers.py'}:Scale")
    assert code == 0, err
    sys.modules.pop("my_layers", None)
    code, _, err = run(capsys, "summary", saved / "custom.keras", "--custom-objects",
                       "no_such_module_xyz:Scale")
    assert code == 1 and "cannot import 'no_such_module_xyz'" in err
    code, _, err = run(capsys, "summary", saved / "custom.keras", "--custom-objects",
                       f"{saved / 'my_layers.py'}:Nope")
    assert code == 1 and "has no attribute 'Nope'" in err
    sys.modules.pop("my_layers", None)


def test_lambda_needs_unsafe(saved, capsys):
    code, _, err = run(capsys, "summary", saved / "lam.keras")
    assert code == 1 and "--unsafe" in err
    code, out, err = run(capsys, "summary", saved / "lam.keras", "--unsafe")
    assert code == 0, err
    assert "double (Lambda)" in out


def test_plot_option(saved, capsys, tmp_path):
    png = tmp_path / "rf.png"
    code, _, err = run(capsys, "summary", saved / "small.keras", "--plot", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optimizer_flag(saved, capsys):
    code, out, err = run(capsys, "summary", saved / "small.keras", "--optimizer", "adam",
                         "--format", "json")
    assert code == 0, err
    memory = json.loads(out)["training_memory"]
    assert memory["optimizer"] == "Adam" and memory["batch_size"] == 1
    model = keras.saving.load_model(saved / "small.keras")
    assert memory["total_bytes"] == keras_rf.estimate_memory(model, 1, optimizer="adam").total_bytes
    code, out, _ = run(capsys, "summary", saved / "small.keras", "--optimizer", "adamm")
    assert code == 1 and "Unknown optimizer 'adamm'" in out + _


def test_plan_table(capsys):
    code, out, _ = run(capsys, "plan", "--input", 199, "--kernel", 3)
    assert code == 0
    lines = out.splitlines()
    assert "input" in lines[3] and "199x199" in lines[3]
    assert lines[-2].split()[:4] == ["99", "conv", "3x3", "1x1"]
    assert "199x199" in lines[-2]
    assert "after 99 layers" in lines[-1]


def test_plan_formats_and_target(capsys):
    code, out, _ = run(capsys, "plan", "--input", 400, "--pool-every", 5, "--target-rf", 30,
                       "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["reached"] and data["n_pools"] == 1 and data["receptive_field"] >= 30
    code, out, _ = run(capsys, "plan", "--input", 28, "--format", "markdown")
    assert code == 0 and out.count("|") > 20


def test_plan_bad_args(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--input", "-3"])
    assert exc.value.code == 2
    code, _, err = run(capsys, "plan", "--input", 10, "--kernel", 1)
    assert code == 1 and "kernel" in err


def test_console_script_runs(saved):
    """What a new user types: the installed entry point (or python -m keras_rf.cli)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "keras_rf.cli", "summary",
                           str(saved / "small.keras"), "--format", "json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["model_name"] == "small"
