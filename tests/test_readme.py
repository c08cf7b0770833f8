"""The README's numbers are recomputed here, so they cannot drift from the code."""

import pathlib
import re
import sys

import keras
import pytest

import keras_rf

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def seed_report():
    sys.path.insert(0, str(ROOT / "examples"))
    from architectures import seed_architecture

    keras.backend.clear_session()  # layer names (conv2d_1, ...) restart as in a fresh process
    return keras_rf.analyze(seed_architecture())


def test_worked_example_table_matches_analyze(seed_report):
    rows = re.findall(r"^\| ((?:block|transition)[^|]*)\| (\d+)² \| (\d+) \| \**(\d+)\** \| (\d+) \|$",
                      README, flags=re.M)
    assert len(rows) == 14
    spatial = [i for i in seed_report.layers if i.class_name != "InputLayer"]
    doubling = 1
    for (label, size, rule_rf, exact_rf, jump), info in zip(rows, spatial):
        assert info.output_shape[1] == int(size)
        assert info.receptive_field == (int(exact_rf),) * 2
        assert info.effective_stride == (int(jump),) * 2
        # The teaching rule: x2 at each max-pool, +0 for a 1x1 conv, +2 for a 3x3 conv.
        if "max-pool" in label:
            doubling *= 2
        elif "1×1" not in label:
            doubling += 2
        assert int(rule_rf) == doubling


def test_printed_summary_in_readme_is_the_real_output(seed_report):
    block = README.split('Model: "seed_400"', 1)[1].split("```", 1)[0]
    expected = ('Model: "seed_400"' + block).strip().splitlines()
    actual = seed_report.to_text().splitlines()
    assert actual == expected
