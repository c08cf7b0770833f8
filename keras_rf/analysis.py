"""``analyze(model)``: run the geometry rules over the layer graph, no forward pass."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import keras
import numpy as np

from keras_rf import rules
from keras_rf.geometry import AxisMap, TensorGeometry, unknown
from keras_rf.graph import GraphCall, ModelGraph, build_graph
from keras_rf.report import LayerInfo, Report
from keras_rf.reshaping import needs_rebuild, with_input_shape

_DTYPE_BYTES = {"bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "bool": 1}


def dtype_size(dtype: str) -> int:
    """Bytes per element of a Keras dtype name."""
    name = str(dtype).split(".")[-1]
    if name in _DTYPE_BYTES:
        return _DTYPE_BYTES[name]
    return np.dtype(name).itemsize


def analyze(model: keras.Model, batch_size: int = 1, input_shape: Optional[tuple] = None) -> Report:
    """Receptive field, effective stride/padding and activation memory of every layer.

    Reads the model's graph only: nothing is computed on tensors. ``input_shape``
    (with batch axis) builds a Sequential or subclassed model that was never built,
    or gives concrete sizes to a model built with unknown ones (``(None, 224, 224, 3)``
    for an ``Input((None, None, 3))``; see :func:`keras_rf.with_input_shape`).
    """
    check_batch_size(batch_size)
    if needs_rebuild(model, input_shape):
        model, input_shape = with_input_shape(model, [input_shape[1:]])
    return analyze_graph(model, build_graph(model, input_shape), batch_size)


def check_batch_size(batch_size) -> None:
    """ValueError unless ``batch_size`` is a positive int (bool excluded)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def analyze_graph(model: keras.Model, graph: ModelGraph, batch_size: int) -> Report:
    """:func:`analyze` on a graph already built by :func:`keras_rf.graph.build_graph`
    (for callers that walk the same graph themselves, as the memory estimate does)."""
    geometries = _propagate(graph)
    input_names = graph.input_names
    spatial_sizes = [_spatial_size(geometries[key][i], shape)
                     for i, (key, shape) in enumerate(zip(graph.inputs, graph.input_shapes))]
    report = Report(
        model_name=model.name,
        batch_size=batch_size,
        layers=[],
        input_shapes=graph.input_shapes,
        input_names=input_names,
        input_spatial_sizes=dict(zip(input_names, spatial_sizes)),
        total_params=model.count_params(),
        trainable_params=_count(model.trainable_weights),
        non_trainable_params=_count(model.non_trainable_weights),
    )
    seen_ops: set[int] = set()
    for call in graph.calls:
        geoms = geometries[graph.resolve(call.outputs[0])]
        report.layers.append(_layer_info(call, geoms, spatial_sizes, input_names, batch_size,
                                         seen_ops))
    unknown_classes = sorted({type(c.operation).__name__ for c in graph.calls
                              if not (c.is_input or c.is_container)
                              and rules.find_rule(c.operation) is None})
    for name in unknown_classes:
        message = (f"keras_rf has no geometry rule for layer class {name}; its receptive field "
                   f"and those after it are shown as '?'. Declare one with "
                   f"keras_rf.register_rule({name}, ...).")
        report.warnings.append(message)
        warnings.warn(message, stacklevel=2)
    return report


def _count(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def _input_geometry(graph: ModelGraph, call: GraphCall, index: int) -> TensorGeometry:
    """Identity maps on the input's spatial axes (by data format and rank)."""
    shape = call.output_shapes[0]
    rank = len(shape) - 1
    if rank >= 2:
        data_format = _consumer_data_format(graph, call.outputs[0])
        positions = list(range(1, rank)) if data_format == "channels_first" else list(range(rank - 1))
    elif rank == 1 and "int" in call.output_dtypes[0]:
        positions = [0]  # token ids: the sequence axis is spatial
    else:
        positions = []
    axes = [None] * rank
    for input_axis, pos in enumerate(positions):
        axes[pos] = AxisMap.identity(input_axis)
    return TensorGeometry(tuple(axes))


def _consumer_data_format(graph: ModelGraph, key) -> str:
    for call in graph.calls:
        if any(graph.resolve(k) == key for k in call.inputs):
            data_format = getattr(call.operation, "data_format", None)
            if data_format in ("channels_first", "channels_last"):
                return data_format
    return keras.config.image_data_format()


def _propagate(graph: ModelGraph) -> dict:
    """Geometry of every tensor, as {tensor key: {model input index: TensorGeometry}}."""
    geometries: dict = {}
    input_index = {key: i for i, key in enumerate(graph.inputs)}
    for call in graph.calls:
        if call.is_input:
            index = input_index[graph.resolve(call.outputs[0])]
            geometries[call.outputs[0]] = {index: _input_geometry(graph, call, index)}
            continue
        if call.is_container:
            continue  # its outputs are aliases of the inner model's outputs
        inputs = [geometries.get(graph.resolve(k), {}) for k in call.inputs]
        sources = sorted({s for g in inputs for s in g})
        per_output: list[dict] = [{} for _ in call.outputs]
        rule = rules.find_rule(call.operation)
        for source in sources:
            results = _apply(rule, call, [g.get(source) for g in inputs])
            for slot, geom in zip(per_output, results):
                slot[source] = geom
        for key, slot in zip(call.outputs, per_output):
            geometries[key] = slot
    return geometries


def _apply(rule, call: GraphCall, inputs) -> list[TensorGeometry]:
    n_out = len(call.outputs)
    name = type(call.operation).__name__
    if rule is None:
        return [unknown(f"no rule for {name}")] * n_out
    upstream = next((g for g in inputs if g is not None and g.unknown), None)
    if upstream is not None and rule is not rules.whole:
        return [upstream] * n_out
    layer_call = rules.LayerCall(call.operation, inputs, call.input_shapes, call.output_shapes)
    try:
        result = rule(call.operation, layer_call)
    except Exception as exc:  # a rule that cannot handle this call must not guess
        return [unknown(f"{name} rule failed: {type(exc).__name__}: {exc}")] * n_out
    results = [result] * n_out if isinstance(result, TensorGeometry) else list(result)
    checked = []
    for geom, shape in zip(results, call.output_shapes):
        if not (geom.whole or geom.unknown) and len(geom.axes) != len(shape) - 1:
            geom = unknown(f"{name} rule returned {len(geom.axes)} axes for a rank-{len(shape)} output")
        checked.append(geom)
    return checked


def _layer_info(call: GraphCall, geoms: dict, spatial_sizes, input_names, batch_size,
                seen_ops: set) -> LayerInfo:
    op = call.operation
    first_call = id(op) not in seen_ops
    seen_ops.add(id(op))
    params = op.count_params() if isinstance(op, keras.layers.Layer) and op.built and first_call else 0
    counts = [_count_elements(s, batch_size) for s in call.output_shapes]
    count = None if any(c is None for c in counts) else sum(counts)
    nbytes = None if count is None else sum(
        c * dtype_size(d) for c, d in zip(counts, call.output_dtypes))
    info = LayerInfo(
        name=op.name,
        class_name=type(op).__name__,
        output_shape=call.output_shapes[0],
        output_shapes=call.output_shapes,
        params=params,
        dtype=call.output_dtypes[0],
        activation_count=count,
        activation_bytes=nbytes,
        depth=call.depth,
        call_index=call.call_index,
        is_container=call.is_container,
        shared=not first_call,
        path=call.path,
    )
    for source in sorted(geoms):
        name = input_names[source]
        rf = _describe(geoms[source], spatial_sizes[source], info if not info.input_name else None)
        info.receptive_fields[name] = rf
        if info.input_name is None:
            info.input_name = name
            info.geometry = geoms[source]
    return info


def _count_elements(shape, batch_size) -> Optional[int]:
    dims = shape[1:]
    if any(d is None for d in dims):
        return None
    return batch_size * math.prod(dims)


def _spatial_size(input_geom: TensorGeometry, shape) -> Optional[tuple]:
    """The model input's lengths along its spatial axes (None if it has none)."""
    size = tuple(shape[1 + pos] for pos, a in enumerate(input_geom.axes) if a is not None)
    return size or None


def _describe(geom: TensorGeometry, input_size, info: Optional[LayerInfo]):
    """Fill the spatial columns of ``info`` (when given) and return the RF tuple."""
    if geom.unknown:
        if info is not None:
            info.unknown_reason = geom.unknown
        return None
    if geom.whole:
        size = input_size
        if info is not None:
            info.sees_whole_input = True
            info.receptive_field = size
        return size
    if geom.folded:
        rf = tuple(a.receptive_field for a in sorted(geom.folded, key=lambda a: a.input_axis))
        if info is not None:
            info.receptive_field = rf
        return rf
    spatial = geom.spatial
    if not spatial:
        return None
    rf = tuple(a.receptive_field for a in spatial)
    if info is not None:
        info.receptive_field = rf
        info.effective_stride = tuple(_number(a.jump) for a in spatial)
        info.effective_padding = tuple(a.effective_padding for a in spatial)
        if any(a.receptive_field is None for a in spatial):
            info.unknown_reason = "branches with different unknown paddings meet"
        elif any(a.effective_padding is None for a in spatial):
            info.unknown_reason = "padding depends on an input length that is unknown"
    return rf


def _number(value):
    return int(value) if value.denominator == 1 else value


