"""Effective receptive field (Luo, Li, Urtasun & Zemel, NeurIPS 2016).

The theoretical receptive field is every input pixel that *can* influence a unit;
the effective receptive field is how much each one *does*, with the model's real
weights: the magnitude of the gradient of the centre unit (summed over its
channels) with respect to every input pixel, averaged over input images. Luo et
al. show it is a roughly Gaussian blob that fills only a small part of the
theoretical field (its radius grows like sqrt(depth), the field like depth), and
that it widens during training.

Gradients are taken with the backend Keras runs on (TensorFlow GradientTape,
jax.grad of ``stateless_call``, or torch autograd); nothing else is backend-specific.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class EffectiveReceptiveField:
    """The result of :func:`effective_receptive_field`.

    ``map`` has the model input's spatial shape (rows, cols) and holds the mean, over
    inputs, of |d unit / d pixel| summed over input channels. ``radius`` is the radius
    (input pixels, around ``centre``) of the disc that holds ``fraction`` of the map's
    mass; compare it with ``uniform_radius``, the same radius for an ERF that filled the
    theoretical RF evenly (``relative_radius`` is their ratio).
    """

    map: np.ndarray
    layer: str
    position: tuple  # the unit: indices on the layer output's spatial axes (tensor order)
    centre: tuple  # input coordinates (rows, cols) the radius is measured from
    radius: float
    fraction: float
    receptive_field: Optional[tuple]  # theoretical RF (rows, cols)
    window: Optional[tuple]  # theoretical window ((first, last) per axis), unclipped
    n_inputs: int
    backend: str
    model_name: str = ""
    figure: Any = field(default=None, repr=False)  # set by plot=True / path=

    @property
    def theoretical_radius(self) -> Optional[float]:
        """Half the widest side of the theoretical receptive field."""
        if not self.receptive_field or any(r is None for r in self.receptive_field):
            return None
        return max(self.receptive_field) / 2

    @property
    def uniform_radius(self) -> Optional[float]:
        """The ``fraction`` radius if every pixel of the theoretical window (inside the
        image) counted alike: what ``radius`` would be if the ERF filled the RF."""
        if self.window is None:
            return None
        uniform = np.zeros_like(self.map, dtype=float)
        uniform[tuple(slice(max(lo, 0), hi + 1) for lo, hi in self.window)] = 1.0
        return mass_radius(uniform, self.centre, self.fraction)

    @property
    def relative_radius(self) -> Optional[float]:
        """``radius / uniform_radius``: 1 if the ERF filled the theoretical RF evenly;
        well below 1 for a real network (Luo et al.)."""
        u = self.uniform_radius
        return None if not u else self.radius / u

    def radius_for(self, fraction: float) -> float:
        """Radius around ``centre`` holding ``fraction`` of the mass (0.5: the median radius)."""
        return mass_radius(self.map, self.centre, fraction)

    @property
    def normalized(self) -> np.ndarray:
        peak = float(self.map.max())
        return self.map / peak if peak > 0 else self.map

    def mass_inside_window(self) -> Optional[float]:
        """Fraction of the map inside the theoretical window (1.0 up to round-off)."""
        if self.window is None:
            return None
        index = tuple(slice(max(lo, 0), hi + 1) for lo, hi in self.window)
        total = float(self.map.sum())
        return float(self.map[index].sum()) / total if total > 0 else None

    def summary(self) -> str:
        rf = "x".join(str(r) for r in self.receptive_field) if self.receptive_field else "?"
        text = (f"ERF of {self.layer} unit {self.position} over {self.n_inputs} inputs: "
                f"{self.fraction:.0%} of the gradient mass within radius {self.radius:.1f} px")
        if self.uniform_radius:
            text += (f"; the theoretical RF {rf}, filled evenly, would need "
                     f"{self.uniform_radius:.1f} px (ratio {self.relative_radius:.2f})")
        elif self.receptive_field:
            text += f"; theoretical RF {rf}"
        return text

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "position": list(self.position), "centre": list(self.centre),
                "radius": self.radius, "fraction": self.fraction,
                "receptive_field": list(self.receptive_field) if self.receptive_field else None,
                "theoretical_radius": self.theoretical_radius,
                "uniform_radius": self.uniform_radius,
                "relative_radius": self.relative_radius, "n_inputs": self.n_inputs,
                "backend": self.backend}

    def plot(self, path=None, *, axes=None, title: Optional[str] = None,
             zoom: Optional[bool] = None, cmap: str = "magma"):
        """The ERF heat map with the theoretical RF box and the ``fraction`` disc (left),
        and its row/column profiles against the theoretical window (right).

        ``axes``: two matplotlib axes to draw into (else a new Figure is returned).
        ``zoom`` crops the map to the theoretical window plus a margin (default: when
        the window is small next to the image).
        """
        from keras_rf.plotting import _finish, new_figure

        fig = None
        if axes is None:
            fig = new_figure(figsize=(11, 4.6), layout="constrained")
            axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})
        ax_map, ax_prof = axes
        if zoom is None:
            zoom = self.window is not None and np.prod(
                [hi - lo + 1 for lo, hi in self.window]) < 0.4 * self.map.size
        _plot_map(self, ax_map, zoom, cmap)
        _plot_profiles(self, ax_prof)
        figure = fig or ax_map.figure
        if fig is not None:
            fig.suptitle(title or f"Effective receptive field of {self.layer}"
                         + (f" ({self.model_name})" if self.model_name else ""), fontsize=12)
        return _finish(figure, path)

    def _repr_png_(self) -> bytes:
        return self.plot()._repr_png_()


def _plot_map(erf: EffectiveReceptiveField, ax, zoom: bool, cmap: str) -> None:
    from matplotlib.patches import Circle, Rectangle

    image = erf.normalized
    if image.ndim == 1:
        ax.plot(image, color="#c03020")
        ax.set_xlabel("input position")
        ax.set_ylabel("|gradient| (normalised)")
        if erf.window:
            lo, hi = erf.window[0]
            ax.axvspan(lo - 0.5, hi + 0.5, color="#1f77b4", alpha=0.15, label="theoretical RF")
        c = erf.centre[0]
        ax.axvspan(c - erf.radius, c + erf.radius, color="#2ca02c", alpha=0.25,
                   label=f"{erf.fraction:.0%} of the mass")
        ax.legend(fontsize=8)
        return
    h, w = image.shape
    shown = ax.imshow(image, cmap=cmap, interpolation="nearest", vmin=0, vmax=1,
                      extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="|d unit / d pixel| (max = 1)")
    handles, labels = [], []
    if erf.window:
        (r0, r1), (c0, c1) = erf.window
        box = Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                        ec="#4fc3f7", lw=2, ls="--")
        ax.add_patch(box)
        handles.append(box)
        labels.append(f"theoretical RF {erf.receptive_field[0]}x{erf.receptive_field[1]}")
    cy, cx = erf.centre
    disc = Circle((cx, cy), erf.radius, fill=False, ec="#7CFC00", lw=2)
    ax.add_patch(disc)
    handles.append(disc)
    labels.append(f"{erf.fraction:.0%} of the mass: radius {erf.radius:.1f}")
    ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8,
              ncol=1, frameon=False)
    if zoom and erf.window:
        (r0, r1), (c0, c1) = erf.window
        m = max(2, (r1 - r0) // 6)
        ax.set_xlim(c0 - 0.5 - m, c1 + 0.5 + m)
        ax.set_ylim(r1 + 0.5 + m, r0 - 0.5 - m)
    else:
        lo_r, hi_r, lo_c, hi_c = -0.5, h - 0.5, -0.5, w - 0.5
        if erf.window:
            (r0, r1), (c0, c1) = erf.window
            lo_r, hi_r = min(lo_r, r0 - 0.5), max(hi_r, r1 + 0.5)
            lo_c, hi_c = min(lo_c, c0 - 0.5), max(hi_c, c1 + 0.5)
        ax.set_xlim(lo_c - 0.5, hi_c + 0.5)
        ax.set_ylim(hi_r + 0.5, lo_r - 0.5)
    ax.set_facecolor("#d8d8d8")
    ax.set_xlabel("column (input pixels)")
    ax.set_ylabel("row (input pixels)")


def _plot_profiles(erf: EffectiveReceptiveField, ax) -> None:
    image = erf.map
    if image.ndim == 1:
        ax.axis("off")
        ax.text(0, 0.5, erf.summary(), wrap=True, fontsize=9)
        return
    profiles = [("rows", image.sum(axis=1), "#d62728"), ("cols", image.sum(axis=0), "#1f77b4")]
    for axis, (name, prof, color) in enumerate(profiles):
        peak = prof.max() if prof.max() > 0 else 1.0
        x = np.arange(len(prof)) - erf.centre[axis]
        ax.plot(x, prof / peak, marker="o", ms=3, color=color, lw=1.5,
                label=f"ERF summed over {'cols' if name == 'rows' else 'rows'} (along {name})")
    if erf.window:
        lo = min(erf.window[a][0] - erf.centre[a] for a in range(2))
        hi = max(erf.window[a][1] - erf.centre[a] for a in range(2))
        ax.axvspan(lo - 0.5, hi + 0.5, color="#4fc3f7", alpha=0.15,
                   label=f"theoretical RF ({erf.receptive_field[0]} px)")
        margin = max(2, (hi - lo) // 6)
        ax.set_xlim(lo - 0.5 - margin, hi + 0.5 + margin)
    ax.axvline(-erf.radius, color="#2ca02c", ls="--", lw=1.5)
    ax.axvline(erf.radius, color="#2ca02c", ls="--", lw=1.5,
               label=f"± radius {erf.radius:.1f} ({erf.fraction:.0%} of the mass)")
    ax.set_xlabel("input pixels from the unit's centre")
    ax.set_ylabel("gradient magnitude (peak = 1)")
    ax.set_ylim(0, 1.12)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(erf.summary().replace(": ", ":\n", 1).replace("; ", ";\n", 1), fontsize=8.5)


# ---------------------------------------------------------------------------
# Computing it
# ---------------------------------------------------------------------------

def cumulative_mass(weights: np.ndarray, centre: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(radii, fraction of the total held by pixels within each radius of ``centre``),
    over the distinct pixel distances, increasing."""
    weights = np.asarray(weights, dtype=float)
    grids = np.meshgrid(*[np.arange(n) for n in weights.shape], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre))).ravel()
    order = np.argsort(dist, kind="stable")
    radii, cumulative = dist[order], np.cumsum(weights.ravel()[order])
    last = np.r_[radii[1:] != radii[:-1], True]  # one point per distinct distance
    total = cumulative[-1] if cumulative[-1] > 0 else 1.0
    return radii[last], cumulative[last] / total


def mass_radius(weights: np.ndarray, centre: Sequence[float], fraction: float = 0.95) -> float:
    """Smallest radius r such that pixels whose centres lie within r of ``centre``
    (Euclidean, in pixels) hold at least ``fraction`` of ``weights``' total."""
    weights = np.asarray(weights, dtype=float)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    total = weights.sum()
    if total <= 0:
        return 0.0
    grids = np.meshgrid(*[np.arange(n) for n in weights.shape], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre))).ravel()
    order = np.argsort(dist, kind="stable")
    cumulative = np.cumsum(weights.ravel()[order])
    k = int(np.searchsorted(cumulative, fraction * total * (1 - 1e-9)))
    return float(dist[order][min(k, len(order) - 1)])


def effective_receptive_field(model, layer=None, inputs=None, *, position=None,
                              n_inputs: int = 16, batch_size: int = 16, fraction: float = 0.95,
                              seed: int = 0, input_shape: Optional[tuple] = None,
                              plot: bool = False, path=None) -> EffectiveReceptiveField:
    """Measure the effective receptive field of one unit of ``layer`` (name; default:
    the last layer that still has spatial axes).

    ``inputs``: an array of input images (N, H, W, C) (or one image without the batch
    axis); default: ``n_inputs`` standard-normal images, as in Luo et al. ``position``:
    the unit, as indices on the layer output's spatial axes; default: the unit whose
    theoretical window is centred closest to the image centre. The model runs in
    inference mode (BatchNorm uses its moving statistics, Dropout is off).
    ``plot=True`` or ``path`` draws the map over the theoretical RF (see
    :meth:`EffectiveReceptiveField.plot`; ``path`` saves it).
    """
    import keras

    from keras_rf.analysis import analyze

    if len(model.inputs) != 1:
        raise ValueError("effective_receptive_field handles single-input models; "
                         f"'{model.name}' has {len(model.inputs)} inputs")
    x = _prepare_inputs(model, inputs, n_inputs, seed, input_shape)
    report = analyze(model)
    input_info = report.layers[0]
    info = _pick_layer(report, layer)
    sub = _sub_model(model, info)
    out_shape = tuple(keras.ops.shape(_first(sub(x[:1], training=False))))
    spatial_in = _spatial_axes(input_info, len(x.shape) - 1)
    spatial_out = _spatial_axes(info, len(out_shape) - 1)
    sizes_in = [x.shape[1 + a] for a in spatial_in]
    if position is None:
        position = _centre_unit(info, spatial_out, out_shape, sizes_in)
    position = tuple(int(p) for p in np.atleast_1d(position))
    if len(position) != len(spatial_out):
        raise ValueError(f"position {position} has {len(position)} indices; layer '{info.name}' "
                         f"output {out_shape} has {len(spatial_out)} spatial axes")
    index = [slice(None)] * len(out_shape)
    for axis, p in zip(spatial_out, position):
        if not 0 <= p < out_shape[1 + axis]:
            raise ValueError(f"position {position} is outside layer '{info.name}' output "
                             f"{out_shape}")
        index[1 + axis] = p
    index = tuple(index)

    def select(y):
        return keras.ops.sum(_first(y)[index])

    total = None
    for start in range(0, len(x), batch_size):
        grad = _input_gradient(sub, x[start:start + batch_size], select)
        grad = np.abs(grad)
        other = tuple(1 + a for a in range(grad.ndim - 1) if a not in spatial_in)
        grad = grad.sum(axis=(0,) + other)  # over the batch and the channels
        total = grad if total is None else total + grad
    erf_map = total / len(x)
    if list(spatial_in) != sorted(spatial_in):  # pragma: no cover - input axes keep their order
        erf_map = np.moveaxis(erf_map, np.argsort(spatial_in), range(len(spatial_in)))

    window = info.window(position) if spatial_out and not info.sees_whole_input else None
    if window is not None:
        centre = tuple((lo + hi) / 2 for lo, hi in window)
    elif erf_map.sum() > 0:
        grids = np.meshgrid(*[np.arange(n) for n in erf_map.shape], indexing="ij")
        centre = tuple(float((g * erf_map).sum() / erf_map.sum()) for g in grids)
    else:
        centre = tuple((n - 1) / 2 for n in erf_map.shape)
    rf = info.receptive_field if info.receptive_field and None not in info.receptive_field else None
    result = EffectiveReceptiveField(
        map=erf_map, layer=info.name, position=position, centre=centre,
        radius=mass_radius(erf_map, centre, fraction), fraction=fraction, receptive_field=rf,
        window=window, n_inputs=len(x), backend=keras.backend.backend(), model_name=model.name)
    if plot or path is not None:
        result.figure = result.plot(path)
    return result


def _first(y):
    return y[0] if isinstance(y, (list, tuple)) else y


def _prepare_inputs(model, inputs, n_inputs, seed, input_shape) -> np.ndarray:
    shape = tuple(model.inputs[0].shape)
    if inputs is None:
        dims = tuple(input_shape) if input_shape is not None else shape[1:]
        if len(dims) == len(shape):  # given with the batch axis
            dims = dims[1:]
        if any(d is None for d in dims):
            raise ValueError(f"model '{model.name}' has input shape {shape}; pass inputs=... or "
                             "input_shape=(H, W, C) to choose the image size")
        rng = np.random.default_rng(seed)
        return rng.standard_normal((n_inputs,) + tuple(dims)).astype("float32")
    x = np.asarray(inputs)
    if x.ndim == len(shape) - 1:
        x = x[None]
    if x.ndim != len(shape):
        raise ValueError(f"inputs of shape {x.shape} do not fit the model input {shape}")
    if "int" in str(model.inputs[0].dtype):
        raise ValueError("the effective receptive field needs a differentiable (float) input; "
                         f"'{model.name}' takes {model.inputs[0].dtype} inputs")
    return x.astype("float32")


def _pick_layer(report, layer):
    if layer is None:
        info = report.last_spatial_layer
        if info is None:
            raise ValueError(f"model '{report.model_name}' has no layer with spatial axes")
        return info
    if hasattr(layer, "window"):
        return layer
    name = layer if isinstance(layer, str) else getattr(layer, "name", layer)
    return report.layer(name)


def _sub_model(model, info):
    import keras

    if info.is_container or len(info.path) > 1:
        raise ValueError(f"layer '{info.name}' is inside the nested model '{info.path[0]}'; "
                         "pass that nested model (or a top-level layer) instead")
    if info.class_name == "InputLayer":
        raise ValueError("pick a layer after the input")
    target = model.get_layer(info.name)
    nodes = [n for n in target._inbound_nodes]
    output = target.output if len(nodes) == 1 else nodes[info.call_index].outputs
    return keras.Model(model.inputs[0], output)


def _spatial_axes(info, rank: int) -> list[int]:
    """Tensor axes (0 = first axis after the batch) that run along the input's spatial axes."""
    geom = info.geometry
    if geom is None or geom.whole or geom.unknown or not geom.axes:
        return []
    return [k for k, a in enumerate(geom.axes) if a is not None and k < rank]


def _centre_unit(info, spatial_out, out_shape, sizes_in) -> tuple:
    """Per spatial output axis, the unit whose window centre is closest to the image centre."""
    if not spatial_out:
        return ()
    maps = [info.geometry.axes[k] for k in spatial_out]
    position = []
    for axis_map, k in zip(maps, spatial_out):
        n = out_shape[1 + k]
        target = (sizes_in[axis_map.input_axis] - 1) / 2
        best, best_d = n // 2, math.inf
        for o in sorted(range(n), key=lambda o: abs(o - n // 2)):  # ties: the middle unit
            window = axis_map.window_of(o)
            if window is None:
                break
            d = abs((window[0] + window[1]) / 2 - target)
            if d < best_d - 1e-9:
                best, best_d = o, d
        position.append(best)
    return tuple(position)


def _input_gradient(sub, x: np.ndarray, select) -> np.ndarray:
    """d select(sub(x)) / dx as a numpy array, on the active Keras backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            value = select(sub(xt, training=False))
        return tape.gradient(value, xt).numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in sub.trainable_variables]
        non_trainable = [v.value for v in sub.non_trainable_variables]

        def f(xx):
            y, _ = sub.stateless_call(trainable, non_trainable, xx, training=False)
            return select(y)

        return np.asarray(jax.jit(jax.grad(f))(jnp.asarray(x)))
    if backend == "torch":
        import torch

        xt = keras.ops.convert_to_tensor(x).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = select(sub(xt, training=False))
            (grad,) = torch.autograd.grad(value, xt)
        return grad.detach().cpu().numpy()
    raise NotImplementedError(f"effective_receptive_field needs gradients; the '{backend}' "
                              "backend has none (use tensorflow, jax or torch)")
