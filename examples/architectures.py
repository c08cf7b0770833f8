"""Conv-block / transition-block networks (the teaching notes' architecture family)."""

from __future__ import annotations

import keras
from keras import layers


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
