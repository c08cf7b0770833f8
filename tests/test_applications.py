"""analyze() on every model of keras.applications, and the published numbers.

Published receptive fields (Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill 2019, table of common architectures):
VGG16 212, ResNet-50 483, ResNet-101 1027, ResNet-152 1507, Inception-v3 1311,
Inception-ResNet-v2 3039, MobileNet-v1 315, all with effective stride 32.

Every application runs by default (about 2 minutes on 2 cores, most of it building
the largest models). The big ones are marked ``slow``: ``pytest -m "not slow"`` or
KERAS_RF_FAST=1 keeps a representative set (one or two per family).
"""

import gc
import os
import warnings

import keras
import pytest

from keras_rf import analyze

warnings.filterwarnings("ignore", category=pytest.PytestUnknownMarkWarning)

ALL = sorted(name for name in dir(keras.applications)
             if name[0].isupper() and callable(getattr(keras.applications, name)))

FAST = ["VGG16", "ResNet50", "ResNet50V2", "ResNet101", "MobileNet", "MobileNetV2",
        "MobileNetV3Small", "MobileNetV3Large", "InceptionV3", "InceptionResNetV2",
        "Xception", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "NASNetMobile",
        "ConvNeXtTiny"]

# MobileNetV3's default input is (None, None, 3): the receptive field sizes are known,
# their positions after a strided 'same' conv and the size of "the whole input" are not.
UNKNOWN_SIZE = {"MobileNetV3Small", "MobileNetV3Large"}
UNKNOWN_POSITION = "padding depends on an input length that is unknown"


def _slow_enabled(config) -> bool:
    markexpr = (config.option.markexpr or "").replace(" ", "")
    return os.environ.get("KERAS_RF_FAST") != "1" and "notslow" not in markexpr


def _param(name):
    if name in FAST:
        return pytest.param(name, id=name)
    return pytest.param(name, id=name, marks=pytest.mark.slow)


_REPORTS: dict = {}


@pytest.fixture
def application(request):
    """report(name, **kwargs): analyze keras.applications.<name>(weights=None, **kwargs),
    once per session (the model itself is freed: building is the slow part)."""

    def report(name, **kwargs):
        if name not in FAST and not _slow_enabled(request.config):
            pytest.skip(f"{name} is slow to build; skipped by KERAS_RF_FAST=1 / -m 'not slow'")
        key = (name, tuple(sorted(kwargs.items())))
        if key not in _REPORTS:
            model = getattr(keras.applications, name)(weights=None, **kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a layer class without a rule warns
                _REPORTS[key] = (analyze(model), len(model.layers))
            del model
            keras.backend.clear_session()
            gc.collect()
        return _REPORTS[key]

    return report


def test_the_list_is_what_keras_offers():
    assert set(FAST) <= set(ALL)
    assert len(ALL) >= 30, ALL


@pytest.mark.parametrize("name", [_param(n) for n in ALL])
def test_every_layer_has_a_known_receptive_field(name, application):
    report, n_layers = application(name)
    assert report.warnings == []
    assert len(report.layers) >= n_layers
    size_known = name not in UNKNOWN_SIZE
    for info in report.layers:
        where = f"{name}/{info.name} ({info.class_name})"
        if size_known:
            assert info.unknown_reason is None, f"{where}: {info.unknown_reason}"
        else:
            assert info.unknown_reason in (None, UNKNOWN_POSITION), f"{where}: {info.unknown_reason}"
        assert info.receptive_field is not None, where
        if not info.sees_whole_input:
            assert all(r is not None for r in info.receptive_field), where
            # a Flatten keeps each unit's box but has no stride ('-' in the table)
            assert info.effective_stride is None or None not in info.effective_stride, where
        elif size_known:
            assert info.receptive_field == report.input_spatial_size, where
    if size_known:
        assert "?" not in report.to_text().split("Total params")[0], name
    # The deepest layer whose units still see part of the image advances 32 pixels,
    # except in squeeze-and-excite nets, where units see everything early on.
    partial = [i for i in report.leaf_layers if i.effective_stride is not None]
    if not any(i.sees_whole_input and len(i.output_shape) == 4 and i.output_shape[1] != 1
               for i in report.leaf_layers):
        assert partial[-1].effective_stride == (32, 32), (name, partial[-1].name)


@pytest.mark.parametrize("name", sorted(UNKNOWN_SIZE))
def test_mobilenet_v3_at_224_is_fully_known(name, application):
    report, _ = application(name, input_shape=(224, 224, 3))
    for info in report.layers:
        assert info.unknown_reason is None, (info.name, info.unknown_reason)
        assert None not in info.receptive_field, info.name
    assert "?" not in report.to_text().split("Total params")[0]
    # The squeeze-and-excite blocks gate every position by a global average:
    # from the first one on, each unit depends on the whole image.
    first_se = next(i for i in report.layers if i.name.endswith("squeeze_excite_mul"))
    assert first_se.sees_whole_input
    assert report.layer("conv").receptive_field == (3, 3)


PUBLISHED = [
    # (application, layer, receptive field, effective stride)
    ("VGG16", "block5_conv3", 196, 16),
    ("VGG16", "block5_pool", 212, 32),
    ("ResNet50", "conv5_block3_out", 483, 32),
    ("ResNet50V2", "post_relu", 483, 32),
    ("ResNet101", "conv5_block3_out", 1027, 32),
    ("ResNet152", "conv5_block3_out", 1507, 32),
    ("MobileNet", "conv_pw_13", 315, 32),
    ("MobileNet", "conv_pw_13_relu", 315, 32),
    ("InceptionV3", "mixed10", 1311, 32),
    ("InceptionResNetV2", "conv_7b_ac", 3039, 32),
]


@pytest.mark.parametrize("name,layer,rf,stride",
                         [pytest.param(*p, id=f"{p[0]}-{p[1]}",
                                       marks=() if p[0] in FAST else pytest.mark.slow)
                          for p in PUBLISHED])
def test_published_receptive_fields(name, layer, rf, stride, application):
    info = application(name)[0].layer(layer)
    assert info.receptive_field == (rf, rf)
    assert info.effective_stride == (stride, stride)


def test_vgg16_block5_pool_window_is_centred(application):
    """Distill: P0 = 90 for VGG16's last pool: unit 0 sees pixels -90..121."""
    info = application("VGG16")[0].layer("block5_pool")
    assert info.effective_padding == (90, 90)
    assert info.window((0, 0)) == ((-90, 121), (-90, 121))
    assert info.window((6, 6)) == ((102, 313), (102, 313))


def test_squeeze_excite_net_covers_its_input(application):
    """After the first squeeze-and-excite gate every unit sees the whole image; the
    summary's last spatial layer is the top one, not the stem."""
    report = application("EfficientNetB0")[0]
    top = report.layer("top_activation")
    assert top.sees_whole_input and top.receptive_field == (224, 224)
    assert report.last_spatial_layer.name == "top_activation"
    assert report.covers_input() is True
