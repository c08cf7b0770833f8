"""keras-rf: what a Keras model sees (exact receptive fields) and what it costs (memory)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from keras_rf import rules
from keras_rf.analysis import analyze
from keras_rf.erf import EffectiveReceptiveField, effective_receptive_field
from keras_rf.graph import ModelNotReadyError
from keras_rf.planning import Plan, plan
from keras_rf.plotting import draw_receptive_field
from keras_rf.report import LayerInfo, Report
from keras_rf.rules import LayerCall, Window, register_rule, unregister_rule

__version__ = "0.1.0"


def rf_summary(model, batch_size: int = 1, print_fn: Optional[Callable[[str], Any]] = None,
               tablefmt: str = "simple", input_shape: Optional[tuple] = None) -> Report:
    """Print ``model.summary()``'s columns plus receptive field, effective stride,
    effective padding and activation memory per layer; return the Report.

    ``print_fn`` receives each line (stdout when None), as in ``model.summary``.
    """
    report = analyze(model, batch_size=batch_size, input_shape=input_shape)
    report.print(print_fn, tablefmt=tablefmt)
    return report


__all__ = ["analyze", "rf_summary", "Report", "LayerInfo", "LayerCall", "Window",
           "register_rule", "unregister_rule", "rules", "ModelNotReadyError",
           "draw_receptive_field", "effective_receptive_field", "EffectiveReceptiveField",
           "plan", "Plan"]
