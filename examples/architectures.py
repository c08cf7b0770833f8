"""Conv-block / transition-block networks (the teaching notes' architecture family).

A *conv block* is a run of 3x3 convolutions that grow the receptive field; a
*transition block* is a 2x2 max-pool followed by a 1x1 convolution that cuts the
channels. :func:`conv_block_net` builds any member of the family in one call:

>>> model = conv_block_net((28, 28, 1), blocks=[(8, 12, 12), (12, 16, 16)],
...                        transitions=[8], batch_norm=True, dropout=0.05,
...                        num_classes=10)

Presets: :func:`notes_400` (the notes' 400x400 design), :func:`mnist_8k` and
:func:`mnist_20k` (MNIST, < 8,000 / < 20,000 parameters), :func:`cifar10_200k`
(CIFAR-10, < 200,000 parameters, last receptive field > 44 px). ``MODELS`` maps
their names to the builders (the training scripts' ``--model`` choices).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import keras
from keras import layers

Width = int
BlockSpec = Union[int, Sequence[int]]


def seed_architecture() -> keras.Model:
    """400x400x3 input; block 1: five 3x3 convs (32..512); transition: 2x2 max-pool + 1x1
    to 32; block 2: four 3x3 convs (64..512); transition; block 3 starts with a 3x3 conv."""
    x = inputs = keras.Input((400, 400, 3))
    for filters in (32, 64, 128, 256, 512):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 1)(x)
    for filters in (64, 128, 256, 512):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 1)(x)
    x = layers.Conv2D(64, 3)(x)
    return keras.Model(inputs, x, name="seed_400")


# ---------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------

def _one_per(value, n: int, what: str, unit: str) -> list:
    """A scalar applies to all ``n``; a list/tuple gives one entry per ``unit``."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what}: expected {n} entries (one per {unit}), got {len(value)}")
        return list(value)
    return [value] * n


def conv_block_net(
    input_shape: Sequence[Optional[int]],
    blocks: Sequence[BlockSpec],
    transitions: Union[None, int, Sequence[Optional[int]]] = None,
    *,
    convs_per_block: Union[int, Sequence[int]] = 2,
    kernel_size: int = 3,
    padding: str = "valid",
    activation: Optional[str] = "relu",
    batch_norm: bool = False,
    bn_momentum: float = 0.9,
    dropout: float = 0.0,
    separable: Union[bool, Sequence] = False,
    dilation: Union[int, Sequence] = 1,
    transition_activation: bool = True,
    head: Optional[str] = "gap",
    num_classes: Optional[int] = None,
    name: str = "conv_block_net",
) -> keras.Model:
    """Build a conv-block / transition-block network.

    Args:
      input_shape: e.g. ``(28, 28, 1)``, channels last.
      blocks: one entry per conv block: a sequence of widths (one ``kernel_size``
        conv each) or a single width repeated ``convs_per_block`` times.
      transitions: width of the 1x1 conv of the transition after each block but the
        last (``len(blocks) - 1`` entries, or one int for all); ``None`` for an entry
        means max-pool only. Every transition is a 2x2 max-pool then the 1x1 conv.
      convs_per_block: convs in a block given as a single width (int or per block).
      padding: ``"valid"`` (each 3x3 conv trims 2 px, as in the notes) or ``"same"``.
      activation: after every conv (the 1x1 transitions too unless
        ``transition_activation=False``).
      batch_norm: conv (no bias) -> BatchNormalization -> activation.
      bn_momentum: of the BatchNorm moving statistics (0.9: they settle within the
        few hundred steps of a short run; Keras' default is 0.99).
      dropout: rate of a Dropout after every block conv but the network's last one.
      separable: use SeparableConv2D; bool, per block, or per conv within a block
        (e.g. ``[False, False, (False, True)]``).
      dilation: dilation rate; int, per block, or per conv within a block.
      head: ``"gap"``: a 1x1 conv to ``num_classes`` (if given), global average
        pooling, softmax (no dense layer); ``"gap_dense"``: global average pooling then
        ``Dense(num_classes)``; ``None``: no head, the output is the last conv.
      num_classes: classes of the softmax head.

    Layers are named ``block{b}_conv{i}`` (``_sepconv{i}`` if separable; with ``_bn``/``_act``/``_drop``),
    ``transition{t}_pool``/``transition{t}_conv`` and ``head_*``.
    """
    n_blocks = len(blocks)
    if n_blocks == 0:
        raise ValueError("blocks: need at least one conv block")
    if transitions is None:
        transitions = [None] * (n_blocks - 1)
    elif isinstance(transitions, int):
        transitions = [transitions] * (n_blocks - 1)
    transitions = list(transitions)
    if len(transitions) != n_blocks - 1:
        raise ValueError(f"transitions: expected {n_blocks - 1} entries (between blocks), "
                         f"got {len(transitions)}")
    if head not in (None, "gap", "gap_dense"):
        raise ValueError(f"head must be None, 'gap' or 'gap_dense', not {head!r}")
    if head == "gap_dense" and not num_classes:
        raise ValueError("head='gap_dense' needs num_classes")

    cpb = _one_per(convs_per_block, n_blocks, "convs_per_block", "block")
    widths_per_block: list[list[int]] = []
    for spec, n in zip(blocks, cpb):
        widths_per_block.append([int(spec)] * int(n) if isinstance(spec, int) else [int(w) for w in spec])
    sep_blocks = _one_per(separable, n_blocks, "separable", "block")
    dil_blocks = _one_per(dilation, n_blocks, "dilation", "block")

    def unit(x, filters, kernel, prefix, *, sep=False, dil=1, act=True):
        conv_cls = layers.SeparableConv2D if sep else layers.Conv2D
        name = prefix
        act = activation if act else None
        if not batch_norm:  # the activation inside the conv, as in the notes
            return conv_cls(filters, kernel, padding=padding, dilation_rate=dil,
                            activation=act, name=name)(x)
        x = conv_cls(filters, kernel, padding=padding, dilation_rate=dil, use_bias=False, name=name)(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
        if act:
            x = layers.Activation(act, name=f"{name}_act")(x)
        return x

    x = inputs = keras.Input(tuple(input_shape), name="image")
    last_block = n_blocks - 1
    for b, widths in enumerate(widths_per_block):
        seps = _one_per(sep_blocks[b], len(widths), f"separable[{b}]", "conv")
        dils = _one_per(dil_blocks[b], len(widths), f"dilation[{b}]", "conv")
        for i, (w, sep, dil) in enumerate(zip(widths, seps, dils)):
            prefix = f"block{b + 1}_{'sepconv' if sep else 'conv'}{i + 1}"
            x = unit(x, w, kernel_size, prefix, sep=bool(sep), dil=int(dil))
            is_last_conv = b == last_block and i == len(widths) - 1
            if dropout and not is_last_conv:
                x = layers.Dropout(dropout, name=f"{prefix}_drop")(x)
        if b < last_block:
            t = b + 1
            x = layers.MaxPooling2D(2, name=f"transition{t}_pool")(x)
            if transitions[b] is not None:
                x = unit(x, int(transitions[b]), 1, f"transition{t}_conv", act=transition_activation)

    if head == "gap":
        if num_classes:
            # 1x1 conv to the classes, then average: the "no big dense" head.
            x = layers.Conv2D(num_classes, 1, name="head_conv")(x)
        x = layers.GlobalAveragePooling2D(name="head_gap")(x)
        if num_classes:
            x = layers.Activation("softmax", dtype="float32", name="head_softmax")(x)
    elif head == "gap_dense":
        x = layers.GlobalAveragePooling2D(name="head_gap")(x)
        x = layers.Dense(num_classes, name="head_dense")(x)
        x = layers.Activation("softmax", dtype="float32", name="head_softmax")(x)
    return keras.Model(inputs, x, name=name)


# ---------------------------------------------------------------------------
# Presets: one call each
# ---------------------------------------------------------------------------

def notes_400(batch_norm: bool = False, head: Optional[str] = None,
              num_classes: Optional[int] = None) -> keras.Model:
    """The notes' 400x400x3 design (same shapes, receptive fields and parameters as
    :func:`seed_architecture`): blocks of 3x3 convs 32..512 / 64..512 / 64, each
    transition a 2x2 max-pool + 1x1 conv to 32 channels."""
    return conv_block_net((400, 400, 3), blocks=[(32, 64, 128, 256, 512), (64, 128, 256, 512), (64,)],
                          transitions=[32, 32], batch_norm=batch_norm, head=head,
                          num_classes=num_classes, transition_activation=False, name="notes_400")


def mnist_8k(input_shape=(28, 28, 1), num_classes: int = 10, dropout: float = 0.05) -> keras.Model:
    """< 8,000 parameters (7,730 incl. BatchNorm statistics) for 28x28 digits.

    Block 1 (3x3 convs 8, 12, 12) reaches RF 7 — strokes and their ends — before the
    transition (2x2 max-pool, 1x1 to 8); block 2 (12, 16, 16) grows the RF to 20 px at
    a 5x5 map; head: 1x1 conv to 10 classes, global average pooling, softmax.
    """
    return conv_block_net(input_shape, blocks=[(8, 12, 12), (12, 16, 16)], transitions=[8],
                          batch_norm=True, dropout=dropout, num_classes=num_classes,
                          name="mnist_8k")


def mnist_8k_rf28(input_shape=(28, 28, 1), num_classes: int = 10,
                  dropout: float = 0.05) -> keras.Model:
    """< 8,000 parameters (7,362) whose last spatial layer sees the whole 28x28 image.

    Same block 1 and transition as :func:`mnist_8k`, then five narrower 3x3 convs
    (10, 10, 10, 12, 12) that take the 11x11 map to 1x1: RF 8 + 5 * 4 = 28 px.
    """
    return conv_block_net(input_shape, blocks=[(8, 10, 12), (10, 10, 10, 12, 12)],
                          transitions=[8], batch_norm=True, dropout=dropout,
                          num_classes=num_classes, name="mnist_8k_rf28")


def mnist_20k(input_shape=(28, 28, 1), num_classes: int = 10, dropout: float = 0.05) -> keras.Model:
    """< 20,000 parameters (19,178): the same shape as :func:`mnist_8k`, wider."""
    return conv_block_net(input_shape, blocks=[(16, 16, 24), (16, 24, 32)], transitions=[12],
                          batch_norm=True, dropout=dropout, num_classes=num_classes,
                          name="mnist_20k")


def cifar10_200k(input_shape=(32, 32, 3), num_classes: int = 10, dropout: float = 0.05) -> keras.Model:
    """< 200,000 parameters (196,314), last receptive field 76 px (> 44) on 32x32 images.

    'same' padding; blocks 1-2 plain 3x3 convs; block 3 depthwise-separable with one
    dilated (rate 2) conv; block 4 depthwise-separable on the 4x4 map. Three
    transitions (max-pool + 1x1). Head: 1x1 to 10 classes, GAP, softmax.
    """
    return conv_block_net(
        input_shape,
        blocks=[(32, 64), (64, 96), (128, 160), (160, 192)],
        transitions=[32, 64, 80],
        padding="same", batch_norm=True, dropout=dropout,
        separable=[False, False, True, True], dilation=[1, 1, (1, 2), 1],
        num_classes=num_classes, name="cifar10_200k")


MODELS: dict[str, Callable[..., keras.Model]] = {
    "mnist_8k": mnist_8k,
    "mnist_8k_rf28": mnist_8k_rf28,
    "mnist_20k": mnist_20k,
    "cifar10_200k": cifar10_200k,
}
