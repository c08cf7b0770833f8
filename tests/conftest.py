"""Shared test helpers."""

import keras
import pytest


@pytest.fixture
def built_under_policy():
    """built_under_policy(policy, build): build a model under a global dtype policy, then
    restore float32 so that other tests are not affected."""

    def build(policy, builder):
        keras.mixed_precision.set_global_policy(policy)
        try:
            return builder()
        finally:
            keras.mixed_precision.set_global_policy("float32")

    return build
