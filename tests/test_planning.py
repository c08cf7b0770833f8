"""keras_rf.plan: the teaching-notes planning question, checked against analyze()."""

import json

import pytest

import keras_rf
from keras_rf import plan


def test_classic_199_takes_99_valid_3x3_layers():
    p = plan(199, 3)
    assert p.reached
    assert p.n_layers == p.n_convs == 99 and p.n_pools == 0
    assert p.receptive_field == 199 and p.output_size == 1
    assert [s.size for s in p.steps[:4]] == [199, 197, 195, 193]
    assert [s.receptive_field for s in p.steps[:4]] == [1, 3, 5, 7]
    assert "99 layers" in p.verdict() and "covers the whole input" in p.verdict()


def test_target_rf_stops_early():
    p = plan(199, 3, target_rf=11)
    assert p.reached and p.n_convs == 5 and p.receptive_field == 11 and p.output_size == 189


def test_pooling_doubles_the_jump_not_the_rf():
    p = plan(400, 3, pool_every=5, target_rf=30)
    rows = [(s.label, s.size, s.receptive_field, s.jump) for s in p.steps]
    assert rows[5] == ("conv 3x3", 390, 11, 1)
    assert rows[6] == ("max-pool 2x2", 195, 12, 2)  # +1, not x2
    assert rows[7] == ("conv 3x3", 193, 16, 2)  # every 3x3 conv now adds 2*j = 4
    assert p.reached and p.receptive_field >= 30


def test_not_reached_when_image_runs_out():
    p = plan(199, 3, pool_every=2)
    assert not p.reached
    assert p.output_size < 3 and p.receptive_field < 199
    assert "NOT reached" in p.verdict() and "smaller than the 3x3 kernel" in p.stop_reason


def test_same_padding_keeps_size():
    p = plan(32, 3, padding="same")
    assert p.reached and p.n_convs == 16 and p.output_size == 32 and p.receptive_field == 33


@pytest.mark.parametrize("kwargs", [dict(input_size=0), dict(input_size=10, kernel=1),
                                    dict(input_size=10, padding="full"),
                                    dict(input_size=10, pool_every=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        plan(**kwargs)


def test_formats():
    p = plan(28, 5, pool_every=1)
    text = p.to_text()
    assert text.splitlines()[0].startswith("Plan: 5x5 'valid' convolutions, 2x2 max-pool every 1")
    assert "| #" in p.to_markdown().replace("|   #", "| #")
    assert "<table>" in p.to_html()
    data = json.loads(p.to_json())
    assert data["n_layers"] == p.n_layers and len(data["steps"]) == len(p.steps)


@pytest.mark.parametrize("kwargs", [dict(input_size=41, kernel=3, pool_every=2),
                                    dict(input_size=64, kernel=5, pool_every=1, padding="same",
                                         target_rf=40)])
def test_plan_matches_analyze(kwargs):
    p = plan(**kwargs)
    report = keras_rf.analyze(p.build_model())
    spatial = report.leaf_layers[1:]
    assert len(spatial) == p.n_layers
    for step, info in zip(p.layers, spatial):
        assert info.receptive_field == (step.receptive_field,) * 2
        assert info.effective_stride == (step.jump,) * 2
        assert info.output_shape[1] == step.size
