"""Receptive-field arithmetic on one spatial axis.

Araujo, Norris & Sim (Distill 2019) track three numbers per layer: the receptive
field r, the jump j and the effective padding P0, with r += (k_eff - 1)·j and
j *= s. That closed form holds while every stride is an integer. Upsampling and
transposed convolutions make the input window of output unit o depend on o mod
the upsampling factor, so this module stores, per axis, the exact window of each
unit in one *period* and the advance per period. Integer strides give period 1
and reduce to Distill's numbers; the general case stays exact.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

_unknown_shift_ids = itertools.count(1)


def new_unknown_shift() -> int:
    """A fresh symbol for a padding offset that depends on an unknown input size."""
    return next(_unknown_shift_ids)


@dataclass(frozen=True)
class LayerAxisMap:
    """How one layer connects its output units to its input units along one axis.

    Output unit ``o`` reads input units ``taps[o % period]`` shifted by
    ``(o // period) * advance``. An empty tap tuple means the unit reads no input
    (a transposed conv whose stride exceeds its kernel). ``unknown_shift`` names
    an unknown padding offset subtracted from every tap ('same' padding with a
    stride > 1 on an axis of unknown length).
    """

    period: int
    advance: int
    taps: tuple[tuple[int, ...], ...]
    unknown_shift: Optional[int] = None

    @staticmethod
    def window(kernel: int, stride: int = 1, dilation: int = 1, pad_left: int = 0,
               unknown_shift: Optional[int] = None) -> "LayerAxisMap":
        """A convolution or pooling window: unit o reads o·s - p + t·d, t < k."""
        taps = tuple(-pad_left + t * dilation for t in range(kernel))
        return LayerAxisMap(1, stride, (taps,), unknown_shift)

    @staticmethod
    def transposed(kernel: int, stride: int, dilation: int, pad_left: int) -> "LayerAxisMap":
        """A transposed convolution: input unit i writes to outputs i·s - p + t·d."""
        taps = []
        for o in range(stride):
            reads = [(o + pad_left - t * dilation) // stride for t in range(kernel)
                     if (o + pad_left - t * dilation) % stride == 0]
            taps.append(tuple(sorted(reads)))
        return LayerAxisMap(stride, 1, tuple(taps))

    @staticmethod
    def repeat(factor: int) -> "LayerAxisMap":
        """Nearest-neighbour upsampling: output o copies input o // factor."""
        return LayerAxisMap(factor, 1, ((0,),) * factor)

    @staticmethod
    def linear_upsample(factor: int) -> "LayerAxisMap":
        """Bilinear upsampling with half-pixel centres: output o blends the two
        inputs around (o + 0.5) / factor - 0.5; a tap of weight zero is not read."""
        taps = []
        for o in range(factor):
            centre = Fraction(2 * o + 1, 2 * factor) - Fraction(1, 2)
            first = math.floor(centre)
            taps.append((first,) if centre == first else (first, first + 1))
        return LayerAxisMap(factor, 1, tuple(taps))

    @staticmethod
    def broadcast() -> "LayerAxisMap":
        """A length-1 axis broadcast against a longer one: every output reads unit 0."""
        return LayerAxisMap(1, 0, ((0,),))


IDENTITY = LayerAxisMap.window(1)


@dataclass(frozen=True)
class AxisMap:
    """The input pixels seen by each unit of one tensor axis.

    Unit ``o`` sees input pixels ``lo(o) .. hi(o)`` (inclusive, unclipped by the
    image border, as in Distill) of model-input axis ``input_axis``, where
    ``lo(o) = lo[o % period] + (o // period) * advance``. ``lo`` is None when
    the field size cannot be known; ``shift`` lists unknown padding offsets
    (symbol, coefficient) added to every window, which leave the size known
    but the position unknown.
    """

    input_axis: int
    period: int = 1
    advance: int = 1
    lo: Optional[tuple[Optional[int], ...]] = (0,)
    hi: Optional[tuple[Optional[int], ...]] = (0,)
    shift: tuple[tuple[int, int], ...] = field(default=())

    @staticmethod
    def identity(input_axis: int) -> "AxisMap":
        return AxisMap(input_axis)

    # -- per-unit windows ------------------------------------------------
    def unit_lo(self, o: int) -> Optional[int]:
        base = self.lo[o % self.period]
        return None if base is None else base + (o // self.period) * self.advance

    def unit_hi(self, o: int) -> Optional[int]:
        base = self.hi[o % self.period]
        return None if base is None else base + (o // self.period) * self.advance

    # -- the three Distill numbers ---------------------------------------
    @property
    def size_known(self) -> bool:
        return self.lo is not None

    @property
    def receptive_field(self) -> Optional[int]:
        """The widest window over all units (every unit's, for integer strides)."""
        if self.lo is None:
            return None
        widths = [h - l + 1 for l, h in zip(self.lo, self.hi) if l is not None]
        return max(widths) if widths else 0

    @property
    def jump(self) -> Fraction:
        """Input pixels between neighbouring units (Distill's j); may be fractional."""
        return Fraction(self.advance, self.period)

    @property
    def position_known(self) -> bool:
        return self.lo is not None and not self.shift

    @property
    def effective_padding(self) -> Optional[int]:
        """Input pixels of padding before unit 0's window (Distill's P0)."""
        if not self.position_known or self.lo[0] is None:
            return None
        return -self.lo[0]

    def window_of(self, o: int) -> Optional[tuple[int, int]]:
        """(first, last) input pixel seen by unit o, or None if unknown/empty."""
        if not self.position_known:
            return None
        lo = self.unit_lo(o)
        return None if lo is None else (lo, self.unit_hi(o))


def compose(inner: AxisMap, layer: LayerAxisMap) -> AxisMap:
    """The map of a layer's output, given the map of its input (Distill's recursion)."""
    P, Q = inner.period, inner.advance
    p, q = layer.period, layer.advance
    n = P // math.gcd(q, P) if q else 1
    period, advance = n * p, (n * q // P) * Q if q else 0
    shift = inner.shift
    lo = hi = None
    if inner.lo is not None and (layer.unknown_shift is None or P == 1):
        if layer.unknown_shift is not None:
            shift = tuple(sorted(shift + ((layer.unknown_shift, -Q),)))
        lo_list, hi_list = [], []
        for o in range(period):
            offset = (o // p) * q
            reads = [i + offset for i in layer.taps[o % p]]
            seen_lo = [x for x in map(inner.unit_lo, reads) if x is not None]
            seen_hi = [x for x in map(inner.unit_hi, reads) if x is not None]
            lo_list.append(min(seen_lo) if seen_lo else None)
            hi_list.append(max(seen_hi) if seen_hi else None)
        lo, hi = tuple(lo_list), tuple(hi_list)
        if period > 1:
            period, advance, lo, hi = _shortest_period(period, advance, lo, hi)
    return AxisMap(inner.input_axis, period, advance, lo, hi, shift)


def _shortest_period(period, advance, lo, hi):
    """Fold a periodic map to its shortest period (stride-2 conv after 2x upsampling
    is period 1 again), so Distill's closed form reappears where it holds."""
    for short in range(1, period):
        if period % short:
            continue
        if advance * short % period:
            continue
        step = advance * short // period
        if all(lo[o] == _plus(lo[o % short], step * (o // short)) and
               hi[o] == _plus(hi[o % short], step * (o // short)) for o in range(period)):
            return short, step, lo[:short], hi[:short]
    return period, advance, lo, hi


def _plus(x: Optional[int], d: int) -> Optional[int]:
    return None if x is None else x + d


def union(maps: Sequence[AxisMap]) -> Optional[AxisMap]:
    """The field of a unit that sums/concatenates several branches: the hull of
    the branches' windows. Returns None if the branches advance at different
    rates (the field would grow with position) — not a periodic map."""
    first = maps[0]
    if any(m.jump != first.jump for m in maps):
        return None
    period = math.lcm(*(m.period for m in maps))
    advance = first.jump.numerator * period // first.jump.denominator
    if any(m.lo is None for m in maps) or any(m.shift != first.shift for m in maps):
        return AxisMap(first.input_axis, period, advance, None, None, first.shift)
    lo, hi = [], []
    for o in range(period):
        los = [x for x in (m.unit_lo(o) for m in maps) if x is not None]
        his = [x for x in (m.unit_hi(o) for m in maps) if x is not None]
        lo.append(min(los) if los else None)
        hi.append(max(his) if his else None)
    period, advance, lo_t, hi_t = _shortest_period(period, advance, tuple(lo), tuple(hi))
    return AxisMap(first.input_axis, period, advance, lo_t, hi_t, first.shift)


@dataclass(frozen=True)
class TensorGeometry:
    """Geometry of one tensor relative to one model input.

    ``axes`` has one entry per non-batch tensor axis: an AxisMap for an axis that
    runs along a spatial axis of the input, None for channels/features. ``whole``
    means every unit depends on every input position (Flatten+Dense, global
    pooling, attention). ``unknown`` carries a reason when no rule applies.
    ``folded`` holds the maps of spatial axes that a Flatten/Reshape merged into
    tensor axis ``folded_at``: each unit still sees one box of that size, but
    the axis has no stride; a layer that mixes it sees the whole input.
    """

    axes: tuple[Optional[AxisMap], ...] = ()
    whole: bool = False
    unknown: Optional[str] = None
    folded: tuple[AxisMap, ...] = ()
    folded_at: Optional[int] = None

    @property
    def spatial(self) -> tuple[AxisMap, ...]:
        """The tensor's spatial axes, ordered by the model input's axes."""
        return tuple(sorted((a for a in self.axes if a is not None), key=lambda a: a.input_axis))


WHOLE = TensorGeometry(whole=True)


def unknown(reason: str) -> TensorGeometry:
    return TensorGeometry(unknown=reason)
