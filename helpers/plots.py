"""Figures for the labs: weight histograms, sensitivity scans, masks and tables.

Every function returns a ``matplotlib.figure.Figure`` and shows nothing itself. Figures are
made without pyplot, so they need no display (saving uses matplotlib's Agg renderer), hold no
global state and never pile up in a long run. In a notebook, make the figure the last
expression of a cell (or ``display(fig)``) to show it once; ``fig.savefig(path)`` writes it.
``plt.show()`` does not know these figures.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from torch import nn

from helpers.metrics import get_sparsity, masked_name

KEPT_COLOR = "#1f77b4"  # weights that stay (and the main data series)
PRUNED_COLOR = "#d9d9d9"  # weights set to zero
REFERENCE_COLOR = "#404040"  # the dense model
THRESHOLD_COLOR = "#d62728"  # acceptance thresholds
HEADER_COLOR = "#e8eef6"
PANEL_SIZE = (3.4, 2.5)  # inches per panel in grids
MAX_COLUMNS = 3


def _figure_png(fig: Figure) -> bytes | None:
    """The figure as PNG bytes, for notebook display; None while autograding.

    Under autograding (``NBGRADER_EXECUTION`` set) no verdict looks at a figure, and drawing
    them is a large part of a smoke run, so the figure shows as its text form instead.
    Constrained layout keeps axes, titles and legends inside the figure, so only figures
    holding a table (which can be wider than its axes) are cropped to their content:
    ``bbox_inches="tight"`` costs one more layout pass, about 15% of the drawing time.
    """
    if os.environ.get("NBGRADER_EXECUTION"):
        return None
    has_table = any(ax.tables for ax in fig.axes)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight" if has_table else None)
    return buffer.getvalue()


def _enable_notebook_display() -> None:
    """Let IPython show a returned Figure as a PNG, even before pyplot is set up."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    formatters = getattr(getattr(shell, "display_formatter", None), "formatters", None)
    if not formatters or "image/png" not in formatters:
        return
    png = formatters["image/png"]
    try:
        png.lookup_by_type(Figure)  # already registered, e.g. by the inline backend
    except KeyError:
        png.for_type(Figure, _figure_png)


def new_figure(figsize: tuple[float, float]) -> Figure:
    _enable_notebook_display()
    return Figure(figsize=figsize, layout="constrained")


def _panel_grid(num_panels: int, sharey: bool = False) -> tuple[Figure, list[Any]]:
    """A figure with exactly ``num_panels`` axes laid out in rows of ``MAX_COLUMNS``."""
    ncols = max(1, min(num_panels, MAX_COLUMNS))
    nrows = max(1, math.ceil(num_panels / ncols))
    fig = new_figure((PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows))
    axes = list(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel())
    for ax in axes[num_panels:]:
        fig.delaxes(ax)
    return fig, axes[:num_panels]


def _weight_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Conv and linear weights: the parameters with two or more dimensions, in the order of
    ``model.named_parameters()``. Where a ``torch.nn.utils.prune`` mask is still attached, the
    masked ``weight`` the module computes with stands in for the unmasked ``weight_orig``, under
    the name ``...weight``, so a plot drawn before ``prune.remove`` shows the pruned weights."""
    tensors = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if param.dim() < 2 or id(param) in seen:
                continue
            seen.add(id(param))
            masked = masked_name(module, name)
            if masked is not None:
                name, param = masked, getattr(module, masked)
            tensors.append((f"{module_name}.{name}" if module_name else name, param.detach()))
    return tensors


def _compact(count: float) -> str:
    """A count in about three significant digits: 2359296 -> '2.36M'."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= limit:
            return f"{count / limit:.3g}{suffix}"
    return f"{count:.0f}"


def plot_weight_distribution(
    model: nn.Module, bins: int = 256, count_nonzero_only: bool = False
) -> Figure:
    """Histogram of the values of each conv/linear weight tensor, one panel per tensor.

    With ``count_nonzero_only`` the zeros (pruned weights) are left out, which shows the gap
    that magnitude pruning cuts around zero.
    """
    weights = _weight_tensors(model)
    if not weights:
        raise ValueError("the model has no conv or linear weights (parameters with 2+ dims)")
    fig, axes = _panel_grid(len(weights))
    for ax, (name, weight) in zip(axes, weights, strict=True):
        values = weight.flatten().float().cpu().numpy()
        if count_nonzero_only:
            values = values[values != 0]
        if values.size:
            # One step artist instead of ax.hist's one patch per bin: ~10x faster to draw.
            density, edges = np.histogram(values, bins=bins, density=True)
            ax.stairs(density, edges, fill=True, color=KEPT_COLOR, alpha=0.75)
        else:
            ax.text(0.5, 0.5, "all zero", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{name}, sparsity {get_sparsity(weight):.2f}", fontsize=9)
    which = "nonzero weights" if count_nonzero_only else "all weights"
    fig.suptitle(f"Weight distribution per layer ({which})")
    fig.supxlabel("weight value")
    fig.supylabel("density")
    return fig


def plot_sensitivity_scan(
    sparsities: Sequence[float],
    accuracies: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    dense_accuracy: float,
    error_growth: float = 1.5,
) -> Figure:
    """Accuracy after pruning one layer at a time, one panel per layer.

    Args:
        sparsities: the sparsities tried (fraction of weights removed), the x axis.
        accuracies: layer name -> top-1 accuracy (%) at each sparsity. A list of lists
            (as returned by the MIT lab's ``sensitivity_scan``) is accepted too.
        dense_accuracy: top-1 accuracy (%) of the unpruned model, drawn as a solid line.
        error_growth: also draw a dashed threshold where the error rate is this many times
            the dense one, ``100 - (100 - dense_accuracy) * error_growth`` (the MIT lab
            uses 1.5).
    """
    if not isinstance(accuracies, Mapping):
        accuracies = {f"layer {i}": acc for i, acc in enumerate(accuracies)}
    if not accuracies:
        raise ValueError("accuracies is empty: scan at least one layer")
    for name, acc in accuracies.items():
        if len(acc) != len(sparsities):
            raise ValueError(
                f"{name}: {len(acc)} accuracies for {len(sparsities)} sparsities; "
                "give one accuracy per sparsity"
            )
    threshold = 100 - (100 - dense_accuracy) * error_growth
    fig, axes = _panel_grid(len(accuracies), sharey=True)
    for ax, (name, acc) in zip(axes, accuracies.items(), strict=True):
        ax.plot(sparsities, acc, marker="o", color=KEPT_COLOR, label="after pruning")
        ax.axhline(
            dense_accuracy,
            color=REFERENCE_COLOR,
            linewidth=1,
            label=f"dense model ({dense_accuracy:.2f}%)",
        )
        ax.axhline(
            threshold,
            color=THRESHOLD_COLOR,
            linestyle="--",
            linewidth=1,
            label=f"error x{error_growth:g} of dense ({threshold:.2f}%)",
        )
        ax.set_title(name, fontsize=9)
        ax.set_xticks(list(sparsities))
        ax.grid(alpha=0.3)
    ncols = min(len(axes), MAX_COLUMNS)
    for index, ax in enumerate(axes):
        if index + ncols >= len(axes):  # lowest panel of its column
            # Per-axes labels: constrained layout overlaps fig.supxlabel and an outside legend.
            ax.set_xlabel("sparsity (fraction pruned)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle("Sensitivity of each layer to pruning")
    fig.supylabel("top-1 accuracy (%)")
    return fig


def plot_num_parameters_distribution(model: nn.Module, count_nonzero_only: bool = False) -> Figure:
    """Number of parameters in each conv/linear weight tensor, one bar per tensor.

    With ``count_nonzero_only`` the nonzero count is drawn over the total as a second bar.
    """
    weights = _weight_tensors(model)
    if not weights:
        raise ValueError("the model has no conv or linear weights (parameters with 2+ dims)")
    names = [name for name, _ in weights]
    totals = [w.numel() for _, w in weights]
    fig = new_figure((max(6.0, 0.8 * len(names) + 2), 4.5))
    ax = fig.subplots()
    positions = np.arange(len(names))
    bars = ax.bar(positions, totals, color=PRUNED_COLOR if count_nonzero_only else KEPT_COLOR)
    labels = [_compact(t) for t in totals]
    if count_nonzero_only:
        bars.set_label("all")
        nonzero = [int(w.count_nonzero()) for _, w in weights]
        ax.bar(positions, nonzero, color=KEPT_COLOR, label="nonzero")
        labels = [f"{_compact(n)}/{_compact(t)}" for n, t in zip(nonzero, totals, strict=True)]
        ax.legend()
    ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: _compact(y)))
    ax.set_xticks(positions, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("number of parameters")
    ax.margins(y=0.12)  # room for the bar labels
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title("Parameters per layer")
    return fig


def _as_numpy(tensor: Any) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().cpu().numpy()
    return np.asarray(tensor)


def plot_mask(mask: torch.Tensor | np.ndarray, title: str | None = None) -> Figure:
    """Which elements a small mask keeps (nonzero) and prunes (zero), as an image.

    A 2-D mask (rows, cols) is one grid of cells. A 4-D conv mask (out, in, kh, kw) is a
    mosaic of kh x kw kernels: output channels down, input channels across. A 1-D mask is
    one row, a 3-D one a single output channel. Also accepts a weight tensor (zeros pruned).
    """
    kept = _as_numpy(mask) != 0
    shape = "x".join(str(s) for s in kept.shape)
    if kept.ndim == 0 or kept.ndim > 4:
        raise ValueError(f"plot_mask draws 1-D to 4-D masks, got shape ({shape})")
    if kept.ndim == 1:
        kept = kept[None, :]
    if kept.ndim == 3:
        kept = kept[None]
    image = kept.astype(float)
    if kept.ndim == 4:
        out_ch, in_ch, kh, kw = kept.shape
        # NaN rows/columns separate the kernels; they are drawn in white.
        image = np.full((out_ch * (kh + 1) - 1, in_ch * (kw + 1) - 1), np.nan)
        for o in range(out_ch):
            for i in range(in_ch):
                image[o * (kh + 1) : o * (kh + 1) + kh, i * (kw + 1) : i * (kw + 1) + kw] = kept[
                    o, i
                ]
    height, width = image.shape
    scale = 0.35 if max(height, width) <= 24 else 8.0 / max(height, width)
    fig = new_figure((max(3.5, width * scale + 1.0), max(2.5, height * scale + 1.6)))
    ax = fig.subplots()
    cmap = ListedColormap([PRUNED_COLOR, KEPT_COLOR]).with_extremes(bad="white")
    ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    if kept.ndim == 4:
        out_ch, in_ch, kh, kw = kept.shape
        ax.set_xticks([i * (kw + 1) + (kw - 1) / 2 for i in range(in_ch)], range(in_ch))
        ax.set_yticks([o * (kh + 1) + (kh - 1) / 2 for o in range(out_ch)], range(out_ch))
        ax.set_xlabel("input channel")
        ax.set_ylabel("output channel")
        ax.tick_params(length=0)
    else:
        if max(height, width) <= 32:
            ax.set_xticks(np.arange(-0.5, width), minor=True)
            ax.set_yticks(np.arange(-0.5, height), minor=True)
            ax.grid(which="minor", color="white", linewidth=1)
            ax.tick_params(which="minor", length=0)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    for side in ax.spines.values():
        side.set_visible(False)
    num_kept = int(kept.sum())
    ax.set_title(
        f"{title or 'Mask'} ({shape})\n"
        f"{num_kept}/{kept.size} kept, sparsity {1 - num_kept / max(kept.size, 1):.2f}",
        fontsize=10,
    )
    fig.legend(
        handles=[
            Patch(color=KEPT_COLOR, label="kept (nonzero)"),
            Patch(color=PRUNED_COLOR, label="pruned (zero)"),
        ],
        loc="outside lower center",
        ncols=2,
        fontsize=8,
    )
    return fig


def format_cell(value: Any) -> str:
    """A table cell: ints with thousands separators, floats to about 4 significant digits."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def plot_comparison_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """A table of ``rows`` (e.g. one per model: before / after pruning) as a figure.

    Columns are the dicts' keys in order of first appearance; a missing key is an empty
    cell. Numbers are formatted by ``format_cell``; text is left-aligned, numbers right.
    """
    if not rows:
        raise ValueError("rows is empty: give at least one dict")
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[format_cell(row.get(key)) for key in columns] for row in rows]
    numeric = [
        all(
            isinstance(row.get(key), int | float | np.number | torch.Tensor | None)
            and not isinstance(row.get(key), bool)
            for row in rows
        )
        for key in columns
    ]
    widths = [
        max(len(str(key)), *(len(line[j]) for line in cells)) for j, key in enumerate(columns)
    ]
    fig = new_figure(
        (max(3.0, 0.075 * sum(widths) + 0.25 * len(columns)), 0.3 * (len(rows) + 1) + 0.6)
    )
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=columns, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.auto_set_column_width(list(range(len(columns))))
    for (r, c), cell in table.get_celld().items():
        cell.set_edgecolor("#bbbbbb")
        cell.set_height(1.0 / (len(rows) + 1))
        if r == 0:
            cell.set_facecolor(HEADER_COLOR)
            cell.set_text_props(weight="bold", ha="center")
        else:
            cell.set_text_props(ha="right" if numeric[c] else "left")
            if r % 2 == 0:
                cell.set_facecolor("#f7f7f7")
    if title:
        ax.set_title(title, fontweight="bold")
    return fig
