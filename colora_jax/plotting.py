"""Shared matplotlib helpers for the figures in figures/ (headless: the Agg backend)."""

from __future__ import annotations

import os

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def panels(count: int, width: float = 4.6, height: float = 3.6, rows: int = 1):
    """A figure with ``count`` panels in ``rows`` rows; returns ``(fig, flat list of axes)``."""
    cols = -(-count // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.remove()
    return fig, list(axes.flat[:count])


def save(fig, path: str | os.PathLike, title: str | None = None) -> str:
    """Tight layout, optional suptitle, write the PNG (directory created), close; returns the path."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def band(ax, x, values, label: str, color=None, marker: str = "o", log: bool = False):
    """Median over trials (axis 1 of ``values``) with the 25-75% band; returns the line."""
    values = np.asarray(values, dtype=float)
    if log:
        values = np.log10(values)
    lo, mid, hi = np.nanpercentile(values, [25, 50, 75], axis=1)
    if log:
        lo, mid, hi = 10**lo, 10**mid, 10**hi
    (line,) = ax.plot(x, mid, marker=marker, ms=4, label=label, color=color)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
    return line


def fitted_line(ax, x, slope: float, intercept: float, label: str, **style):
    """Draw ``y = 10**intercept * x**slope`` (a straight line on log-log axes)."""
    x = np.asarray(x, dtype=float)
    ax.plot(x, 10**intercept * x**slope, ls="--", color=style.pop("color", "k"), lw=1, label=label, **style)


def grid_axes(
    ax, xlabel: str, ylabel: str, xlog: bool = False, ylog: bool = False, title: str | None = None, xticks=None
):
    """Labels, log scales, a light grid and a legend (when something is labelled).

    ``xticks``: label exactly these x values (plain numbers, no minor labels), e.g. the swept k.
    """
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlog:
        ax.set_xscale("log")
    if xticks is not None:
        ax.set_xticks(list(xticks), [f"{t:g}" for t in xticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ylog:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
