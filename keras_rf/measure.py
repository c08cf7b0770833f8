"""Measuring the real peak memory of one training step on the current backend.

* JAX: the train step (``stateless_call`` + ``jax.value_and_grad`` +
  ``optimizer.stateless_apply``, jitted with the state donated, as Keras's JAX
  trainer does) is lowered and compiled for abstract inputs, and XLA's memory
  analysis of the compiled step gives its peak: arguments + outputs - donated
  (aliased) buffers + temporaries. Nothing runs, so it works on CPU for any batch.
  On a GPU the step is also run once on zeros and the device's allocator peak
  (``memory_stats()['peak_bytes_in_use']``) is reported beside it.
* TensorFlow: on a GPU, one step (``tf.GradientTape``, jit-compiled like Keras's
  default) runs after ``reset_memory_stats`` and ``get_memory_info()['peak']`` is read.
* torch: on a GPU, one step runs after ``reset_peak_memory_stats`` and
  ``max_memory_allocated`` is read.

Elsewhere (TensorFlow or torch on CPU) there is no allocator peak to read; the
result then has ``peak_bytes=None`` and ``reason`` says why.
A step that runs changes nothing: weights are restored afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import keras
import numpy as np

__all__ = ["MemoryMeasurement", "measure_memory", "reset_peak_memory", "read_peak_memory",
           "gpu_available", "device_memory_bytes"]


@dataclass
class MemoryMeasurement:
    """Peak bytes of one training step, how they were obtained, or why not."""

    peak_bytes: Optional[int]
    method: str
    backend: str
    device: str
    batch_size: int
    reason: Optional[str] = None
    details: dict = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.peak_bytes is not None

    def to_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "method": self.method, "backend": self.backend,
                "device": self.device, "batch_size": self.batch_size, "reason": self.reason,
                "details": dict(self.details)}

    def __str__(self) -> str:
        from keras_rf.render import human_bytes
        if self.peak_bytes is None:
            return f"Measured peak: not available ({self.reason})"
        return (f"Measured peak (batch {self.batch_size}, {self.backend} on {self.device}, "
                f"{self.method}): {human_bytes(self.peak_bytes)}")


# ---------------------------------------------------------------------------
# helpers shared by the backends
# ---------------------------------------------------------------------------

def _fresh_optimizer(optimizer):
    """A new, unbuilt optimizer of the same kind (the model's own is left alone)."""
    from keras_rf.memory import _resolve_optimizer
    name, config, instance = _resolve_optimizer(optimizer)
    if instance is None:
        return getattr(keras.optimizers, name)()
    return type(instance).from_config(instance.get_config())


def _loss_fn(loss):
    fn = keras.losses.get(loss if loss is not None else "mean_squared_error")
    if isinstance(fn, keras.losses.Loss):
        return fn
    return lambda y, p: keras.ops.mean(fn(y, p))


def _input_specs(model, batch_size, input_shape=None):
    shapes = []
    inputs = model.inputs if getattr(model, "inputs", None) else None
    if inputs is None:
        if input_shape is None:
            raise ValueError(f"Model '{model.name}' has no known input shape; pass input_shape=.")
        return [((batch_size,) + tuple(input_shape[1:]), "float32")]
    for t in inputs:
        shape = (batch_size,) + tuple(t.shape[1:])
        if any(d is None for d in shape):
            raise ValueError(f"Input of model '{model.name}' has unknown dimensions {t.shape}; "
                             "measuring needs concrete shapes.")
        shapes.append((shape, str(t.dtype)))
    return shapes


def _target_specs(model, batch_size):
    outs = model.outputs
    return [((batch_size,) + tuple(t.shape[1:]), "float32") for t in outs]


def _pack(values):
    return values[0] if len(values) == 1 else list(values)


def _jax_gpus() -> list:
    import jax
    return [d for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")]


def gpu_available(backend: Optional[str] = None) -> bool:
    """Whether the backend (default: the current one) sees a GPU."""
    backend = backend or keras.backend.backend()
    try:
        if backend == "jax":
            return bool(_jax_gpus())
        if backend == "torch":
            import torch
            return torch.cuda.is_available()
        if backend == "tensorflow":
            import tensorflow as tf
            return bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # noqa: BLE001
        return False
    return False


def reset_peak_memory(backend: Optional[str] = None) -> bool:
    """Reset the device's peak-memory counter; False where the backend has none."""
    backend = backend or keras.backend.backend()
    if not gpu_available(backend):
        return False
    try:
        if backend == "torch":
            import torch
            torch.cuda.reset_peak_memory_stats()
            return True
        if backend == "tensorflow":
            import tensorflow as tf
            tf.config.experimental.reset_memory_stats("GPU:0")
            return True
    except Exception:  # noqa: BLE001
        return False
    return False  # JAX's allocator peak cannot be reset


def read_peak_memory(backend: Optional[str] = None) -> Optional[int]:
    """The device allocator's peak bytes since the last reset (None on CPU)."""
    backend = backend or keras.backend.backend()
    if not gpu_available(backend):
        return None
    try:
        if backend == "torch":
            import torch
            return int(torch.cuda.max_memory_allocated())
        if backend == "tensorflow":
            import tensorflow as tf
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        if backend == "jax":
            stats = _jax_gpus()[0].memory_stats() or {}
            return int(stats.get("peak_bytes_in_use", 0)) or None
    except Exception:  # noqa: BLE001
        return None
    return None


def device_memory_bytes(backend: Optional[str] = None) -> Optional[int]:
    """Memory of the first visible GPU (what the backend may use on it), or None."""
    backend = backend or keras.backend.backend()
    if not gpu_available(backend):
        return None
    try:
        if backend == "jax":
            stats = _jax_gpus()[0].memory_stats() or {}
            return int(stats.get("bytes_limit") or stats.get("bytes_reservable_limit") or 0) or None
        if backend == "torch":
            import torch
            return int(torch.cuda.get_device_properties(0).total_memory)
        if backend == "tensorflow":
            return _nvidia_smi_total()
    except Exception:  # noqa: BLE001 - no device information
        return None
    return None


def _nvidia_smi_total() -> Optional[int]:
    """TensorFlow has no total-memory query: ask nvidia-smi."""
    import shutil
    import subprocess
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return int(float(out.splitlines()[0])) * 1024 * 1024
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------

def _jax_step(model, optimizer, loss_fn):
    import jax

    def step(state, data):
        trainable, non_trainable, opt_vars = state
        x, y = data

        def loss_of(tv, ntv):
            y_pred, ntv = model.stateless_call(tv, ntv, _pack(x), training=True)
            preds = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
            total = 0.0
            for t, p in zip(y, preds):
                total = total + loss_fn(t, p)
            return total, ntv

        (loss, ntv), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable, non_trainable)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, ntv, opt_vars)

    return jax.jit(step, donate_argnums=0)


def jax_compiled_memory(model, batch_size, optimizer="adam", loss=None, input_shape=None):
    """XLA's memory analysis of the compiled train step: dict of byte counts."""
    import jax
    opt = _fresh_optimizer(optimizer)
    opt.build(model.trainable_variables)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(tuple(shape), dtype)  # noqa: E731
    state = ([spec(v.shape, v.dtype) for v in model.trainable_variables],
             [spec(v.shape, v.dtype) for v in model.non_trainable_variables],
             [spec(v.shape, v.dtype) for v in opt.variables])
    xs = [spec(s, d) for s, d in _input_specs(model, batch_size, input_shape)]
    ys = [spec(s, d) for s, d in _target_specs(model, batch_size)]
    compiled = _jax_step(model, opt, _loss_fn(loss)).lower(state, (xs, ys)).compile()
    m = compiled.memory_analysis()
    d = {"argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
         "alias_bytes": int(m.alias_size_in_bytes), "temp_bytes": int(m.temp_size_in_bytes)}
    d["peak_bytes"] = d["argument_bytes"] + d["output_bytes"] - d["alias_bytes"] + d["temp_bytes"]
    return d, compiled, (opt, state, xs, ys)


def _measure_jax(model, batch_size, optimizer, loss, input_shape, run_on_device):
    import jax
    details, compiled, (opt, state_spec, xs, ys) = jax_compiled_memory(
        model, batch_size, optimizer, loss, input_shape)
    device = jax.devices()[0]
    result = MemoryMeasurement(details["peak_bytes"], "xla_memory_analysis", "jax",
                               f"{device.platform}:{getattr(device, 'device_kind', '')}".rstrip(":"),
                               batch_size, details=details)
    if run_on_device and device.platform in ("gpu", "cuda", "rocm"):
        import jax.numpy as jnp
        before = (device.memory_stats() or {}).get("peak_bytes_in_use")
        state = ([jnp.array(v.value) for v in model.trainable_variables],
                 [jnp.array(v.value) for v in model.non_trainable_variables],
                 [jnp.array(v.value) for v in opt.variables])
        data = ([jnp.zeros(x.shape, x.dtype) for x in xs], [jnp.zeros(y.shape, y.dtype) for y in ys])
        out = compiled(state, data)
        jax.block_until_ready(out)
        stats = device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        details["device_peak_bytes"] = peak
        details["device_peak_before_bytes"] = before
        del out, state, data
        if peak is not None and (before is None or peak > before):
            result.peak_bytes = int(peak)
            result.method = "jax_memory_stats_peak"
            details["note"] = ("process-wide allocator peak (JAX cannot reset it); run in a fresh "
                               "process for a clean number")
    return result


# ---------------------------------------------------------------------------
# torch and TensorFlow (GPU only)
# ---------------------------------------------------------------------------

def _measure_torch(model, batch_size, optimizer, loss, input_shape):
    import torch
    if not torch.cuda.is_available():
        return None, ("torch keeps an allocator peak only for a CUDA GPU "
                      "(torch.cuda.max_memory_allocated); none is visible")
    opt = _fresh_optimizer(optimizer)
    opt.build(model.trainable_variables)
    loss_fn = _loss_fn(loss)
    saved = [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.weights]
    xs = [torch.zeros(s, dtype=getattr(torch, d), device="cuda") for s, d in
          _input_specs(model, batch_size, input_shape)]
    ys = [torch.zeros(s, device="cuda") for s, _ in _target_specs(model, batch_size)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    try:
        model.zero_grad()
        y_pred = model(_pack(xs), training=True)
        preds = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
        total = sum(loss_fn(t, p) for t, p in zip(ys, preds))
        total.backward()
        trainable = model.trainable_weights
        grads = [v.value.grad for v in trainable]
        with torch.no_grad():
            opt.apply(grads, trainable)
        torch.cuda.synchronize()
        peak = int(torch.cuda.max_memory_allocated())
    finally:
        model.zero_grad()
        for v, value in zip(model.weights, saved):
            v.assign(value)
    return peak, None


def _measure_tensorflow(model, batch_size, optimizer, loss, input_shape, jit_compile=True):
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        return None, ("TensorFlow reports allocator peaks only for GPUs "
                      "(tf.config.experimental.get_memory_info); none is visible")
    opt = _fresh_optimizer(optimizer)
    opt.build(model.trainable_variables)
    loss_fn = _loss_fn(loss)
    saved = [v.numpy() for v in model.weights]
    xs = [tf.zeros(s, dtype=d) for s, d in _input_specs(model, batch_size, input_shape)]
    ys = [tf.zeros(s) for s, _ in _target_specs(model, batch_size)]

    @tf.function(jit_compile=jit_compile)
    def step(xs, ys):
        with tf.GradientTape() as tape:
            y_pred = model(_pack(xs), training=True)
            preds = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
            total = tf.add_n([loss_fn(t, p) for t, p in zip(ys, preds)])
        grads = tape.gradient(total, model.trainable_weights)
        opt.apply(grads, model.trainable_weights)
        return total

    try:
        step.get_concrete_function(xs, ys)  # trace and compile outside the measured window
        tf.config.experimental.reset_memory_stats("GPU:0")
        step(xs, ys).numpy()
        peak = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    finally:
        for v, value in zip(model.weights, saved):
            v.assign(value)
    return peak, None


def measure_memory(model, batch_size: int, optimizer="adam", loss=None,
                   input_shape: Optional[tuple] = None, run: bool = True) -> MemoryMeasurement:
    """The real peak memory of one training step on the current backend and device.

    JAX: XLA's memory analysis of the compiled step (any device, nothing runs),
    and on a GPU the allocator peak of one real step (``run=True``).
    TensorFlow / torch: the allocator peak of one step on a GPU. When nothing can be
    measured, ``peak_bytes`` is None and ``reason`` says why.

    ``optimizer``: name or instance (a fresh copy is used; the model's own
    optimizer and weights are not changed). ``loss``: a Keras loss (default mean
    squared error against zero targets shaped like the outputs).
    """
    from keras_rf.analysis import check_batch_size
    from keras_rf.memory import _check_model
    from keras_rf.reshaping import needs_rebuild, with_input_shape
    check_batch_size(batch_size)
    _check_model(model)
    if needs_rebuild(model, input_shape):
        model, input_shape = with_input_shape(model, [input_shape[1:]])
    backend = keras.backend.backend()
    if backend == "jax":
        return _measure_jax(model, batch_size, optimizer, loss, input_shape, run)
    steps = {"torch": (_measure_torch, "torch.cuda.max_memory_allocated", "cuda:0"),
             "tensorflow": (_measure_tensorflow, "tf.config.experimental.get_memory_info", "GPU:0")}
    if backend in steps:
        measure, method, device = steps[backend]
        peak, reason = (measure(model, batch_size, optimizer, loss, input_shape) if run else
                        (None, f"run=False: the {backend} backend can only measure a step that runs"))
        return MemoryMeasurement(peak, method if peak is not None else "none", backend,
                                 device if peak is not None else "cpu", batch_size, reason)
    return MemoryMeasurement(None, "none", backend, "?", batch_size,
                             f"no memory measurement for the {backend} backend")
