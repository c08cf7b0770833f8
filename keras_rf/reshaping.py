"""Giving a model built with unknown sizes (``Input((None, None, 3))``) concrete ones.

Receptive fields and strides do not need the input size; memory and padding do. A
Functional or Sequential model is rebuilt from its config with the new input shapes
(weights copied), so every layer's output shape becomes concrete.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import keras

__all__ = ["with_input_shape", "needs_rebuild"]


def _has_inputs(model) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _is_graph_model(model) -> bool:
    from keras.src.models.functional import Functional
    return isinstance(model, (Functional, keras.Sequential))


def needs_rebuild(model, input_shape: Optional[tuple]) -> bool:
    """True when ``input_shape`` (with batch axis) fills unknown sizes of a built
    single-input Functional/Sequential model."""
    if input_shape is None or not _is_graph_model(model) or not _has_inputs(model):
        return False
    if len(model.inputs) != 1:
        return False
    old = tuple(model.inputs[0].shape)
    return len(old) == len(input_shape) and any(
        b is None and g is not None for g, b in zip(input_shape[1:], old[1:]))


def with_input_shape(model, shapes: Sequence[tuple], custom_objects: Optional[dict] = None):
    """Rebuild a Functional/Sequential ``model`` with inputs of the given ``shapes`` (one
    per input, without the batch axis), keeping its weights. Only unknown (None) sizes
    can be set. Returns (model, input_shape): a subclassed model is returned as it is,
    with the batch shape for :func:`keras_rf.analyze` to trace it.

    Raises ValueError when the shapes do not fit the model's inputs.
    """
    shapes = [tuple(s) for s in shapes]
    old = [tuple(t.shape) for t in model.inputs] if _has_inputs(model) else None
    if old is None or not _is_graph_model(model):
        if len(shapes) != 1:
            raise ValueError(f"{len(shapes)} shapes given for a model whose inputs are unknown; "
                             "give one")
        return model, (None,) + shapes[0]
    if len(shapes) != len(old):
        raise ValueError(f"{len(shapes)} shapes given, but the model has {len(old)} inputs: "
                         f"{', '.join(str(s) for s in old)}")
    new = []
    for given, before in zip(shapes, old):
        text = ",".join(map(str, given))
        if len(given) != len(before) - 1:
            raise ValueError(f"{text} has {len(given)} sizes, but the model's input {before} has "
                             f"{len(before) - 1} (without the batch axis)")
        if any(b is not None and g != b for g, b in zip(given, before[1:])):
            raise ValueError(f"{text} does not match the model's input {before}: only the "
                             "unknown (None) sizes can be set")
        new.append((before[0],) + tuple(given))
    if new == old:
        return model, None
    config = keras.saving.serialize_keras_object(model)
    _set_input_shapes(config, new, isinstance(model, keras.Sequential))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
            rebuilt.set_weights(model.get_weights())
    except Exception as exc:  # noqa: BLE001 - any failure means: cannot rebuild
        raise ValueError(f"could not rebuild '{model.name}' with input shape "
                         f"{', '.join(str(s) for s in new)}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:400]}") from None
    return rebuilt, None


def _set_input_shapes(serialized: dict, shapes: list[tuple], sequential: bool) -> None:
    config = serialized["config"]
    layer_configs = config["layers"]
    if sequential:
        shape = list(shapes[0])
        if "build_input_shape" in config and config["build_input_shape"] is not None:
            config["build_input_shape"] = shape
        first = layer_configs[0]["config"]
        if layer_configs[0]["class_name"] == "InputLayer":
            first["batch_shape"] = shape
            first.pop("batch_input_shape", None)
        elif "batch_shape" in first:
            first["batch_shape"] = shape
        return
    by_name = {layer["config"]["name"]: layer for layer in layer_configs}
    input_layers = config["input_layers"]
    if input_layers and not isinstance(input_layers[0], (list, tuple)):
        input_layers = [input_layers]  # a single input is stored unwrapped
    for (name, *_), shape in zip(input_layers, shapes):
        by_name[name]["config"]["batch_shape"] = list(shape)
        by_name[name]["config"].pop("batch_input_shape", None)
