"""Pictures of a Report (matplotlib): RF and memory per layer, and one unit's RF box on an image.

Functions return a matplotlib Figure that is not registered with pyplot, so scripts
and servers need no display and leak no figures; ``path=`` saves it as a PNG, and in
Jupyter the returned figure shows inline (it has a ``_repr_png_``). Pass ``ax=`` to
draw into your own axes instead.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Optional, Sequence, Union

import numpy as np

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("keras_rf plots need matplotlib: pip install 'keras-rf[plot]' "
                          "(or pip install matplotlib)") from exc
    return Figure


@functools.lru_cache(maxsize=None)
def _figure_class():
    Figure = _require_matplotlib()

    class NotebookFigure(Figure):
        """A matplotlib Figure that Jupyter shows inline (PNG) without pyplot."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            return buffer.getvalue()

    return NotebookFigure


def new_figure(**kwargs):
    """A Figure that shows itself inline in Jupyter and needs no pyplot."""
    return _figure_class()(**kwargs)


def _finish(fig, path):
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _unit(max_bytes: float) -> tuple[str, float]:
    for i, unit in enumerate(_UNITS):
        if max_bytes < 1024 ** (i + 1) or unit == _UNITS[-1]:
            return unit, float(1024 ** i)
    return "B", 1.0  # pragma: no cover


def _short_class(name: str) -> str:
    for long, short in (("Convolution", "Conv"), ("Normalization", "Norm"), ("Transpose", "T"),
                        ("Global", "G"), ("Average", "Avg"), ("Pooling", "Pool"), ("Layer", "")):
        name = name.replace(long, short)
    return name


# ---------------------------------------------------------------------------
# report.plot()
# ---------------------------------------------------------------------------

def plot_report(report, path=None, *, figsize: Optional[tuple] = None, title: Optional[str] = None,
                max_labels: int = 60):
    """RF per layer against the input size (top) and activation memory per layer (bottom bars).

    Returns a matplotlib Figure; ``path`` also saves it (PNG by extension).
    """
    rows = report.leaf_layers
    n = len(rows)
    x = np.arange(n)
    size = report.input_spatial_size
    if figsize is None:
        figsize = (min(24.0, max(8.0, 0.32 * n + 2.5)), 7.5)
    fig = new_figure(figsize=figsize, layout="constrained")
    ax_rf, ax_mem = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})

    # -- receptive field -------------------------------------------------------
    n_axes = max((len(i.receptive_field) for i in rows if i.receptive_field), default=0)
    axis_names = ["rows", "cols", "depth"] if n_axes > 1 else ["RF"]
    per_axis = [[_axis_value(i, a) for i in rows] for a in range(n_axes)]
    same = all(per_axis[a] == per_axis[0] for a in range(n_axes))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    shown = range(1 if same else n_axes)
    whole = [k for k, i in enumerate(rows) if i.sees_whole_input]
    annotate = n <= 40
    for a in shown:
        values = np.array([np.nan if (v is None or rows[k].sees_whole_input) else v
                           for k, v in enumerate(per_axis[a])], dtype=float)
        label = "receptive field" if same else f"receptive field ({axis_names[a]})"
        ax_rf.plot(x, values, marker="o", ms=4, lw=1.8, color=colors[a], label=label)
    if annotate:  # the RF value wherever it changes ("8x24" when the axes differ)
        for k, info in enumerate(rows):
            rf = info.receptive_field
            if info.sees_whole_input or not rf or any(v is None for v in rf):
                continue
            if k and rows[k - 1].receptive_field == rf and not rows[k - 1].sees_whole_input:
                continue
            text = str(rf[0]) if same else "x".join(str(v) for v in rf)
            ax_rf.annotate(text, (k, max(rf)), xytext=(0, 6), textcoords="offset points",
                           ha="center", fontsize=7.5, color="#333333")
    if whole and n_axes:
        sizes_known = [v for v in (size or ()) if v is not None]
        for j, v in enumerate(sorted(set(sizes_known)) or [None]):
            known_rf = [r for i in rows for r in _rf_values(i) if r is not None] or [1]
            ys = [v if v is not None else max(known_rf) for _ in whole]
            ax_rf.scatter(whole, ys, marker="*", s=140, color="#d62728", zorder=5,
                          label="sees the whole input (global pooling, Dense, ...)" if j == 0
                          else None)
    unknown = [k for k, i in enumerate(rows) if i.unknown_reason and i.receptive_field is None]
    for k in unknown:
        ax_rf.axvspan(k - 0.4, k + 0.4, color="#bbbbbb", alpha=0.5, lw=0)
    if unknown:
        ax_rf.plot([], [], color="#bbbbbb", lw=8, alpha=0.5, label="receptive field unknown")
    if size:
        sizes = sorted({s for s in size if s is not None})
        for s in sizes:
            ax_rf.axhline(s, color="#555555", ls="--", lw=1.2)
            ax_rf.annotate(f"input {s}", (n - 1, s), xytext=(-14, 3), textcoords="offset points",
                           fontsize=9, color="#555555", va="bottom", ha="right")
    last = report.last_spatial_layer
    covers = report.covers_input()
    if last is not None and last.receptive_field:
        verdict = {True: "covers", False: "does not cover", None: "may or may not cover"}[covers]
        size_text = "x".join("?" if s is None else str(s) for s in size) if size else "?"
        rf_text = "x".join("?" if r is None else str(r) for r in last.receptive_field)
        ax_rf.set_title(f"Last spatial layer {last.name}: RF {rf_text} {verdict} the "
                        f"{size_text} input", fontsize=10, loc="left")
    ax_rf.set_ylabel("receptive field (input pixels)")
    tops = [v for a in range(n_axes) for v in per_axis[a] if v is not None] + [
        s for s in (size or ()) if s is not None]
    ax_rf.set_ylim(0, max(tops, default=1) * 1.15)
    ax_rf.grid(True, axis="y", alpha=0.3)
    if ax_rf.get_legend_handles_labels()[0]:
        ax_rf.legend(loc="upper left", bbox_to_anchor=(0, 0.93), fontsize=9, framealpha=0.9)

    # -- activation memory --------------------------------------------------------
    mem = [i.activation_bytes for i in rows]
    known = [m for m in mem if m is not None]
    unit, scale = _unit(max(known) if known else 1)
    heights = [0 if m is None else m / scale for m in mem]
    bar_colors = [_bar_color(i.class_name) for i in rows]
    ax_mem.bar(x, heights, color=bar_colors, width=0.75)
    top = max(heights) if heights else 1
    for k, m in enumerate(mem):
        if m is None:
            ax_mem.text(k, 0, "?", ha="center", va="bottom", fontsize=10, color="#d62728")
    ax_mem.set_ylim(0, (top or 1) * 1.12)
    ax_mem.set_ylabel(f"activation memory ({unit})")
    total = report.total_activation_bytes
    from keras_rf.render import human_bytes
    ax_mem.set_title(f"Activations for a batch of {report.batch_size}: "
                     f"{human_bytes(total)} in all", fontsize=10, loc="left")
    ax_mem.grid(True, axis="y", alpha=0.3)
    legend = {}
    for i, c in zip(rows, bar_colors):
        legend.setdefault(_bar_kind(i.class_name), c)
    if len(legend) > 1:
        from matplotlib.patches import Patch
        ax_mem.legend([Patch(color=c) for c in legend.values()], list(legend), fontsize=8,
                      loc="upper right", ncol=min(4, len(legend)))

    step = max(1, math.ceil(n / max_labels))
    ax_mem.set_xticks(x[::step])
    ax_mem.set_xticklabels([f"{rows[k].name} ({_short_class(rows[k].class_name)})"
                            for k in x[::step]], rotation=60, ha="right", fontsize=8,
                           rotation_mode="anchor")
    ax_mem.set_xlim(-0.6, n - 0.4)
    fig.suptitle(title or f"Model \"{report.model_name}\": receptive field and activation memory "
                 "per layer", fontsize=12)
    return _finish(fig, path)


def _rf_values(info):
    return list(info.receptive_field or ())


def _axis_value(info, axis):
    rf = info.receptive_field
    if rf is None or axis >= len(rf):
        return None
    return rf[axis]


_KINDS = (("Conv", "convolution", "#4c72b0"), ("Pool", "pooling", "#55a868"),
          ("Input", "input", "#8c8c8c"), ("Dense", "dense", "#c44e52"),
          ("Norm", "normalization", "#dd8452"))


def _bar_kind(class_name: str) -> str:
    for key, kind, _ in _KINDS:
        if key in class_name:
            return kind
    return "other"


def _bar_color(class_name: str) -> str:
    for key, _, color in _KINDS:
        if key in class_name:
            return color
    return "#8172b3"


# ---------------------------------------------------------------------------
# draw_receptive_field
# ---------------------------------------------------------------------------

def draw_receptive_field(report, layer, image, position=None, *, ax=None, path=None,
                         color: Union[str, Sequence[str], None] = None,
                         title: Optional[str] = None, figsize: tuple = (6.0, 6.0)):
    """Draw the receptive-field box of one output unit of ``layer`` on an input ``image``.

    ``report`` is a Report (or a keras Model, analysed on the fly); ``layer`` a layer
    name or LayerInfo; ``image`` an (H, W), (H, W, C) or (C, H, W) array (a leading
    batch axis of 1 is dropped), or a 1-D signal for 1-D models. ``position`` is the
    unit's index in the layer output (spatial axes in tensor order; default: the
    centre unit), or a list of them to draw several boxes. The box is the exact,
    unclipped window: where it leaves the image, the unit sees padding.
    Returns the Figure.
    """
    report = _as_report(report)
    info = layer if hasattr(layer, "window") else report.layer(layer)
    image = np.asarray(image)
    size = report.input_spatial_size
    n_spatial = len(size) if size else (info.geometry and len(info.geometry.spatial)) or 0
    if n_spatial not in (1, 2):
        raise ValueError(f"draw_receptive_field draws 1-D and 2-D inputs; '{report.model_name}' "
                         f"has {n_spatial} spatial axes")
    positions = _positions(info, position)
    if info.sees_whole_input:
        windows = [None]
    else:
        windows = [info.window(p) for p in positions]
        if any(w is None for w in windows):
            raise ValueError(_no_window_reason(info))
    fig = None
    if ax is None:
        fig = new_figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    colors = _colors(color, len(windows))
    if n_spatial == 1:
        _draw_1d(ax, report, info, _as_signal(image, size), positions, windows, colors, title)
    else:
        _draw_2d(ax, report, info, _as_picture(image, size), positions, windows, colors, title)
    return _finish(fig or ax.figure, path)


def _as_report(report):
    if hasattr(report, "layers") and hasattr(report, "input_spatial_size"):
        return report
    from keras_rf.analysis import analyze
    return analyze(report)


def _positions(info, position) -> list[tuple]:
    if position is None:
        return [_centre_unit(info)]
    if isinstance(position, (int, np.integer)):
        return [(int(position),)]
    position = list(position)
    if position and isinstance(position[0], (tuple, list, np.ndarray)):
        return [tuple(int(v) for v in p) for p in position]
    return [tuple(int(v) for v in position)]


def spatial_output_sizes(info) -> list[Optional[int]]:
    """Lengths of the layer output's spatial axes, in tensor order."""
    if info.geometry is None or info.geometry.whole or info.geometry.unknown:
        return []
    return [info.output_shape[1 + k] for k, a in enumerate(info.geometry.axes) if a is not None]


def _centre_unit(info) -> tuple:
    if info.sees_whole_input:
        return ()
    sizes = spatial_output_sizes(info)
    if not sizes:
        raise ValueError(_no_window_reason(info))
    if any(s is None for s in sizes):
        raise ValueError(f"layer '{info.name}' has an output of unknown size "
                         f"{info.output_shape}; pass position=(row, col)")
    return tuple(s // 2 for s in sizes)


def _no_window_reason(info) -> str:
    if info.unknown_reason:
        return f"the receptive field of layer '{info.name}' is unknown: {info.unknown_reason}"
    if info.geometry is not None and info.geometry.folded:
        return (f"layer '{info.name}' ({info.class_name}) has flattened its spatial axes: its "
                "units have no (row, col) position to draw; pick an earlier layer")
    if info.receptive_field is None:
        return f"layer '{info.name}' ({info.class_name}) has no spatial relation to the input"
    return (f"the window of this unit of layer '{info.name}' cannot be known (its position "
            "depends on a padding that depends on an unknown input size)")


def _colors(color, n) -> list[str]:
    palette = ["#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#00c0c0"]
    if color is None:
        return [palette[k % len(palette)] for k in range(n)]
    if isinstance(color, str):
        return [color] * n
    return [list(color)[k % len(color)] for k in range(n)]


def _as_picture(image: np.ndarray, size) -> np.ndarray:
    """(H, W) or (H, W, 3/4) for imshow."""
    img = image
    while img.ndim > 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3:
        hw = tuple(size) if size and None not in size else None
        if hw is not None and img.shape[:2] != hw and img.shape[1:] == hw:
            img = np.moveaxis(img, 0, -1)
        elif hw is None and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
            img = np.moveaxis(img, 0, -1)
        if img.shape[-1] == 1:
            img = img[..., 0]
        elif img.shape[-1] not in (3, 4):
            img = img.mean(axis=-1)
    if img.ndim != 2 and not (img.ndim == 3 and img.shape[-1] in (3, 4)):
        raise ValueError(f"expected an (H, W), (H, W, C) or (C, H, W) image, got shape {image.shape}")
    if size and None not in size and img.shape[:2] != tuple(size):
        raise ValueError(f"the image is {img.shape[0]}x{img.shape[1]} but the model's input is "
                         f"{size[0]}x{size[1]}; the box would be drawn at the wrong place")
    img = img.astype(float)
    if img.ndim == 3:  # colour: imshow needs [0, 1]
        lo, hi = np.nanmin(img), np.nanmax(img)
        if lo < 0 or hi > 1:
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def _as_signal(image: np.ndarray, size) -> np.ndarray:
    sig = np.squeeze(image)
    if sig.ndim == 2:
        length = size[0] if size else None
        sig = sig.mean(axis=1) if sig.shape[0] == length or length is None else sig.mean(axis=0)
    if sig.ndim != 1:
        raise ValueError(f"expected a 1-D signal (L,) or (L, C), got shape {image.shape}")
    return sig.astype(float)


def _describe_window(window) -> str:
    names = ("rows", "cols")
    return ", ".join(f"{names[k] if len(window) > 1 else 'pixels'} {lo}..{hi}"
                     for k, (lo, hi) in enumerate(window))


def _draw_2d(ax, report, info, img, positions, windows, colors, title):
    from matplotlib.patches import Rectangle

    h, w = img.shape[:2]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest",
              extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, ec="#444444", lw=1, ls=":"))
    lows_r, highs_r, lows_c, highs_c = [-0.5], [h - 0.5], [-0.5], [w - 0.5]
    lines = []
    for pos, window, col in zip(positions, windows, colors):
        if window is None:  # sees the whole input
            (r0, r1), (c0, c1) = (0, h - 1), (0, w - 1)
            lines.append("every unit sees the whole input")
        else:
            (r0, r1), (c0, c1) = window
            pad = max(0, -r0, -c0, r1 - (h - 1), c1 - (w - 1))
            text = f"unit {pos}: {_describe_window(window)}"
            if pad:
                text += f" (up to {pad} px of padding)"
            lines.append(text)
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=True,
                               fc=col, alpha=0.18, lw=0))
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                               ec=col, lw=2.2))
        ax.plot([(c0 + c1) / 2], [(r0 + r1) / 2], marker="+", color=col, ms=10, mew=2)
        lows_r.append(r0 - 0.5), highs_r.append(r1 + 0.5)
        lows_c.append(c0 - 0.5), highs_c.append(c1 + 0.5)
    if min(lows_r) < -0.5 or min(lows_c) < -0.5 or max(highs_r) > h - 0.5 or max(highs_c) > w - 0.5:
        ax.set_facecolor("#e4e4e4")  # outside the image: padding
        lines.append("(grey: padding outside the image)")
    margin = 0.02 * max(h, w)
    ax.set_xlim(min(lows_c) - margin, max(highs_c) + margin)
    ax.set_ylim(max(highs_r) + margin, min(lows_r) - margin)
    ax.set_xlabel("column (input pixels)")
    ax.set_ylabel("row (input pixels)")
    rf = "x".join("?" if r is None else str(r) for r in (info.receptive_field or ()))
    heading = title or f"Receptive field of {info.name} ({info.class_name}): {rf}"
    ax.set_title(heading + "\n" + "\n".join(lines), fontsize=9)


def _draw_1d(ax, report, info, sig, positions, windows, colors, title):
    n = len(sig)
    ax.plot(np.arange(n), sig, color="#333333", lw=1)
    lines = []
    for pos, window, col in zip(positions, windows, colors):
        lo, hi = (0, n - 1) if window is None else window[0]
        ax.axvspan(lo - 0.5, hi + 0.5, color=col, alpha=0.2)
        ax.axvline(lo - 0.5, color=col, lw=1.5)
        ax.axvline(hi + 0.5, color=col, lw=1.5)
        lines.append("every unit sees the whole input" if window is None
                     else f"unit {pos}: {_describe_window(window)}")
    ax.set_xlabel("input position")
    rf = "x".join("?" if r is None else str(r) for r in (info.receptive_field or ()))
    heading = title or f"Receptive field of {info.name} ({info.class_name}): {rf}"
    ax.set_title(heading + "\n" + "\n".join(lines), fontsize=9)
