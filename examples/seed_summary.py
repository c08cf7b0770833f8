"""The main job: the RF summary of the teaching notes' 400x400 conv-block / transition-block net."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from architectures import seed_architecture  # noqa: E402

from keras_rf import rf_summary  # noqa: E402

if __name__ == "__main__":
    rf_summary(seed_architecture(), batch_size=1)
