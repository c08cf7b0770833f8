"""keras-rf: what a Keras model sees (exact receptive fields) and what it costs (memory)."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

from keras_rf import rules
from keras_rf.analysis import analyze
from keras_rf.erf import EffectiveReceptiveField, effective_receptive_field
from keras_rf.graph import ModelNotReadyError
from keras_rf.measure import MemoryMeasurement, device_memory_bytes, measure_memory
from keras_rf.memory import (TrainingMemory, UnknownOptimizerError,
                             estimate_memory, max_batch_size)
from keras_rf.planning import Plan, plan
from keras_rf.plotting import draw_receptive_field
from keras_rf.report import LayerInfo, Report
from keras_rf.reshaping import with_input_shape
from keras_rf.rules import LayerCall, Window, register_rule, unregister_rule
from keras_rf.callback import RFCallback

__version__ = "0.1.0"


def rf_summary(model, batch_size: int = 1, print_fn: Optional[Callable[[str], Any]] = None,
               tablefmt: str = "simple", input_shape: Optional[tuple] = None,
               optimizer=None, mixed_precision: Optional[str] = None,
               device_memory: Optional[int] = None) -> Report:
    """Print ``model.summary()``'s columns plus receptive field, effective stride,
    effective padding and activation memory per layer; return the Report.

    ``print_fn`` receives each line (stdout when None), as in ``model.summary``.
    With ``optimizer`` (a name or an optimizer instance) the training-memory
    estimate of one step at ``batch_size`` (:func:`estimate_memory`) is shown
    under the table and kept in ``report.training_memory``; it is compared with
    ``device_memory`` bytes (default: the visible GPU's, if any) and a warning
    is issued when it does not fit.
    """
    report = analyze(model, batch_size=batch_size, input_shape=input_shape)
    if optimizer is not None or mixed_precision is not None:
        if device_memory is None:
            device_memory = device_memory_bytes()
        memory = estimate_memory(model, batch_size, optimizer=optimizer or "adam",
                                 mixed_precision=mixed_precision, input_shape=input_shape,
                                 device_memory=device_memory)
        report.training_memory = memory
        if memory.fits is False:
            from keras_rf.render import human_bytes
            message = (f"Training batch {batch_size} needs ~{human_bytes(memory.total_bytes)}, "
                       f"more than the device's {human_bytes(device_memory)}; "
                       f"keras_rf.max_batch_size(model, {device_memory}) gives the largest that fits.")
            report.warnings.append(message)
            warnings.warn(message, stacklevel=2)
    report.print(print_fn, tablefmt=tablefmt)
    return report


__all__ = ["analyze", "rf_summary", "Report", "LayerInfo", "LayerCall", "Window",
           "register_rule", "unregister_rule", "rules", "ModelNotReadyError",
           "draw_receptive_field", "effective_receptive_field", "EffectiveReceptiveField",
           "plan", "Plan", "estimate_memory", "max_batch_size", "TrainingMemory",
           "UnknownOptimizerError", "device_memory_bytes", "measure_memory",
           "MemoryMeasurement", "RFCallback", "with_input_shape"]
