"""The result of :func:`keras_rf.analyze`: one LayerInfo per layer call, plus totals."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Optional, Union

from keras_rf.geometry import TensorGeometry

Number = Union[int, Fraction]


@dataclass
class LayerInfo:
    """What one layer call sees and costs.

    Spatial tuples are ordered like the model input's spatial axes (rows, cols[,
    depth]). ``receptive_field`` is None when the layer has no spatial relation to
    the input; an entry is None when it cannot be known (see ``unknown_reason``).
    """

    name: str
    class_name: str
    output_shape: tuple
    output_shapes: list[tuple]
    params: int
    dtype: str
    receptive_field: Optional[tuple[Optional[int], ...]] = None
    effective_stride: Optional[tuple[Number, ...]] = None
    effective_padding: Optional[tuple[Optional[int], ...]] = None
    activation_count: Optional[int] = None
    activation_bytes: Optional[int] = None
    sees_whole_input: bool = False
    unknown_reason: Optional[str] = None
    depth: int = 0
    call_index: int = 0
    is_container: bool = False
    shared: bool = False
    path: tuple[str, ...] = ()
    input_name: Optional[str] = None
    receptive_fields: dict[str, Optional[tuple]] = field(default_factory=dict)
    geometry: Optional[TensorGeometry] = field(default=None, repr=False)

    def window(self, position: tuple[int, ...]) -> Optional[tuple[tuple[int, int], ...]]:
        """Input pixels (first, last) per axis seen by the output unit at ``position``
        (spatial indices of this layer's output), unclipped by the image border."""
        geom = self.geometry
        if geom is None or geom.whole or geom.unknown or not geom.spatial:
            return None
        by_input_axis = []
        for axis_map, index in zip(self._tensor_order_maps(), position):
            window = axis_map.window_of(index)
            if window is None:
                return None
            by_input_axis.append((axis_map.input_axis, window))
        return tuple(w for _, w in sorted(by_input_axis))

    def _tensor_order_maps(self):
        return [a for a in self.geometry.axes if a is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class_name": self.class_name,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "dtype": self.dtype,
            "receptive_field": _jsonable(self.receptive_field),
            "effective_stride": _jsonable(self.effective_stride),
            "effective_padding": _jsonable(self.effective_padding),
            "activation_count": self.activation_count,
            "activation_bytes": self.activation_bytes,
            "sees_whole_input": self.sees_whole_input,
            "unknown_reason": self.unknown_reason,
            "depth": self.depth,
            "call_index": self.call_index,
            "is_container": self.is_container,
            "shared": self.shared,
        }


def _jsonable(value):
    if value is None:
        return None
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else float(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class Report:
    """Per-layer receptive fields and activation memory of one model."""

    model_name: str
    batch_size: int
    layers: list[LayerInfo]
    input_shapes: list[tuple]
    input_names: list[str]
    input_spatial_sizes: dict[str, Optional[tuple]]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    warnings: list[str] = field(default_factory=list)
    training_memory: Any = None  # filled by rf_summary(optimizer=...)

    # -- lookups -----------------------------------------------------------
    def layer(self, name: str, call_index: int = 0) -> LayerInfo:
        """The LayerInfo of layer ``name`` (its ``call_index``-th call if shared)."""
        for info in self.layers:
            if info.name == name and info.call_index == call_index:
                return info
        names = ", ".join(dict.fromkeys(i.name for i in self.layers))
        raise KeyError(f"No layer named {name!r} (call {call_index}) in model "
                       f"'{self.model_name}'. Layers: {names}")

    @property
    def leaf_layers(self) -> list[LayerInfo]:
        """Rows that hold tensors of their own (nested models' rows excluded)."""
        return [i for i in self.layers if not i.is_container]

    # -- totals --------------------------------------------------------------
    @property
    def total_activation_bytes(self) -> Optional[int]:
        """Bytes of every layer output (inputs included) for ``batch_size`` samples."""
        values = [i.activation_bytes for i in self.leaf_layers]
        return None if any(v is None for v in values) else sum(values)

    @property
    def activation_bytes_per_sample(self) -> Optional[int]:
        total = self.total_activation_bytes
        return None if total is None else total // self.batch_size

    @property
    def input_spatial_size(self) -> Optional[tuple[Optional[int], ...]]:
        """Spatial lengths of the first model input (rows, cols[, depth])."""
        return self.input_spatial_sizes.get(self.input_names[0]) if self.input_names else None

    @property
    def last_spatial_layer(self) -> Optional[LayerInfo]:
        """The deepest layer that still has spatial axes (before Flatten / global pooling).

        A layer whose units all see the whole input but keep the spatial axes (after a
        squeeze-and-excite gate, attention over positions) counts: its field is the input.
        """
        rank = len(self.input_shapes[0]) if self.input_shapes else None
        for info in reversed(self.leaf_layers):
            if info.effective_stride is not None:
                return info
            if info.sees_whole_input and rank is not None and info.output_shapes \
                    and len(info.output_shapes[0]) == rank:
                return info
        return None

    def covers_input(self) -> Optional[bool]:
        """Does the last spatial layer's receptive field span the whole input?"""
        last = self.last_spatial_layer
        size = self.input_spatial_size
        if last is None or size is None or last.receptive_field is None:
            return None
        if any(r is None or s is None for r, s in zip(last.receptive_field, size)):
            return None
        return all(r >= s for r, s in zip(last.receptive_field, size))

    # -- output formats ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "batch_size": self.batch_size,
            "input_shapes": [list(s) for s in self.input_shapes],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_activation_bytes": self.total_activation_bytes,
            "activation_bytes_per_sample": self.activation_bytes_per_sample,
            "last_spatial_layer": self.last_spatial_layer.name if self.last_spatial_layer else None,
            "covers_input": self.covers_input(),
            "warnings": list(self.warnings),
            "training_memory": (self.training_memory.to_dict()
                                if hasattr(self.training_memory, "to_dict") else None),
            "layers": [i.to_dict() for i in self.layers],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_text(self, tablefmt: str = "simple") -> str:
        from keras_rf.render import render_report
        return render_report(self, tablefmt=tablefmt)

    def to_markdown(self) -> str:
        """GitHub Markdown: the table, with its title and footer as paragraphs."""
        from keras_rf.render import render_markdown
        return render_markdown(self)

    def to_html(self) -> str:
        from keras_rf.render import render_html
        return render_html(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return self.to_text()

    def print(self, print_fn: Optional[Callable[[str], Any]] = None, tablefmt: str = "simple") -> None:
        """Print line by line through ``print_fn`` (stdout when None), like model.summary."""
        for line in self.to_text(tablefmt).splitlines():
            (print_fn or print)(line)

    def plot(self, *args, **kwargs):
        from keras_rf.plotting import plot_report
        return plot_report(self, *args, **kwargs)

