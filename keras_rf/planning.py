"""Planning a plain conv stack: how many layers until the receptive field covers the input?

The teaching-notes question, answered step by step with Distill's recursion
(``r += (k - 1) * j``, ``j *= s``): 3x3 'valid' convolutions take a 199x199 image
to 1x1 in 99 layers, and the last unit then sees all 199x199 pixels. A 2x2 max-pool
every N convolutions halves the image and doubles the jump, so later 3x3 convs add
``2 * j`` pixels each and far fewer layers are needed.

No Keras needed: this is arithmetic on one (square) spatial axis.
:meth:`Plan.build_model` turns the plan into a Keras model, to check it with
:func:`keras_rf.rf_summary`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from tabulate import tabulate

MAX_LAYERS = 10_000


@dataclass
class PlanStep:
    """One layer of the plan: its output size and the receptive field of its units."""

    index: int  # 0 for the input, then 1, 2, ...
    kind: str  # "input", "conv" or "pool"
    label: str  # "conv 3x3", "max-pool 2x2", "input"
    size: int  # output size (per spatial axis)
    receptive_field: int
    jump: int
    conv_count: int  # convolutions so far

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "layer": self.label, "size": self.size,
                "receptive_field": self.receptive_field, "jump": self.jump,
                "conv_count": self.conv_count}


@dataclass
class Plan:
    """The result of :func:`plan`: the step-by-step table and the verdict."""

    input_size: int
    kernel: int
    padding: str
    pool_every: Optional[int]
    pool_size: int
    target_rf: int
    steps: list[PlanStep] = field(default_factory=list)
    reached: bool = False
    stop_reason: str = ""

    # -- numbers -------------------------------------------------------------
    @property
    def layers(self) -> list[PlanStep]:
        """The steps after the input."""
        return self.steps[1:]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_convs(self) -> int:
        return sum(s.kind == "conv" for s in self.steps)

    @property
    def n_pools(self) -> int:
        return sum(s.kind == "pool" for s in self.steps)

    @property
    def final(self) -> PlanStep:
        return self.steps[-1]

    @property
    def receptive_field(self) -> int:
        return self.final.receptive_field

    @property
    def output_size(self) -> int:
        return self.final.size

    # -- output ----------------------------------------------------------------
    def verdict(self) -> str:
        size = f"{self.input_size}x{self.input_size}"
        target = ("covers the whole input" if self.target_rf == self.input_size
                  else f"reaches the target {self.target_rf}")
        what = f"{self.n_layers} layers ({self.n_convs} convolutions"
        what += f" + {self.n_pools} max-pools)" if self.pool_every else ")"
        if self.reached:
            return (f"RF {self.receptive_field}x{self.receptive_field} {target} of a {size} image "
                    f"after {what}; output {self.output_size}x{self.output_size}.")
        return (f"Target RF {self.target_rf} NOT reached: {self.stop_reason}. "
                f"After {what} the RF is {self.receptive_field}x{self.receptive_field} "
                f"on the {size} image; output {self.output_size}x{self.output_size}.")

    def rows(self) -> list[list[str]]:
        return [[str(s.index), s.label, f"{s.size}x{s.size}",
                 f"{s.receptive_field}x{s.receptive_field}", str(s.jump)] for s in self.steps]

    HEADERS = ("#", "Layer", "Output size", "RF", "Jump")

    def to_text(self, tablefmt: str = "simple") -> str:
        pool = (f", {self.pool_size}x{self.pool_size} max-pool every {self.pool_every} convs"
                if self.pool_every else "")
        title = (f"Plan: {self.kernel}x{self.kernel} '{self.padding}' convolutions{pool} on a "
                 f"{self.input_size}x{self.input_size} input, target RF {self.target_rf}")
        table = tabulate(self.rows(), headers=self.HEADERS, tablefmt=tablefmt,
                         disable_numparse=True, colalign=("right", "left", "right", "right", "right"))
        # Markdown needs blank lines, or the lines next to a table read as rows
        return ("\n\n" if tablefmt == "pipe" else "\n").join([title, table, self.verdict()])

    def to_markdown(self) -> str:
        return self.to_text("pipe")

    def to_html(self) -> str:
        import html
        table = tabulate(self.rows(), headers=self.HEADERS, tablefmt="html", disable_numparse=True)
        return (f"<div class='keras-rf-plan'>{table}<p>{html.escape(self.verdict())}</p></div>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "kernel": self.kernel, "padding": self.padding,
                "pool_every": self.pool_every, "pool_size": self.pool_size,
                "target_rf": self.target_rf, "reached": self.reached,
                "stop_reason": self.stop_reason or None, "n_layers": self.n_layers,
                "n_convs": self.n_convs, "n_pools": self.n_pools,
                "receptive_field": self.receptive_field, "output_size": self.output_size,
                "steps": [s.to_dict() for s in self.steps]}

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        return self.to_text()

    # -- as a model ------------------------------------------------------------
    def build_model(self, channels: int = 1, filters: int = 8):
        """The planned stack as a Keras Sequential model (to check with rf_summary)."""
        import keras
        from keras import layers

        model = keras.Sequential(name="plan")
        model.add(keras.Input((self.input_size, self.input_size, channels)))
        for step in self.layers:
            if step.kind == "conv":
                model.add(layers.Conv2D(filters, self.kernel, padding=self.padding,
                                        name=f"conv_{step.conv_count}"))
            else:
                model.add(layers.MaxPooling2D(self.pool_size, name=f"pool_{step.index}"))
        return model


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def plan(input_size: int, kernel: int = 3, pool_every: Optional[int] = None,
         target_rf: Optional[int] = None, padding: str = "valid", pool_size: int = 2) -> Plan:
    """How many ``kernel`` x ``kernel`` stride-1 convolutions (with a ``pool_size`` max-pool,
    stride ``pool_size``, after every ``pool_every`` of them) until the receptive field
    reaches ``target_rf`` (default: the whole ``input_size`` x ``input_size`` input).

    Stops early, with ``reached=False``, when the image becomes smaller than the kernel
    ('valid' padding). Returns a :class:`Plan` whose ``steps`` are the table rows.
    """
    _positive_int("input_size", input_size)
    _positive_int("kernel", kernel, 2)
    _positive_int("pool_size", pool_size, 2)
    if pool_every is not None:
        _positive_int("pool_every", pool_every)
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    target = input_size if target_rf is None else _positive_int("target_rf", target_rf)
    result = Plan(input_size, kernel, padding, pool_every, pool_size, target)
    size, rf, jump, convs = input_size, 1, 1, 0
    result.steps.append(PlanStep(0, "input", "input", size, rf, jump, 0))
    since_pool = 0
    while rf < target:
        if len(result.steps) > MAX_LAYERS:
            result.stop_reason = f"more than {MAX_LAYERS} layers"
            return result
        if pool_every and since_pool == pool_every:
            if size < pool_size:
                result.stop_reason = f"the {size}x{size} image is smaller than the pool"
                return result
            size //= pool_size
            rf += (pool_size - 1) * jump
            jump *= pool_size
            since_pool = 0
            result.steps.append(PlanStep(len(result.steps), "pool",
                                         f"max-pool {pool_size}x{pool_size}", size, rf, jump, convs))
            continue
        if padding == "valid":
            if size < kernel:
                result.stop_reason = (f"the {size}x{size} image is smaller than the "
                                      f"{kernel}x{kernel} kernel")
                return result
            size -= kernel - 1
        rf += (kernel - 1) * jump
        convs += 1
        since_pool += 1
        result.steps.append(PlanStep(len(result.steps), "conv", f"conv {kernel}x{kernel}",
                                     size, rf, jump, convs))
    result.reached = True
    return result
