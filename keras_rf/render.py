"""Turning a Report into text, Markdown and HTML tables (tabulate does the layout)."""

from __future__ import annotations

import html
from fractions import Fraction
from typing import Optional

from tabulate import tabulate

HEADERS = ["Layer (type)", "Output Shape", "RF", "Jump", "Pad", "Activations", "Memory", "Param #"]


def human_bytes(n: Optional[int]) -> str:
    """1536 -> '1.50 KiB' (binary units, as Keras prints parameter memory)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _number(x) -> str:
    if x is None:
        return "?"
    if isinstance(x, Fraction) and x.denominator != 1:
        return f"{x.numerator}/{x.denominator}"
    return str(int(x))


def format_axes(values, footnote: str = "") -> str:
    """(12, 12) -> '12x12'; unknown entries print as '?'."""
    if values is None:
        return "-"
    return "x".join(_number(v) for v in values) + footnote


def _rows(report):
    notes: dict[str, int] = {}
    rows = []
    for info in report.layers:
        mark = ""
        if info.unknown_reason:
            number = notes.setdefault(info.unknown_reason, len(notes) + 1)
            mark = f" [{number}]"
        if info.sees_whole_input:
            rf = format_axes(info.receptive_field) + " (all)" + mark
        elif info.receptive_field is None and info.unknown_reason:
            rf = "?" + mark
        else:
            rf = format_axes(info.receptive_field, mark)
        name = "  " * info.depth + f"{info.name} ({info.class_name})"
        if info.shared:
            name += f" [call {info.call_index}]"
        rows.append([
            name,
            str(info.output_shape if len(info.output_shapes) == 1 else info.output_shapes),
            rf,
            format_axes(info.effective_stride),
            format_axes(info.effective_padding),
            "?" if info.activation_count is None else f"{info.activation_count:,}",
            human_bytes(info.activation_bytes),
            f"{info.params:,}",
        ])
    return rows, notes


def footer_lines(report) -> list[str]:
    batch = report.batch_size
    per_sample = report.activation_bytes_per_sample
    lines = [
        f"Total params: {report.total_params:,} "
        f"(trainable {report.trainable_params:,}, non-trainable {report.non_trainable_params:,})",
        f"Activation memory: {human_bytes(per_sample)} per sample, "
        f"{human_bytes(report.total_activation_bytes)} per batch of {batch}",
    ]
    last = report.last_spatial_layer
    size = report.input_spatial_size
    if last is not None and size is not None:
        covers = report.covers_input()
        verdict = {True: "covers the whole input", False: "does NOT cover the whole input",
                   None: "coverage unknown"}[covers]
        lines.append(f"Receptive field of {last.name} (last spatial layer): "
                     f"{format_axes(last.receptive_field)} on a {format_axes(size)} input: {verdict}")
    if report.training_memory is not None:
        lines.extend(str(report.training_memory).splitlines())
    return lines


COLALIGN = ("left", "left", "right", "right", "right", "right", "right", "right")


def _after_table(report, notes) -> list[str]:
    lines = [f"[{number}] ? = cannot be known: {reason}" for reason, number in notes.items()]
    lines.extend(footer_lines(report))
    lines.extend(f"Warning: {warning}" for warning in report.warnings)
    return lines


def render_report(report, tablefmt: str = "simple") -> str:
    rows, notes = _rows(report)
    table = tabulate(rows, headers=HEADERS, tablefmt=tablefmt, disable_numparse=True,
                     colalign=COLALIGN)
    return "\n".join([f'Model: "{report.model_name}"', table] + _after_table(report, notes))


def render_markdown(report) -> str:
    """Blank lines around the table and between footer lines: Markdown would
    otherwise read the lines next to a table as more rows."""
    rows, notes = _rows(report)
    table = tabulate(rows, headers=HEADERS, tablefmt="pipe", disable_numparse=True,
                     colalign=COLALIGN)
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731
    blocks = [f'**Model: "{escape(report.model_name)}"**', table]
    blocks += [escape(line.strip()) for line in _after_table(report, notes)]
    return "\n\n".join(blocks)


def render_html(report) -> str:
    rows, notes = _rows(report)
    table = tabulate(rows, headers=HEADERS, tablefmt="html", disable_numparse=True,
                     colalign=COLALIGN)
    parts = [f"<div class='keras-rf'><p><b>Model: {html.escape(report.model_name)}</b></p>", table]
    parts.extend(f"<p>{html.escape(line)}</p>" for line in _after_table(report, notes))
    parts.append("</div>")
    return "\n".join(parts)
