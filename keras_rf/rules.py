"""Per-layer geometry rules, kept as data: a registry from layer class to rule.

A rule receives the layer and a :class:`LayerCall` (the geometries of the call's
input tensors relative to one model input, and the call's shapes) and returns
the geometry of each output. Built-in layers are registered below with the same
public :func:`register_rule` that users call for their own layers::

    keras_rf.register_rule(MyBlur, keras_rf.rules.Window(kernel_size=5, padding="same"))
    keras_rf.register_rule(MyGate, "pointwise")

A layer may also declare its own rule with a ``receptive_field_rule`` attribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from keras_rf.geometry import (
    IDENTITY,
    WHOLE,
    AxisMap,
    LayerAxisMap,
    TensorGeometry,
    compose,
    new_unknown_shift,
    union,
    unknown,
)

Shape = tuple[Optional[int], ...]


@dataclass
class LayerCall:
    """What a rule may look at: one call of one layer, seen from one model input.

    ``inputs`` holds one geometry per input tensor of the call, None for a tensor
    that does not depend on this model input. Shapes include the batch axis.
    """

    layer: object
    inputs: list[Optional[TensorGeometry]]
    input_shapes: list[Shape]
    output_shapes: list[Shape]

    @property
    def input(self) -> TensorGeometry:
        """The geometry of the first input that depends on this model input."""
        return next(g for g in self.inputs if g is not None)

    @property
    def input_shape(self) -> Shape:
        return next(s for g, s in zip(self.inputs, self.input_shapes) if g is not None)


RuleResult = Union[TensorGeometry, Sequence[TensorGeometry]]
Rule = Callable[[object, LayerCall], RuleResult]


# ---------------------------------------------------------------------------
# Helpers that rules share
# ---------------------------------------------------------------------------

def _tuple(value, rank: int) -> tuple:
    if isinstance(value, int):
        return (value,) * rank
    return tuple(value)


def _spatial_positions(layer, rank: int) -> list[int]:
    """Tensor-axis positions (batch excluded) of the spatial axes of a layer's input."""
    data_format = getattr(layer, "data_format", "channels_last") or "channels_last"
    n_spatial = rank - 2
    return list(range(1, n_spatial + 1)) if data_format == "channels_first" else list(range(n_spatial))


def map_axes(geom: TensorGeometry, positions: Sequence[int], layer_maps: Sequence[LayerAxisMap],
             out_rank: int) -> TensorGeometry:
    """Apply one LayerAxisMap per listed tensor axis; other axes keep their maps."""
    if geom.whole or geom.unknown:
        return geom
    if geom.folded:
        if geom.folded_at in positions:
            return unknown("a window slides over a flattened spatial axis")
        return geom
    axes = list(geom.axes)
    for pos, layer_map in zip(positions, layer_maps):
        if axes[pos] is not None:
            axes[pos] = compose(axes[pos], layer_map)
    return TensorGeometry(tuple(axes[:out_rank - 1]) + (None,) * max(0, out_rank - 1 - len(axes)))


def same_padding_left(length: Optional[int], kernel: int, stride: int, dilation: int = 1):
    """Keras 'same' padding before the first element (the odd pixel goes at the end,
    on every backend). Returns (pad_left, unknown_shift_symbol)."""
    k_eff = (kernel - 1) * dilation + 1
    if stride == 1:
        return (k_eff - 1) // 2, None
    if length is None:
        return 0, new_unknown_shift()
    out = -(-length // stride)
    return max((out - 1) * stride + k_eff - length, 0) // 2, None


def conv_transpose_padding_left(kernel: int, stride: int, dilation: int, padding: str,
                                output_padding: Optional[int]) -> int:
    """Left padding of the equivalent forward conv, following Keras's own conversion
    (keras/src/backend/common/backend_utils.py), which every backend uses."""
    k_eff = (kernel - 1) * dilation + 1
    if padding == "valid":
        return 0
    if output_padding is None:
        pad_len = stride + k_eff - 2
    else:
        pad_len = k_eff + k_eff % 2 - 2 + output_padding
    lhs_left = min(pad_len // 2 + pad_len % 2, k_eff - 1)
    return k_eff - 1 - lhs_left


# ---------------------------------------------------------------------------
# Rule kinds
# ---------------------------------------------------------------------------

def pointwise(layer, call: LayerCall) -> RuleResult:
    """Each output position reads only the same input position (activations,
    normalisation over channels, Dense on the last axis, dropout, ...)."""
    geom = call.input
    out_rank = len(call.output_shapes[0])
    if geom.whole or geom.unknown:
        return [geom] * len(call.output_shapes)
    if out_rank != len(call.input_shape):
        return unknown(f"{type(layer).__name__} changes the rank; declare a rule for it")
    return [geom] * len(call.output_shapes)


def whole(layer, call: LayerCall) -> RuleResult:
    """Every output unit depends on every input position."""
    geom = call.input
    result = geom if geom.unknown else WHOLE
    return [result] * len(call.output_shapes)


def mixes_axis(*axes: int) -> Rule:
    """Pointwise, except that the listed tensor axes (negative from the end) are
    mixed: mixing a spatial axis makes the output see the whole input."""

    def rule(layer, call: LayerCall) -> RuleResult:
        geom = call.input
        if geom.whole or geom.unknown:
            return geom
        rank = len(call.input_shape) - 1
        for axis in _axes_attr(layer, axes):
            position = axis - 1 if axis > 0 else rank + axis
            if 0 <= position < len(geom.axes) and geom.axes[position] is not None:
                return WHOLE
            if geom.folded and position == geom.folded_at:
                return WHOLE
        return pointwise(layer, call)

    return rule


def _axes_attr(layer, default):
    axis = getattr(layer, "axis", None)
    if axis is None:
        return default
    return tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)


def merge(layer, call: LayerCall) -> RuleResult:
    """Elementwise merges and concatenation: the union of the branches' fields.
    Inputs are aligned NumPy-style; a length-1 axis broadcasts."""
    present = [(g, s) for g, s in zip(call.inputs, call.input_shapes) if g is not None]
    if any(g.unknown for g, _ in present):
        return next(g for g, _ in present if g.unknown)
    if any(g.whole for g, _ in present):
        return WHOLE
    if any(g.folded for g, _ in present):
        if all(g == present[0][0] for g, _ in present):
            return present[0][0]
        return unknown("merge of flattened spatial axes")
    out_shape = call.output_shapes[0]
    out_rank = len(out_shape) - 1
    concat_axis = getattr(layer, "axis", None) if type(layer).__name__ == "Concatenate" else None
    axes: list[Optional[AxisMap]] = []
    for position in range(out_rank):
        maps = []
        for geom, shape in present:
            in_position = position - (out_rank - (len(shape) - 1))
            if in_position < 0 or geom.axes[in_position] is None:
                continue
            axis_map = geom.axes[in_position]
            if shape[1 + in_position] == 1 and out_shape[1 + position] not in (1,):
                axis_map = compose(axis_map, LayerAxisMap.broadcast())
            maps.append(axis_map)
        if not maps:
            axes.append(None)
            continue
        if concat_axis is not None and position == (concat_axis % (out_rank + 1)) - 1:
            return unknown("concatenation along a spatial axis")
        combined = union(maps)
        if combined is None:
            return unknown("merged branches move at different strides")
        axes.append(combined)
    return TensorGeometry(tuple(axes))


@dataclass
class Window:
    """A convolution- or pooling-like window on every spatial axis.

    Each argument is either a value or the name of the layer attribute holding it,
    so the built-in conv and pooling rules and a user's own layer share one rule.
    """

    kernel_size: Union[int, tuple, str] = "kernel_size"
    strides: Union[int, tuple, str, None] = "strides"
    dilation_rate: Union[int, tuple, str, None] = "dilation_rate"
    padding: Union[str, tuple, None] = "padding"

    def _value(self, layer, spec, rank, default):
        if spec is None:
            return (default,) * rank
        value = getattr(layer, spec, None) if isinstance(spec, str) else spec
        if value is None:
            value = default
        return _tuple(value, rank)

    def __call__(self, layer, call: LayerCall) -> RuleResult:
        in_shape = call.input_shape
        positions = _spatial_positions(layer, len(in_shape))
        n = len(positions)
        kernel = self._value(layer, self.kernel_size, n, 1)
        strides = self._value(layer, self.strides, n, 1)
        dilation = self._value(layer, self.dilation_rate, n, 1)
        padding = self.padding
        if isinstance(padding, str) and padding not in ("valid", "same", "causal"):
            padding = getattr(layer, padding)
        maps = []
        for i, pos in enumerate(positions):
            shift = None
            if isinstance(padding, (tuple, list)):
                pad = _tuple(padding[i], 2)[0] if isinstance(padding[0], (tuple, list)) else padding[i]
            elif padding == "valid":
                pad = 0
            elif padding == "causal":
                pad = (kernel[i] - 1) * dilation[i]
            else:
                pad, shift = same_padding_left(in_shape[1 + pos], kernel[i], strides[i], dilation[i])
            maps.append(LayerAxisMap.window(kernel[i], strides[i], dilation[i], pad, shift))
        return map_axes(call.input, positions, maps, len(call.output_shapes[0]))


def conv_transpose(layer, call: LayerCall) -> RuleResult:
    positions = _spatial_positions(layer, len(call.input_shape))
    n = len(positions)
    kernel, strides = _tuple(layer.kernel_size, n), _tuple(layer.strides, n)
    dilation = _tuple(layer.dilation_rate, n)
    out_pad = layer.output_padding
    out_pad = (None,) * n if out_pad is None else _tuple(out_pad, n)
    maps = [LayerAxisMap.transposed(kernel[i], strides[i], dilation[i],
                                    conv_transpose_padding_left(kernel[i], strides[i], dilation[i],
                                                                layer.padding, out_pad[i]))
            for i in range(n)]
    return map_axes(call.input, positions, maps, len(call.output_shapes[0]))


def padding_layer(attr: str, sign: int) -> Rule:
    """ZeroPadding (sign -1: unit o reads o - left) and Cropping (sign +1)."""

    def rule(layer, call: LayerCall) -> RuleResult:
        positions = _spatial_positions(layer, len(call.input_shape))
        amounts = getattr(layer, attr)
        if isinstance(amounts[0], int) and len(positions) == 1:
            amounts = (amounts,)
        maps = [LayerAxisMap.window(1, pad_left=-sign * _tuple(amount, 2)[0]) for amount in amounts]
        return map_axes(call.input, positions, maps, len(call.output_shapes[0]))

    return rule


def upsampling(layer, call: LayerCall) -> RuleResult:
    positions = _spatial_positions(layer, len(call.input_shape))
    factors = _tuple(getattr(layer, "size", getattr(layer, "length", 1)), len(positions))
    interpolation = getattr(layer, "interpolation", "nearest")
    if interpolation == "nearest":
        maps = [LayerAxisMap.repeat(f) for f in factors]
    elif interpolation == "bilinear":
        maps = [LayerAxisMap.linear_upsample(f) for f in factors]
    else:
        return unknown(f"{interpolation} interpolation is not modelled")
    return map_axes(call.input, positions, maps, len(call.output_shapes[0]))


def resizing(layer, call: LayerCall) -> RuleResult:
    """Resizing by an integer factor behaves as UpSampling (up) or a strided window
    (down, nearest); other ratios have no periodic window and are reported unknown."""
    positions = _spatial_positions(layer, len(call.input_shape))
    if getattr(layer, "crop_to_aspect_ratio", False) or getattr(layer, "pad_to_aspect_ratio", False):
        return unknown("Resizing with aspect-ratio cropping/padding")
    maps = []
    for pos in positions:
        n_in, n_out = call.input_shape[1 + pos], call.output_shapes[0][1 + pos]
        if n_in is None or n_out is None:
            return unknown("Resizing an axis of unknown length")
        if n_out % n_in == 0:
            factor = n_out // n_in
            if layer.interpolation == "nearest":
                maps.append(LayerAxisMap.repeat(factor))
            elif layer.interpolation == "bilinear" and not getattr(layer, "antialias", False):
                maps.append(LayerAxisMap.linear_upsample(factor))
            else:
                return unknown(f"Resizing with {layer.interpolation} interpolation")
        else:
            return unknown(f"Resizing {n_in}->{n_out} is not an integer upscale")
    return map_axes(call.input, positions, maps, len(call.output_shapes[0]))


def flatten_like(layer, call: LayerCall) -> RuleResult:
    """Reshape/Flatten. Leading axes that keep their length keep their maps; spatial
    axes merged into one output axis are *folded*: each unit still sees one box,
    and a later layer that mixes that axis sees the whole input."""
    geom = call.input
    in_shape, out_shape = call.input_shape, call.output_shapes[0]
    if geom.whole or geom.unknown:
        return geom
    if geom.folded:
        if tuple(in_shape) == tuple(out_shape):
            return geom
        return unknown("reshape of an already flattened spatial axis")
    keep = 0
    while (keep < len(geom.axes) and keep < len(out_shape) - 1
           and in_shape[1 + keep] == out_shape[1 + keep] and in_shape[1 + keep] is not None):
        keep += 1
    tail = [i for i, a in enumerate(geom.axes) if a is not None and i >= keep]
    out_rank = len(out_shape) - 1
    if not tail:
        return TensorGeometry(geom.axes[:keep] + (None,) * (out_rank - keep))
    in_tail, out_tail = list(in_shape[1 + keep:]), list(out_shape[1 + keep:])
    if None in in_tail or None in out_tail:
        return unknown("reshape of spatial axes of unknown length")
    if tail != list(range(tail[0], tail[-1] + 1)):
        return unknown("reshape merges non-adjacent spatial axes")
    first, last = tail[0] - keep, tail[-1] - keep
    inner = math.prod(in_tail[last + 1:])
    outer = math.prod(in_tail[first:])
    for b in range(len(out_tail)):
        if inner % math.prod(out_tail[b + 1:]) == 0 and math.prod(out_tail[b:]) % outer == 0:
            folded = tuple(geom.axes[i] for i in tail)
            return TensorGeometry(geom.axes[:keep] + (None,) * (out_rank - keep),
                                  folded=folded, folded_at=keep + b)
    return unknown("reshape splits spatial axes across several axes")


def permute(layer, call: LayerCall) -> RuleResult:
    geom = call.input
    if geom.whole or geom.unknown:
        return geom
    if geom.folded:
        return TensorGeometry(geom.axes, folded=geom.folded,
                              folded_at=list(layer.dims).index(geom.folded_at + 1))
    return TensorGeometry(tuple(geom.axes[d - 1] for d in layer.dims))


def embedding(layer, call: LayerCall) -> RuleResult:
    """Token ids (batch, steps) become (batch, steps, features)."""
    geom = call.input
    if geom.whole or geom.unknown:
        return geom
    return TensorGeometry(geom.axes + (None,))


def recurrent(layer, call: LayerCall) -> RuleResult:
    if getattr(layer, "return_sequences", False):
        return unknown("recurrent layer: each step sees every earlier step")
    return whole(layer, call)


def repeat_vector(layer, call: LayerCall) -> RuleResult:
    geom = call.input
    return geom if geom.whole or geom.unknown else TensorGeometry(geom.axes[:1] + (None,) + geom.axes[1:])


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

_RULES: dict[type, Rule] = {}
_NAMED_RULES = {"pointwise": pointwise, "whole": whole, "merge": merge}


def register_rule(layer_class: type, rule: Union[Rule, str, None] = None):
    """Declare the geometry of ``layer_class`` (and its subclasses).

    ``rule`` is a callable ``rule(layer, call) -> TensorGeometry | list``, a
    :class:`Window`, or one of "pointwise", "whole", "merge". Without ``rule``
    this returns a decorator.
    """
    if rule is None:
        return lambda fn: register_rule(layer_class, fn) or fn
    if isinstance(rule, str):
        if rule not in _NAMED_RULES:
            raise ValueError(f"Unknown rule name {rule!r}; use one of {sorted(_NAMED_RULES)}")
        rule = _NAMED_RULES[rule]
    if not callable(rule):
        raise TypeError(f"A rule must be callable or a name, got {rule!r}")
    _RULES[layer_class] = rule
    return rule


def unregister_rule(layer_class: type) -> None:
    _RULES.pop(layer_class, None)


def find_rule(layer) -> Optional[Rule]:
    """The rule for a layer: its own ``receptive_field_rule``, else the nearest
    registered class in its MRO."""
    own = getattr(layer, "receptive_field_rule", None)
    if own is not None:
        return _NAMED_RULES.get(own, own) if isinstance(own, str) else own
    for cls in type(layer).__mro__:
        rule = _RULES.get(cls)
        if rule is not None:
            return rule
    return None


def _register_builtins() -> None:
    import keras
    from keras.src.ops import numpy as knp
    from keras.src.ops import nn as knn

    def each(names, module, rule):
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                register_rule(cls, rule)

    L = keras.layers
    conv = Window("kernel_size", "strides", "dilation_rate", "padding")
    pool = Window("pool_size", "strides", None, "padding")
    each(["Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
          "SeparableConv1D", "SeparableConv2D"], L, conv)
    each(["Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"], L, conv_transpose)
    each(["MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
          "AveragePooling1D", "AveragePooling2D", "AveragePooling3D"], L, pool)
    each(["GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
          "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
          "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
          "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D",
          "MultiHeadAttention", "GroupQueryAttention", "Attention", "AdditiveAttention",
          "Bidirectional", "Dot", "GroupNormalization", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"],
         L, whole)
    each(["ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D"], L, padding_layer("padding", -1))
    each(["Cropping1D", "Cropping2D", "Cropping3D"], L, padding_layer("cropping", +1))
    each(["UpSampling1D", "UpSampling2D", "UpSampling3D"], L, upsampling)
    each(["Resizing"], L, resizing)
    each(["Flatten", "Reshape"], L, flatten_like)
    each(["Permute"], L, permute)
    each(["Embedding", "ReversibleEmbedding"], L, embedding)
    each(["RepeatVector"], L, repeat_vector)
    each(["LSTM", "GRU", "SimpleRNN", "RNN"], L, recurrent)
    each(["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"], L, merge)
    each(["Dense"], L, mixes_axis(-1))
    each(["Softmax", "LayerNormalization", "UnitNormalization", "RMSNormalization"],
         L, mixes_axis(-1))
    # Layers that act on each position alone (augmentations: identity at inference).
    each(["InputLayer", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "BatchNormalization",
          "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout",
          "GaussianDropout", "GaussianNoise", "ActivityRegularization", "Rescaling",
          "Normalization", "Masking", "Identity", "Discretization",
          "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
          "RandomBrightness", "RandomCrop", "RandomShear", "RandomErasing", "RandomGaussianBlur",
          "RandomPerspective", "RandomElasticTransform", "RandomColorJitter", "RandomHue",
          "RandomSaturation", "RandomGrayscale", "RandomInvert", "RandomPosterization",
          "RandomSharpness", "RandomColorDegeneration", "Solarization", "AutoContrast",
          "Equalization", "RandAugment", "AugMix", "MixUp", "CutMix"], L, pointwise)

    # Layers private to keras.applications: ConvNeXt's per-channel scale and
    # drop-path, Inception-ResNet-v2's `x + scale * residual`.
    try:
        from keras.src.applications import convnext, inception_resnet_v2
    except ImportError:  # pragma: no cover - other Keras layouts
        pass
    else:
        each(["LayerScale", "StochasticDepth"], convnext, pointwise)
        each(["CustomScaleLayer"], inception_resnet_v2, merge)

    # keras.ops called on symbolic tensors become graph nodes too.
    each(["Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum",
          "Power", "Where", "Concatenate"], knp, merge)
    each(["Abs", "Absolute", "Exp", "Log", "Sqrt", "Square", "Negative", "Reciprocal",
          "Sign", "Clip", "Cast", "Tanh", "Sin", "Cos", "Floor", "Ceil", "Round",
          "Expm1", "Log1p"], knp, pointwise)
    each(["Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu", "Elu",
          "Selu", "LeakyRelu", "Softplus", "Softsign", "Swish", "Mish"], knn, pointwise)
    each(["Mean", "Max", "Min", "Sum"], knp, _reduction)


def _reduction(op, call: LayerCall) -> RuleResult:
    """keras.ops.mean/max/...: mixing a spatial axis means seeing all of it."""
    geom = call.input
    if geom.whole or geom.unknown:
        return geom
    axis = getattr(op, "axis", None)
    rank = len(call.input_shape) - 1
    axes = range(rank) if axis is None else [(a - 1 if a > 0 else rank + a)
                                              for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
    if any(geom.axes[a] is not None for a in axes if 0 <= a < rank):
        return WHOLE
    if geom.folded and geom.folded_at in axes:
        return WHOLE
    if geom.folded:
        return unknown("reduction next to a flattened spatial axis")
    out_rank = len(call.output_shapes[0]) - 1
    if out_rank == rank:
        return geom
    return TensorGeometry(tuple(a for i, a in enumerate(geom.axes) if i not in axes))


_register_builtins()

__all__ = ["LayerCall", "Rule", "Window", "register_rule", "unregister_rule", "find_rule",
           "pointwise", "whole", "merge", "mixes_axis", "IDENTITY"]
