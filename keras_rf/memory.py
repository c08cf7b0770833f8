"""Training-memory estimate of one training step, and the largest batch that fits.

A training step holds more than the layer outputs: the weights, the optimizer's
slots, the activations the backward pass needs (not all of them: a convolution
keeps its input, a ReLU the pre-activation it masks with, an Add nothing), the
gradients of the activations while they flow backward, the weight gradients
until the optimizer has used them, and short-lived workspace. :func:`estimate_memory`
walks the layer graph once (shapes and dtypes come from :func:`keras_rf.analyze`),
decides per layer what the backward pass keeps, then replays the step — forward,
then backward layer by layer, freeing what is no longer needed — and reports the
peak. Everything scales linearly with the batch except the weights, the slots and
the weight gradients, so :func:`max_batch_size` solves for the batch exactly.

What is kept follows the way XLA (JAX backend, and TensorFlow/torch when they
compile with XLA) fuses elementwise work: an elementwise layer (BatchNorm's
normalisation, activations, Add, padding) does not store its output for the
backward pass when it can recompute it from a tensor that is stored anyway. The
few per-layer constants (``_KEEP``) were measured once on small layer chains
against XLA's compiled memory analysis (see benchmarks/memory_calibration.py);
none depends on a particular model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import keras

from keras_rf.analysis import analyze_graph, check_batch_size, dtype_size
from keras_rf.graph import build_graph
from keras_rf.measure import device_memory_bytes, gpu_available
from keras_rf.reshaping import needs_rebuild, with_input_shape

__all__ = ["TrainingMemory", "estimate_memory", "max_batch_size", "optimizer_slots",
           "device_memory_bytes", "UnknownOptimizerError", "OPTIMIZER_SLOTS"]


class UnknownOptimizerError(ValueError):
    """The optimizer name is not a Keras optimizer."""


# ---------------------------------------------------------------------------
# Optimizer slots
# ---------------------------------------------------------------------------

# Slots per weight element (each slot has the weight's shape and dtype), as a
# function of the optimizer's config; and how many weight-gradient-sized buffers
# XLA keeps alive at once while it applies the update layer by layer (measured:
# the update of one layer runs as soon as its gradient exists), in units of that
# layer's weights.
OPTIMIZER_SLOTS: dict[str, tuple[Any, float]] = {
    "SGD": (lambda c: 1 if c.get("momentum", 0.0) else 0, 1.0),
    "Adam": (lambda c: 3 if c.get("amsgrad") else 2, 1.0),
    "AdamW": (lambda c: 3 if c.get("amsgrad") else 2, 1.0),
    "Adamax": (lambda c: 2, 1.0),
    "Nadam": (lambda c: 2, 1.0),
    "Lamb": (lambda c: 2, 2.0),
    "Lion": (lambda c: 1, 2.5),
    "Adagrad": (lambda c: 1, 1.0),
    "Adadelta": (lambda c: 2, 4.5),
    "Ftrl": (lambda c: 2, 3.5),
    "RMSprop": (lambda c: 1 + (1 if c.get("momentum", 0.0) else 0) + (1 if c.get("centered") else 0), 1.0),
    "ScheduleFreeAdamW": (lambda c: 2, 2.0),
    "Muon": (None, 3.0),       # momentum everywhere, Adam velocity where Adam is used
    "Adafactor": (None, 2.0),  # factored second moments: rows + columns, plus a velocity
}
_NAME_ALIASES = {"rmsprop": "RMSprop", "sgd": "SGD", "adamw": "AdamW", "nadam": "Nadam",
                 "adamax": "Adamax", "adagrad": "Adagrad", "adadelta": "Adadelta", "ftrl": "Ftrl",
                 "lion": "Lion", "lamb": "Lamb", "adam": "Adam", "muon": "Muon",
                 "adafactor": "Adafactor", "schedulefreeadamw": "ScheduleFreeAdamW",
                 "schedule_free_adamw": "ScheduleFreeAdamW"}


def _resolve_optimizer(optimizer) -> tuple[str, dict, Any]:
    """(class name, config, instance or None) of an optimizer name, dict or instance."""
    if optimizer is None:
        optimizer = "adam"
    if isinstance(optimizer, str):
        key = optimizer.replace("-", "").replace(" ", "").lower()
        name = _NAME_ALIASES.get(key) or _NAME_ALIASES.get(key.replace("_", ""))
        if name is None:
            known = ", ".join(sorted(set(_NAME_ALIASES.values())))
            raise UnknownOptimizerError(
                f"Unknown optimizer {optimizer!r}. Known names: {known}; or pass an optimizer "
                "instance (keras.optimizers.SGD(momentum=0.9)).")
        cls = getattr(keras.optimizers, name)
        return name, cls().get_config(), None
    if isinstance(optimizer, dict):
        optimizer = keras.optimizers.deserialize(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise UnknownOptimizerError(
            f"optimizer must be a name or a keras.optimizers.Optimizer, got {type(optimizer).__name__}")
    return type(optimizer).__name__, optimizer.get_config(), optimizer


def _inner(optimizer_instance):
    inner = getattr(optimizer_instance, "inner_optimizer", None)
    return inner if inner is not None else None


def _slot_elements_probe(instance, shapes) -> Optional[list[float]]:
    """Slots per element of an unknown optimizer class: build a fresh copy on small
    stand-in variables of each rank and count what it allocates per element."""
    try:
        cls = type(instance)
        out = []
        for rank in sorted({len(s) for s in shapes}):
            shape = (3, 4, 5, 6)[:rank] if rank else ()
            fresh = cls.from_config(instance.get_config())
            var = keras.Variable(keras.ops.zeros(shape), name="probe")
            before = sum(math.prod(v.shape) for v in fresh.variables)
            fresh.build([var])
            after = sum(math.prod(v.shape) for v in fresh.variables)
            out.append((rank, (after - before) / max(1, math.prod(shape))))
        return out
    except Exception:  # noqa: BLE001 - a probe that fails falls back to Adam's count
        return None


def optimizer_slots(optimizer, variables) -> tuple[int, str, float]:
    """(slot bytes, optimizer class name, XLA update buffers) for ``variables``.

    ``optimizer``: a name ("adam", "sgd", "rmsprop", ...) or an optimizer
    instance (its config counts: SGD momentum, RMSprop momentum/centered, Adam
    amsgrad, use_ema, gradient_accumulation_steps; a LossScaleOptimizer counts
    its inner optimizer).
    """
    name, config, instance = _resolve_optimizer(optimizer)
    extra = 0
    if name == "LossScaleOptimizer":
        inner = _inner(instance)
        name, config, instance = _resolve_optimizer(inner)
    extra += 1 if config.get("use_ema") else 0
    extra += 1 if config.get("gradient_accumulation_steps") else 0
    shapes = [tuple(v.shape) for v in variables]
    sizes = [dtype_size(getattr(v, "dtype", "float32")) for v in variables]
    entry = OPTIMIZER_SLOTS.get(name)
    total = 0.0
    if entry is not None and entry[0] is not None:
        per = entry[0](config) + extra
        total = sum(per * math.prod(s) * b for s, b in zip(shapes, sizes))
        return int(total), name, entry[1]
    if name == "Adafactor":
        for s, b in zip(shapes, sizes):
            n = math.prod(s)
            factored = (math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1]) if len(s) >= 2 else 0
            total += (n + factored + extra * n) * b
        return int(total), name, entry[1]
    if name == "Muon":
        probe = instance or keras.optimizers.Muon()
        for v, s, b in zip(variables, shapes, sizes):
            n = math.prod(s)
            try:
                adam = bool(probe._should_use_adamw(v))
            except Exception:  # noqa: BLE001
                adam = len(s) < 2 or len(s) > 3
            total += (1 + adam + extra) * n * b
        return int(total), name, entry[1]
    # An optimizer class we have no entry for: count by building it on stand-ins.
    probe = _slot_elements_probe(instance, shapes) if instance is not None else None
    per_rank = dict(probe) if probe else {}
    for s, b in zip(shapes, sizes):
        per = per_rank.get(len(s), 2.0)
        total += (per + extra) * math.prod(s) * b
    return int(total), name, 3.0


# ---------------------------------------------------------------------------
# What the backward pass keeps, per layer class
# ---------------------------------------------------------------------------

WEIGHT_OPS = {"Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
              "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
              "SeparableConv2D", "Dense", "EinsumDense"}
BN_OPS = {"BatchNormalization", "SyncBatchNormalization"}
NORM_OPS = {"LayerNormalization", "GroupNormalization", "UnitNormalization", "RMSNormalization"}
ALIAS_OPS = {"Flatten", "Reshape", "InputLayer", "Identity", "Masking", "ActivityRegularization",
             "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout"}
# elementwise (or pad/slice/broadcast): XLA fuses them, nothing of theirs is stored
# unless a consumer stores it
ELEMENTWISE_OPS = {"Add", "Subtract", "Average", "ZeroPadding1D", "ZeroPadding2D",
                   "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "Rescaling",
                   "Normalization", "CenterCrop", "RepeatVector"}
NEEDS_INPUTS_ELEMENTWISE = {"Multiply", "Maximum", "Minimum"}
ACTIVATION_LAYERS = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"}
LINEAR_MATERIALIZED = {"AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
                       "GlobalAveragePooling1D", "GlobalAveragePooling2D",
                       "GlobalAveragePooling3D", "Concatenate", "Permute", "Embedding"}
MAX_POOLS = {"MaxPooling1D", "MaxPooling2D", "MaxPooling3D"}
GLOBAL_MAX_POOLS = {"GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D"}
UPSAMPLING = {"UpSampling1D", "UpSampling2D", "UpSampling3D"}
# kinds whose backward writes the input gradient over the output gradient
_IN_PLACE_GRAD_KINDS = {"activation", "bn", "dropout", "elementwise"}
# kinds whose output XLA writes to memory (not fused into the consumer)
_MATERIALIZED_KINDS = {"weight", "norm", "linear", "resize", "max_pool", "global_max_pool",
                       "unknown"}

# Measured constants (units: the layer's output bytes unless said otherwise).
_KEEP = {
    "swish": 1.0,          # sigmoid(x) is stored besides x
    "gelu": 2.0,           # erf/tanh terms
    "softmax": 1.0,        # softmax stores its output and an exp
    "layer_norm": 2.5,     # centred input, variance terms (Keras computes in float32)
    "dropout": 2.0,        # random bits and the keep mask (measured: 2.0x the output)
    "bias_before_norm": 1.0,  # conv+bias feeding BatchNorm: conv output and biased copy both live
    "depthwise_dense_grad": 2.0,  # XLA (CPU) depthwise weight gradient, see _mark_kept
}
# Short-lived buffers in the backward step of a layer: the gradients flowing in and
# out are counted by the replay; this is extra workspace (layout transposes that
# XLA inserts around convolutions), in units of the larger of input and output.
_WORKSPACE = {"weight": 1.0, "max_pool": 2.0, "norm": 1.0, "default": 0.0}

_ACT_EXTRA = {"relu": 0.0, "relu6": 0.0, "leaky_relu": 0.0, "elu": 0.0, "selu": 0.0,
              "sigmoid": 0.0, "tanh": 0.0, "hard_sigmoid": 0.0, "hard_silu": 1.0,
              "hard_swish": 1.0, "softplus": 0.0, "softsign": 0.0, "exponential": 0.0,
              "mish": 2.0, "silu": _KEEP["swish"], "swish": _KEEP["swish"],
              "gelu": _KEEP["gelu"], "celu": 0.0, "glu": 1.0, "log_sigmoid": 0.0,
              "sparse_plus": 0.0, "squareplus": 0.0, "tanh_shrink": 0.0, "threshold": 0.0,
              "soft_shrink": 0.0, "hard_shrink": 0.0, "hard_tanh": 0.0, "log_softmax": 1.0,
              "softmax": _KEEP["softmax"], "sparsemax": 1.0}


def _activation_name(op) -> Optional[str]:
    """Name of the activation applied by ``op`` (None when linear / no activation)."""
    cls = type(op).__name__
    if cls in ("ReLU",):
        return "relu"
    if cls in ("LeakyReLU", "ELU", "PReLU"):
        return "leaky_relu"
    if cls == "Softmax":
        return "softmax"
    fn = getattr(op, "activation", None)
    if fn is None:
        return None
    name = getattr(fn, "__name__", None) or type(fn).__name__
    name = name.lower()
    return None if name == "linear" else name


def _class_names(op) -> list[str]:
    return [c.__name__ for c in type(op).__mro__]


def _kind(op) -> str:
    for name in _class_names(op):
        if name in WEIGHT_OPS:
            return "weight"
        if name in BN_OPS:
            return "bn"
        if name in NORM_OPS:
            return "norm"
        if name in ALIAS_OPS:
            return "alias"
        if name == "Dropout":
            return "dropout"
        if name in ELEMENTWISE_OPS:
            return "elementwise"
        if name in NEEDS_INPUTS_ELEMENTWISE:
            return "multiply"
        if name in ACTIVATION_LAYERS:
            return "activation"
        if name in LINEAR_MATERIALIZED:
            return "linear"
        if name in MAX_POOLS:
            return "max_pool"
        if name in GLOBAL_MAX_POOLS:
            return "global_max_pool"
        if name in UPSAMPLING or name == "Resizing":
            return "elementwise" if getattr(op, "interpolation", "nearest") == "nearest" else "resize"
        if name in ("Layer", "Operation", "Model"):
            break
    return "unknown"


# ---------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------

@dataclass
class TrainingMemory:
    """Predicted peak memory of one training step, and its parts at the peak.

    All counts are bytes. ``total_bytes`` = weights + optimizer + activations +
    gradients held at the peak + transient. ``gradients_bytes`` is the size of all
    weight gradients; under XLA they are not all alive at once (each layer's
    update runs as soon as its gradient exists), so the peak counts
    ``gradients_live_bytes`` of them.
    """

    batch_size: int
    optimizer: str
    dtype_policy: str
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    transient_bytes: int
    total_bytes: int
    gradients_live_bytes: int = 0
    data_bytes: int = 0
    saved_activations_bytes: int = 0
    output_sum_bytes: Optional[int] = None
    peak_at: str = ""
    fixed_bytes: int = 0
    per_sample_bytes: float = 0.0
    device_bytes: Optional[int] = None
    device: str = "cpu"
    compiled: bool = True

    @property
    def fits(self) -> Optional[bool]:
        return None if self.device_bytes is None else self.total_bytes <= self.device_bytes

    def to_dict(self) -> dict[str, Any]:
        keys = ["batch_size", "optimizer", "dtype_policy", "weights_bytes", "gradients_bytes",
                "gradients_live_bytes", "optimizer_bytes", "activations_bytes", "transient_bytes",
                "total_bytes", "data_bytes", "saved_activations_bytes", "output_sum_bytes",
                "peak_at", "device", "compiled", "device_bytes"]
        return {k: getattr(self, k) for k in keys}

    def __str__(self) -> str:
        from keras_rf.render import human_bytes as hb
        lines = [
            f"Training memory (batch {self.batch_size}, {self.optimizer}, {self.dtype_policy}, "
            f"{'XLA' if self.compiled else 'eager'} on {self.device}): "
            f"~{hb(self.total_bytes)} peak per step",
            f"  weights {hb(self.weights_bytes)} + optimizer slots {hb(self.optimizer_bytes)} "
            f"+ saved activations {hb(self.activations_bytes)} + weight gradients "
            f"{hb(self.gradients_live_bytes)} (of {hb(self.gradients_bytes)}) "
            f"+ transient {hb(self.transient_bytes)}",
        ]
        if self.output_sum_bytes:
            lines[-1] += f"  [{self.total_bytes / self.output_sum_bytes:.1f}x the layer outputs]"
        if self.device_bytes is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            lines.append(f"  {verdict} in {hb(self.device_bytes)} of device memory")
        return "\n".join(lines)


@dataclass
class _Tensor:
    key: Any
    bytes: float  # per sample
    producer: int  # node index, -1 for a model input
    materialized: bool = True
    consumers: list = field(default_factory=list)
    alias_of: Any = None


@dataclass
class _Node:
    index: int
    name: str
    kind: str
    inputs: list
    outputs: list
    params_bytes: int
    out_bytes: float
    in_bytes: float
    workspace: float = 0.0  # per sample


def _compute_itemsize(policy: Optional[str]) -> Optional[int]:
    if policy is None:
        return None
    policy = str(policy)
    if policy in ("mixed_float16", "float16", "mixed_bfloat16", "bfloat16"):
        return 2
    if policy in ("float32",):
        return 4
    if policy in ("float64",):
        return 8
    raise ValueError(f"mixed_precision must be None, 'mixed_float16', 'mixed_bfloat16', "
                     f"'float16', 'bfloat16' or 'float32', got {policy!r}")


def _resolve_device(device: Optional[str]) -> str:
    """'cpu' or 'gpu': the device the step will run on (default: what the current
    backend sees: a GPU if one is visible)."""
    if device is None:
        return "gpu" if gpu_available() else "cpu"
    name = str(device).lower().split(":")[0]
    if name in ("gpu", "cuda", "rocm"):
        return "gpu"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"device must be 'cpu', 'gpu' or None, got {device!r}")


def _model_policy(model) -> str:
    policy = getattr(model, "dtype_policy", None)
    return getattr(policy, "name", None) or str(keras.config.dtype_policy().name)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    if not model.built:
        from keras_rf.graph import ModelNotReadyError
        raise ModelNotReadyError(
            f"Model '{model.name}' is not built: its weights do not exist yet. Build it "
            "(model.build(input_shape) or call it on a batch) before estimating memory.")


class _Plan:
    """Everything of the estimate that does not depend on the batch size.

    The replay yields, for every forward and backward step, the bytes alive then
    as ``fixed + per_sample * batch``; the peak is the largest of those lines.
    """

    def __init__(self, model, optimizer="adam", mixed_precision=None, input_shape=None,
                 device=None, compiled=None):
        _check_model(model)
        if needs_rebuild(model, input_shape):
            model, input_shape = with_input_shape(model, [input_shape[1:]])
        self.device = _resolve_device(device)
        backend = keras.backend.backend()
        # XLA compiles the step on JAX (and TensorFlow's default jit_compile);
        # torch runs it eagerly: no fusion, gradients all held until the update
        self.compiled = (backend != "torch") if compiled is None else bool(compiled)
        self.model = model
        graph = build_graph(model, input_shape)
        report = analyze_graph(model, graph, batch_size=1)  # one row per graph call
        self.itemsize = _compute_itemsize(mixed_precision)
        self.policy = mixed_precision or _model_policy(model)
        self.output_sum_per_sample = report.total_activation_bytes

        # weights, gradients, slots
        var_itemsize = None
        if mixed_precision:
            var_itemsize = 4 if mixed_precision.startswith("mixed") else self.itemsize
        self.var_itemsize = var_itemsize

        def vbytes(v):
            return math.prod(v.shape) * (var_itemsize or dtype_size(v.dtype))
        self.vbytes = vbytes
        self.weights = sum(vbytes(v) for v in model.weights)
        self.gradients = sum(vbytes(v) for v in model.trainable_weights)
        slot_vars = model.trainable_weights
        if var_itemsize:
            slot_vars = [_FakeVar(v.shape, {2: "float16", 4: "float32", 8: "float64"}[var_itemsize])
                         for v in model.trainable_weights]
        self.slots, self.optimizer_name, self.update_buffers = optimizer_slots(optimizer, slot_vars)
        self.compute_small = self.itemsize == 2 or (self.itemsize is None and any(
            str(getattr(layer, "compute_dtype", "float32")) in ("float16", "bfloat16")
            for layer in model.layers))
        # XLA on CPU computes 16-bit convolutions and matmuls in float32: what they
        # keep is float32, plus the 16-bit copies the next layers read
        self.cpu16 = self.device == "cpu" and self.compute_small and self.compiled
        if self.cpu16:
            self.itemsize = 4

        self.tensors: dict = {}
        self.nodes: list[_Node] = []
        # kept buffers: key -> [per-sample bytes, fixed bytes, produced_at, free_at]
        # (alive from the forward step ``produced_at`` until the backward step
        # ``free_at`` has run; produced_at -1: from the start of the step)
        self.kept: dict = {}
        self.hoisted: list = []  # (per-sample bytes, forward step it dies after)
        self.data_per_sample = 0.0
        self._build(report, graph)
        self._lines = self._replay()

    # -- graph --------------------------------------------------------------------
    def _bytes(self, count, dtype):
        if self.itemsize is not None and "float" in str(dtype):
            return count * self.itemsize
        return count * dtype_size(dtype)

    def _item(self, dtype):
        return self.itemsize if (self.itemsize and "float" in str(dtype)) else dtype_size(dtype)

    def _build(self, report, graph):
        resolve = graph.resolve
        index = 0
        for info, call in zip(report.layers, graph.calls):
            if call.is_container:
                continue
            if info.activation_bytes is None:
                raise ValueError(
                    f"Layer '{info.name}' has an output shape with unknown dimensions "
                    f"{info.output_shape}; memory needs concrete shapes. Build the model with a "
                    "fixed input shape or pass input_shape=(None, H, W, C).")
            counts = [math.prod(s[1:]) for s in call.output_shapes]
            per_out = [self._bytes(c, d) for c, d in zip(counts, call.output_dtypes)]
            if call.is_input:
                for key, b, d in zip(call.outputs, per_out, call.output_dtypes):
                    key = resolve(key)
                    self.tensors[key] = _Tensor(key, b, -1, True)
                    self.tensors[key].itemsize = self._item(d)
                    self.data_per_sample += b
                continue
            op = call.operation
            kind = _kind(op)
            ins = [resolve(k) for k in call.inputs if resolve(k) in self.tensors]
            outs = [resolve(k) for k in call.outputs]
            params = 0 if info.shared else sum(
                self.vbytes(v) for v in getattr(op, "trainable_weights", []))
            in_bytes = sum(self.tensors[k].bytes for k in ins)
            node = _Node(index, op.name, kind, ins, outs, params, sum(per_out), in_bytes)
            node.op = op
            node.out_itemsize = self._item(call.output_dtypes[0])
            node.in_itemsize = getattr(self.tensors[ins[0]], "itemsize", 4) if ins else 4
            node.in_shapes = call.input_shapes
            node.out_rank = len(call.output_shapes[0])
            node.fixed_workspace = 0.0
            self.nodes.append(node)
            for k in ins:
                self.tensors[self._root(k)].consumers.append(index)
            mat = kind in _MATERIALIZED_KINDS or (
                kind == "activation" and _activation_name(op) in ("softmax", "log_softmax"))
            for key, b in zip(outs, per_out):
                t = _Tensor(key, b, index, materialized=mat)
                t.itemsize = node.out_itemsize
                if kind == "alias" and ins:
                    t.alias_of = self._root(ins[0])
                    t.bytes = 0.0
                self.tensors[key] = t
            index += 1
        self.n = index
        outputs = [resolve(k) for k in graph.outputs]
        self.output_roots = {self._root(k) for k in outputs}
        for key in outputs:
            self.data_per_sample += self.tensors[self._root(key)].bytes  # the targets
        self._mark_kept(outputs)

    def _root(self, key):
        t = self.tensors[key]
        while t.alias_of is not None:
            t = self.tensors[t.alias_of]
        return t.key

    def _anchors(self, key) -> set:
        """The stored tensors an elementwise chain can be recomputed from."""
        key = self._root(key)
        t = self.tensors[key]
        if t.materialized or t.producer < 0 or not self.compiled:
            return {key}
        out = set()
        for k in self.nodes[t.producer].inputs:
            out |= self._anchors(k)
        return out or {key}

    def _keep(self, key, needer: int, per_sample: float = 0.0, fixed: float = 0.0,
              produced_at: Optional[int] = None):
        if key in self.tensors:
            key = self._root(key)
            t = self.tensors[key]
            if t.producer < 0 and not (self.device == "cpu" and self.compiled):
                return  # the batch is an argument of the step, counted as data
            per_sample, produced_at = t.bytes, t.producer
        elif produced_at is None:
            produced_at = key[1]
        slot = self.kept.get(key)
        if slot is None:
            self.kept[key] = [per_sample, fixed, produced_at, needer]
        else:
            slot[3] = min(slot[3], needer)

    def _mark_kept(self, outputs):
        cpu = self.device == "cpu" and self.compiled  # XLA-on-CPU specifics
        for node in self.nodes:
            i, kind, op = node.index, node.kind, node.op
            out = node.out_bytes
            act = _activation_name(op)
            cls = type(op).__name__
            if kind == "weight":
                for k in node.inputs:
                    # its input, for the weight gradient (for the model input XLA keeps
                    # a re-laid-out copy next to the argument)
                    self._keep(k, i)
                if act:
                    # the pre-activation, for the activation's gradient
                    self._keep(("pre", i), i, out * (1.0 + _ACT_EXTRA.get(act, 1.0)))
                # the output gradient, re-laid-out for the weight-gradient product
                node.workspace = _WORKSPACE["weight"] * out
                needs_input_grad = any(self.tensors[k].producer >= 0 for k in node.inputs)
                # a layer whose input is the model input has no input gradient to
                # compute; XLA fuses its weight gradient straight into the update
                node.grad_in_flight = needs_input_grad
                kernel = getattr(op, "kernel", None) if "Separable" not in cls else None
                if kernel is None and "Depthwise" in cls:
                    kernel = getattr(op, "depthwise_kernel", None) or getattr(op, "kernel", None)
                if self.cpu16:
                    self._keep(("f16", i), i, out / 2)
                if cpu and "Conv" in cls and needs_input_grad and kernel is not None \
                        and node.params_bytes:
                    # XLA (CPU) lays each convolution kernel out again for the input
                    # gradient; the copies are made at the start of the step
                    self._keep(("kernel", i), i, 0.0, self.vbytes(kernel), produced_at=-1)
                # DepthwiseConv*D calls its kernel `kernel`, SeparableConv*D `depthwise_kernel`
                depthwise_kernel = None
                if "Depthwise" in cls or "Separable" in cls:
                    depthwise_kernel = getattr(op, "depthwise_kernel", None)
                    if depthwise_kernel is None:
                        depthwise_kernel = getattr(op, "kernel", None)
                if cpu and depthwise_kernel is not None:
                    # its weight gradient is computed as a dense (C_in x C_out) one and
                    # masked: kh*kw*C_in*C_out, twice, whatever the batch (the depthwise
                    # half of a separable conv too)
                    kernel = depthwise_kernel
                    shape = tuple(kernel.shape)
                    c_in = shape[-2]
                    node.fixed_workspace = _KEEP["depthwise_dense_grad"] * math.prod(shape) * c_in \
                        * (self.var_itemsize or dtype_size(kernel.dtype))
                if cls.startswith("Separable"):
                    # the depthwise result, input of the pointwise step
                    shape = node.in_shapes[0] if node.in_shapes else None
                    mult = getattr(op, "depth_multiplier", 1)
                    ratio = (shape[-1] * mult / op.filters) if shape and shape[-1] else 1.0
                    self._keep(("dw", i), i, out * ratio)
            elif kind == "bn":
                for k in node.inputs:
                    self._keep(k, i)
                    prod = self.tensors[self._root(k)].producer
                    if prod >= 0:
                        p = self.nodes[prod]
                        if p.kind == "weight" and getattr(p.op, "use_bias", False) \
                                and not _activation_name(p.op):
                            self._keep(("bias", prod), i, p.out_bytes * _KEEP["bias_before_norm"])
                node.workspace = _WORKSPACE["norm"] * out
            elif kind == "norm":
                for k in node.inputs:
                    self._keep(k, i)
                self._keep(("norm", i), i, out * _KEEP["layer_norm"])
                node.workspace = _WORKSPACE["norm"] * out
            elif kind == "activation":
                if act in ("softmax", "log_softmax"):
                    for k in node.inputs:
                        self._keep(k, i)
                    self._keep(("sm", i), i, out * _KEEP["softmax"])
                elif act:
                    for k in node.inputs:
                        for a in self._anchors(k):
                            self._keep(a, i)
                    extra = _ACT_EXTRA.get(act, 1.0)
                    if extra:
                        self._keep(("act", i), i, out * extra)
            elif kind == "multiply":
                for k in node.inputs:
                    for a in self._anchors(k):
                        self._keep(a, i)
            elif kind == "dropout":
                self._keep(("mask", i), i, out * _KEEP["dropout"])
            elif kind == "max_pool" and not cpu:
                # select-and-scatter reads the input and the output
                for k in node.inputs:
                    self._keep(k, i)
                for k in node.outputs:
                    self._keep(k, i)
            elif kind == "max_pool":
                # XLA (CPU) takes each window's argmax: one int32 index per output
                # element and tensor axis is kept; building them needs int32 iotas of
                # the input's shape, which the scheduler creates at the start of the
                # step, as it does the zero-filled input gradient the backward
                # scatter writes into.
                rank = node.out_rank
                elems_in = node.in_bytes / max(1, node.in_itemsize)
                elems_out = out / max(1, node.out_itemsize)
                self._keep(("pool_idx", i), i, rank * elems_out * 4)
                self.hoisted.append((rank * elems_in * 4, i))
                self._keep(("pool_zeros", i), i + 1, node.in_bytes, produced_at=-1)
                node.workspace = rank * elems_out * 4
            elif kind == "resize":
                # interpolation contracts one axis at a time: the first axis's
                # result (output / that axis's factor) and the input are live with
                # the output, forward and backward (measured on bilinear/bicubic chains)
                factor = 1.0
                in_shape = node.in_shapes[0] if node.in_shapes else None
                if in_shape and in_shape[1] and getattr(op, "output", None) is not None:
                    factor = max(1.0, op.output.shape[1] / in_shape[1])
                node.workspace = out / factor + node.in_bytes
                node.forward_workspace = node.in_bytes
                # and the first contraction's result, which stays for the backward pass
                self._keep(("resize", i), i, out / factor)
            elif kind == "global_max_pool":
                for k in node.inputs:
                    self._keep(k, i)
            elif kind == "unknown":
                for k in node.inputs:
                    self._keep(k, i)
        # a tensor a consumer must read whole is stored as itself
        for key in self.kept:
            if key in self.tensors:
                self.tensors[key].materialized = True
        # the loss reads the model outputs (recomputable from their anchors)
        for key in outputs:
            for a in self._anchors(key):
                self._keep(a, self.n)
        if self.compute_small:
            # 16-bit copies of the float32 weights, made at the start, used until
            # the layer's backward step
            for node in self.nodes:
                if node.params_bytes:
                    self._keep(("cast", node.index), node.index, 0.0, node.params_bytes / 2, produced_at=-1)

    # -- replay -----------------------------------------------------------------
    def _replay(self):
        """[(label, fixed bytes, per-sample saved, per-sample transient, fixed parts)]."""
        items = list(self.kept.items())
        grads = self._gradient_buffers()
        live_fwd = [t for t in self.tensors.values()
                    if t.alias_of is None and t.producer >= 0 and t.key not in self.kept
                    and t.consumers]
        lines = []
        for node in self.nodes:
            i = node.index
            saved_ps = sum(v[0] for _, v in items if v[2] < i)
            saved_fx = sum(v[1] for _, v in items if v[2] < i)
            saved_ps += sum(b for b, last in self.hoisted if last >= i)
            live = sum(t.bytes for t in live_fwd if t.producer < i <= max(t.consumers))
            cur = node.out_bytes + (node.workspace if node.kind == "max_pool" else 0.0) \
                + getattr(node, "forward_workspace", 0.0) + sum(
                v[0] for k, v in items if v[2] == i and k not in self.tensors)
            lines.append((f"forward {node.name}", saved_fx, saved_ps, live + cur, 0.0))
        for node in reversed(self.nodes):
            i = node.index
            saved_ps = sum(v[0] for _, v in items if v[3] <= i)
            saved_fx = sum(v[1] for _, v in items if v[3] <= i)
            flowing = sum(b for (p, last, b) in grads if p <= i <= last)
            if self.compiled:
                wgrad = self.update_buffers * node.params_bytes * getattr(node, "grad_in_flight", True)
            else:  # eager: every weight gradient stays until the optimizer step
                wgrad = sum(m.params_bytes for m in self.nodes if m.index >= i)
            if node.fixed_workspace:
                # a batch-independent buffer (XLA-CPU's dense depthwise weight gradient)
                # is not alive together with the per-sample workspace of the same step
                lines.append((f"backward {node.name} (weight gradient)",
                              saved_fx + node.fixed_workspace, saved_ps, flowing, wgrad))
            lines.append((f"backward {node.name}", saved_fx, saved_ps,
                          flowing + node.workspace, wgrad))
        if not self.compiled:
            largest = max((m.params_bytes for m in self.nodes), default=0)
            lines.append(("optimizer step", 0.0, 0.0, 0.0,
                          self.gradients + self.update_buffers * largest))
        return lines

    def _gradient_buffers(self):
        """Gradient buffers as (first step, last step, bytes).

        The gradient of a tensor lives from the backward step of its last consumer
        to that of its producer. An elementwise layer computes its input's gradient
        in place, into its output gradient's buffer (when it is that input's only
        consumer and the sizes agree), so such chains share one buffer.
        """
        parent: dict = {}

        def find(k):
            while parent.get(k, k) != k:
                k = parent[k]
            return k

        for node in self.nodes:
            if node.kind not in _IN_PLACE_GRAD_KINDS or not node.outputs:
                continue
            out = self._root(node.outputs[0])
            for k in node.inputs:
                k = self._root(k)
                t = self.tensors[k]
                if t.producer >= 0 and len(t.consumers) == 1 and t.bytes == self.tensors[out].bytes:
                    parent[find(k)] = find(out)
        spans: dict = {}
        for t in self.tensors.values():
            if t.alias_of is not None or t.producer < 0:
                continue
            last = self.n if (t.key in self.output_roots or not t.consumers) else max(t.consumers)
            root = find(t.key)
            lo, hi, b = spans.get(root, (t.producer, last, 0.0))
            spans[root] = (min(lo, t.producer), max(hi, last), max(b, t.bytes))
        return list(spans.values())

    def fixed(self) -> int:
        return int(self.weights + self.slots)

    def estimate(self, batch_size: int) -> TrainingMemory:
        best = None
        for label, saved_fx, saved_ps, transient_ps, wgrad in self._lines:
            total = saved_fx + wgrad + (saved_ps + transient_ps + self.data_per_sample) * batch_size
            if best is None or total > best[0]:
                best = (total, label, saved_fx, saved_ps, transient_ps, wgrad)
        total, label, saved_fx, saved_ps, transient_ps, wgrad = best
        fixed = self.fixed()
        grads_live = int(min(wgrad, self.gradients))
        activations = int((saved_ps + self.data_per_sample) * batch_size)
        transient_b = int(transient_ps * batch_size + (wgrad - grads_live) + saved_fx)
        return TrainingMemory(
            batch_size=batch_size,
            optimizer=self.optimizer_name,
            dtype_policy=self.policy,
            weights_bytes=int(self.weights),
            gradients_bytes=int(self.gradients),
            optimizer_bytes=int(self.slots),
            activations_bytes=activations,
            transient_bytes=transient_b,
            total_bytes=fixed + grads_live + activations + transient_b,
            gradients_live_bytes=grads_live,
            data_bytes=int(self.data_per_sample * batch_size),
            saved_activations_bytes=int(sum(v[0] for v in self.kept.values()) * batch_size
                                        + self.data_per_sample * batch_size),
            output_sum_bytes=(None if self.output_sum_per_sample is None
                              else int(self.output_sum_per_sample * batch_size)),
            peak_at=label,
            fixed_bytes=fixed,
            device=self.device,
            compiled=self.compiled,
        )

    def max_batch(self, memory_bytes: int) -> int:
        """Largest batch whose predicted peak is within ``memory_bytes`` (0 if none)."""
        room0 = memory_bytes - self.fixed()
        best = None
        for _, saved_fx, saved_ps, transient_ps, wgrad in self._lines:
            per = saved_ps + transient_ps + self.data_per_sample
            room = room0 - saved_fx - wgrad
            if room < per:
                return 0
            b = int(room // per) if per > 0 else 1 << 62
            best = b if best is None else min(best, b)
        return best or 0


class _FakeVar:
    def __init__(self, shape, dtype):
        self.shape = tuple(shape)
        self.dtype = dtype


def estimate_memory(model, batch_size: int, optimizer="adam", mixed_precision: Optional[str] = None,
                    input_shape: Optional[tuple] = None, device: Optional[str] = None,
                    compiled: Optional[bool] = None,
                    device_memory: Optional[int] = None) -> TrainingMemory:
    """Predicted peak memory of one training step of ``model`` at ``batch_size``.

    Args:
      optimizer: a name ("adam", "sgd", "rmsprop", "adagrad", "lion", "adamw",
        ...) or an optimizer instance (its config counts: SGD momentum, RMSprop
        momentum/centered, Adam amsgrad, use_ema, gradient accumulation).
      mixed_precision: None (the model's dtype policy as built), or a policy to
        assume: "mixed_float16" / "mixed_bfloat16" (16-bit activations, float32
        weights), "float16", "bfloat16", "float32".
      device: "cpu" or "gpu" (default: a GPU if the backend sees one). XLA on CPU
        adds a few buffers of its own (re-laid-out kernels, max-pool argmax
        indices, float32 compute for 16-bit layers); see the module docstring.
      compiled: whether the step is XLA-compiled (default: True except on the
        torch backend, which runs eagerly and holds every weight gradient until
        the optimizer step).
      device_memory: bytes of the device, to say in ``str()`` whether it fits.

    Raises ValueError for ``batch_size < 1``, UnknownOptimizerError for an
    optimizer name Keras does not have, ModelNotReadyError for a model that is not built.
    """
    check_batch_size(batch_size)
    plan = _Plan(model, optimizer, mixed_precision, input_shape, device, compiled)
    result = plan.estimate(batch_size)
    result.per_sample_bytes = (result.total_bytes - result.fixed_bytes) / batch_size
    result.device_bytes = device_memory
    return result


def max_batch_size(model, memory_bytes: Optional[int] = None, optimizer="adam",
                   mixed_precision: Optional[str] = None, input_shape: Optional[tuple] = None,
                   device: Optional[str] = None, compiled: Optional[bool] = None) -> int:
    """The largest batch whose :func:`estimate_memory` fits in ``memory_bytes``.

    ``memory_bytes`` may be omitted when a GPU is visible: the memory the
    backend may use on it is taken (JAX: its allocator limit; torch: the
    device's total memory). Returns 0 when not even one sample fits.
    """
    memory_given = memory_bytes is not None
    if memory_bytes is None:
        memory_bytes = device_memory_bytes()
        if memory_bytes is None:
            raise ValueError("memory_bytes is required: no GPU is visible to the "
                             f"{keras.backend.backend()} backend to read its memory from.")
    if not isinstance(memory_bytes, (int, float)) or memory_bytes <= 0:
        raise ValueError(f"memory_bytes must be a positive number of bytes, got {memory_bytes!r}")
    if not memory_given and device is None:
        device = "gpu"
    plan = _Plan(model, optimizer, mixed_precision, input_shape, device, compiled)
    return plan.max_batch(int(memory_bytes))
