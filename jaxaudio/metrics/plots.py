"""Figures for SED metrics, written as PNG files next to the metrics they show."""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxaudio.metrics.psds import PSDSResult


def plot_psd_roc(result: PSDSResult, path: os.PathLike | str, title: str | None = None) -> str:
    """Draw the effective PSD-ROC (area shaded, PSDS in the legend) over the per-class curves.

    Uses the Agg canvas directly, so it works headless and leaves pyplot's state alone.
    Returns the path written.
    """
    max_efpr = float(result.params.get("max_efpr", result.efpr[-1]))
    unit = result.params.get("unit_of_time", "hour")
    fig = Figure(figsize=(9, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, (efpr, tpr) in result.per_class.items():
        x, y = _extend_to(efpr, tpr, max_efpr)
        ax.step(x, y, where="post", linewidth=0.8, alpha=0.6, label=name)
    x, y = _extend_to(result.efpr, result.effective_tpr, max_efpr)
    ax.fill_between(x, y, step="post", alpha=0.2, color="black")
    ax.step(x, y, where="post", linewidth=2.0, color="black", label=f"effective, PSDS = {result.value:.4f}")
    ax.set_xlim(0, max_efpr)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"effective false positive rate (per {unit})")
    ax.set_ylabel("true positive ratio")
    ax.set_title(title or "PSD-ROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    return os.fspath(path)


def _extend_to(x, y, max_x):
    """Append the point (max_x, last y) so that a staircase reaches the right edge."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or x[-1] < max_x:
        x = np.r_[x, max_x]
        y = np.r_[y, y[-1] if len(y) else 0.0]
    return x, y
