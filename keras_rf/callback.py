"""``RFCallback``: the receptive-field summary at train begin, memory in the epoch logs."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Optional

import keras

from keras_rf.analysis import analyze
from keras_rf.measure import (gpu_available, measure_memory, read_peak_memory,
                              reset_peak_memory)
from keras_rf.memory import estimate_memory

PEAK_KEY = "peak_memory_bytes"
ESTIMATE_KEY = "estimated_memory_bytes"


class RFCallback(keras.callbacks.Callback):
    """Print the receptive-field summary when training starts; log memory each epoch.

    At train begin: prints :func:`keras_rf.rf_summary`'s table (through
    ``print_fn``) with the training-memory estimate under it, and warns when the
    last spatial layer's receptive field does not cover the input.

    At each epoch end: adds two numbers to ``logs``, so ``History``, ``CSVLogger``
    and ``TensorBoard`` record them (put this callback before those in the list):

    * ``estimated_memory_bytes``: :func:`keras_rf.estimate_memory` for this model,
      batch size and the model's optimizer.
    * ``peak_memory_bytes``: the measured peak of a training step. On a GPU, the
      device allocator's peak during the epoch (torch, TensorFlow: the counter is
      reset when each epoch begins; JAX cannot reset it, so its value is the
      process's peak so far). On JAX without a GPU, XLA's memory analysis of the
      compiled step (measured once: a compiled step's buffers do not change).
      Elsewhere (TensorFlow or torch on CPU) there is nothing to measure: the value
      is NaN — a number, so every logger accepts it — and the callback says why once.

    Nothing runs per batch; the work is one analysis at train begin (and, on JAX
    without a GPU, one extra compilation of the step), so the overhead on the
    training steps is nil.

    Args:
      batch_size: the batch size given to ``fit`` (Keras does not tell callbacks);
        default 32, ``fit``'s default.
      print_fn: receives each line of the summary (default ``print``).
      summary: print the summary at train begin (default True).
      measure: measure the real peak where possible (default True).
      warn_coverage: warn when the receptive field does not cover the input.
    """

    def __init__(self, batch_size: Optional[int] = None,
                 print_fn: Optional[Callable[[str], Any]] = None, summary: bool = True,
                 measure: bool = True,
                 warn_coverage: bool = True, tablefmt: str = "simple", input_shape=None):
        super().__init__()
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.print_fn = print_fn
        self.summary = summary
        self.measure = measure
        self.warn_coverage = warn_coverage
        self.tablefmt = tablefmt
        self.input_shape = input_shape
        self.report = None
        self.estimate = None
        self.measurement = None
        self.peak_method: Optional[str] = None
        self.unavailable_reason: Optional[str] = None
        self.setup_seconds = 0.0
        self._static_peak: Optional[int] = None
        self._said_why = False

    # -- helpers -----------------------------------------------------------------
    def _print(self, line: str) -> None:
        if self.summary:
            (self.print_fn or print)(line)

    def _optimizer(self):
        return getattr(self.model, "optimizer", None) or "adam"

    # -- hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        start = time.perf_counter()
        model = self.model
        batch = self.batch_size or 32
        self.report = analyze(model, batch_size=batch, input_shape=self.input_shape)
        try:
            self.estimate = estimate_memory(model, batch, optimizer=self._optimizer(),
                                            input_shape=self.input_shape)
        except Exception as exc:  # noqa: BLE001 - the summary still helps without it
            self.estimate = None
            warnings.warn(f"keras_rf: no training-memory estimate: {exc}", stacklevel=2)
        self.report.training_memory = self.estimate
        if self.summary:
            self.report.print(self.print_fn, tablefmt=self.tablefmt)
            if self.batch_size is None:
                self._print("(batch 32 assumed: pass RFCallback(batch_size=...) to match fit)")
        if self.warn_coverage and self.report.covers_input() is False:
            last = self.report.last_spatial_layer
            message = (f"keras_rf: the receptive field of '{last.name}' (the last spatial layer), "
                       f"{'x'.join(str(r) for r in last.receptive_field)}, does not cover the "
                       f"{'x'.join(str(s) for s in self.report.input_spatial_size)} input: no "
                       "unit sees the whole image.")
            warnings.warn(message, stacklevel=2)
        self._setup_measurement(batch)
        self.setup_seconds = time.perf_counter() - start

    def _setup_measurement(self, batch: int) -> None:
        backend = keras.backend.backend()
        if not self.measure:
            self.unavailable_reason = "measurement turned off (measure=False)"
            return
        if gpu_available(backend):
            if backend == "jax":
                self.peak_method = "jax_memory_stats_peak (process-wide)"
            else:
                self.peak_method = {"torch": "torch.cuda.max_memory_allocated",
                                    "tensorflow": "tf.config.experimental.get_memory_info"}[backend]
                reset_peak_memory(backend)
            return
        if backend == "jax":
            try:
                self.measurement = measure_memory(self.model, batch, optimizer=self._optimizer(),
                                                  input_shape=self.input_shape, run=False)
                self._static_peak = self.measurement.peak_bytes
                self.peak_method = "xla_memory_analysis"
            except Exception as exc:  # noqa: BLE001
                self.unavailable_reason = f"XLA memory analysis failed: {exc}"
            return
        self.unavailable_reason = (f"the {backend} backend has no memory peak to read on CPU "
                                   "(only GPU allocators keep one)")

    def on_epoch_begin(self, epoch, logs=None):
        if self.peak_method and self._static_peak is None:
            reset_peak_memory()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        peak = self._static_peak
        if peak is None and self.peak_method:
            peak = read_peak_memory()
        if peak is None and self.measure and not self._said_why:
            self._said_why = True
            reason = self.unavailable_reason or "the device reported no peak"
            warnings.warn(f"keras_rf: {PEAK_KEY} is NaN: {reason}.", stacklevel=2)
        logs[PEAK_KEY] = float(peak) if peak is not None else math.nan
        logs[ESTIMATE_KEY] = float(self.estimate.total_bytes) if self.estimate else math.nan
