"""Walking a Keras 3 model into a flat, topologically ordered list of layer calls.

Functional and Sequential models expose their DAG of Nodes (one per call of an
operation). Nested models are expanded in place, as ``model.summary(
expand_nested=True)`` shows them; a subclassed model is traced once by running
its ``call`` on symbolic inputs, which records a node for every layer it uses.
Tensors are keyed by (scope, id) so a sub-model called twice keeps its calls apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import keras
from keras.src.models.functional import Functional

TensorKey = tuple


@dataclass
class GraphCall:
    """One call of one operation, with its tensors as keys into a shared table."""

    operation: Any
    inputs: list[TensorKey]
    outputs: list[TensorKey]
    input_shapes: list[tuple]
    output_shapes: list[tuple]
    output_dtypes: list[str]
    depth: int = 0
    call_index: int = 0
    is_container: bool = False
    is_input: bool = False
    path: tuple[str, ...] = ()


@dataclass
class ModelGraph:
    """The calls of a model plus its model-level input and output tensors."""

    calls: list[GraphCall] = field(default_factory=list)
    inputs: list[TensorKey] = field(default_factory=list)
    input_shapes: list[tuple] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    outputs: list[TensorKey] = field(default_factory=list)
    aliases: dict = field(default_factory=dict)

    def resolve(self, key: TensorKey) -> TensorKey:
        """A nested model's outer tensors are aliases of its inner tensors."""
        while key in self.aliases:
            key = self.aliases[key]
        return key


class ModelNotReadyError(ValueError):
    """The model has no graph to read yet (not built, or never called)."""


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def _functional_of(model) -> Optional[Functional]:
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return None


def trace_subclassed(model, input_shape=None) -> Functional:
    """Record a subclassed model's layer graph by running ``call`` symbolically."""
    if input_shape is None:
        shapes = getattr(model, "_build_shapes_dict", None) or {}
        input_shape = next(iter(shapes.values()), None) if len(shapes) == 1 else None
    if input_shape is None:
        raise ModelNotReadyError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed model that has never "
            "been built or called, so its layer graph is unknown. Call it on a batch once "
            "(model(x)) or build it (model.build(input_shape)), or pass input_shape=... .")
    batch_shape = tuple(input_shape)
    inputs = keras.Input(batch_shape=batch_shape)
    try:
        outputs = model.call(inputs)
        return Functional(inputs, outputs, name=model.name)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise ModelNotReadyError(
            f"Could not trace subclassed model '{model.name}': its call() does not run on "
            f"symbolic Keras tensors ({type(exc).__name__}: {exc}). Build it as a Functional "
            "model to analyse it.") from exc


def build_graph(model, input_shape=None) -> ModelGraph:
    """Flatten ``model`` into calls; raises ModelNotReadyError with a fix if it can't."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"keras_rf expects a keras.Model (Sequential, Functional or subclassed), "
            f"got {type(model).__name__}.")
    functional = _functional_of(model)
    if functional is None:
        if isinstance(model, keras.Sequential):
            if not model.layers:
                raise ModelNotReadyError(f"Sequential model '{model.name}' has no layers.")
            if input_shape is None:
                raise ModelNotReadyError(
                    f"Sequential model '{model.name}' is not built: its input shape is unknown. "
                    "Start it with keras.Input(shape=...), call model.build((None, H, W, C)), "
                    "or pass input_shape=... .")
            model.build(tuple(input_shape))
            functional = _functional_of(model)
            if functional is None:
                raise ModelNotReadyError(f"Sequential model '{model.name}' could not be built.")
        else:
            functional = trace_subclassed(model, input_shape)
    graph = ModelGraph()
    scope = ()
    graph.inputs = [(scope, id(t)) for t in functional.inputs]
    graph.input_shapes = [_shape(t) for t in functional.inputs]
    graph.input_names = [t._keras_history.operation.name for t in functional.inputs]
    _walk(functional, graph, scope, depth=0, path=(), top_level=True)
    graph.outputs = [graph.resolve((scope, id(t))) for t in functional.outputs]
    return graph


def _ordered_nodes(functional: Functional):
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        yield from functional._nodes_by_depth[depth]


def _walk(functional: Functional, graph: ModelGraph, scope: tuple, depth: int,
          path: tuple[str, ...], top_level: bool) -> None:
    for node in _ordered_nodes(functional):
        op = node.operation
        if node.is_input:
            if top_level:
                out = node.outputs[0]
                graph.calls.append(GraphCall(op, [], [(scope, id(out))], [], [_shape(out)],
                                             [str(out.dtype)], depth, 0, is_input=True,
                                             path=path + (op.name,)))
            continue
        call_index = op._inbound_nodes.index(node)
        in_keys = [(scope, id(t)) for t in node.input_tensors]
        out_keys = [(scope, id(t)) for t in node.outputs]
        inner = _functional_of(op) if isinstance(op, keras.Model) else None
        if isinstance(op, keras.Model) and inner is None:
            inner = trace_subclassed(op, _shape(node.input_tensors[0]))
        record = GraphCall(op, in_keys, out_keys, [_shape(t) for t in node.input_tensors],
                           [_shape(t) for t in node.outputs], [str(t.dtype) for t in node.outputs],
                           depth, call_index, path=path + (op.name,))
        graph.calls.append(record)
        if inner is None:
            continue
        record.is_container = True
        inner_scope = scope + (id(node),)
        for outer_t, inner_t in zip(node.input_tensors, inner.inputs):
            graph.aliases[(inner_scope, id(inner_t))] = (scope, id(outer_t))
        _walk(inner, graph, inner_scope, depth + 1, record.path, top_level=False)
        for outer_key, inner_t in zip(out_keys, inner.outputs):
            graph.aliases[outer_key] = (inner_scope, id(inner_t))
