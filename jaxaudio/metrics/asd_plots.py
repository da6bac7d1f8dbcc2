"""ROC figures for anomalous sound detection, written as PNG next to the metrics they show."""
from __future__ import annotations

import math
import os
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxaudio.metrics.asd import ScoreRecord, group_arrays, partial_auc_mcclish, roc_auc, roc_curve


def plot_roc_curves(records: Sequence[ScoreRecord], path: os.PathLike | str, title: str | None = None,
                    max_fpr: float = 0.1) -> str:
    """One panel per machine type, one ROC per machine ID (AUC and McClish pAUC in the legend).

    The dotted diagonal is chance; the dashed vertical line marks FPR = max_fpr, the left edge of
    which the pAUC measures. Uses the Agg canvas directly (headless, leaves pyplot alone).
    Returns the path written.
    """
    groups = group_arrays(records)
    types = sorted({t for t, _ in groups})
    n_cols = min(3, len(types))
    n_rows = math.ceil(len(types) / n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 4.0 * n_rows), dpi=100)
    FigureCanvasAgg(fig)
    for k, mtype in enumerate(types):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        for (t, mid), (labels, scores) in groups.items():
            if t != mtype:
                continue
            fpr, tpr = roc_curve(labels, scores)
            auc = roc_auc(labels, scores)
            pauc = partial_auc_mcclish(labels, scores, max_fpr)
            ax.plot(fpr, tpr, linewidth=1.2, label=f"{mid}: AUC {100 * auc:.1f}, pAUC {100 * pauc:.1f}")
        ax.plot([0, 1], [0, 1], linestyle=":", color="gray", linewidth=0.8)
        ax.axvline(max_fpr, linestyle="--", color="black", linewidth=0.8, label=f"FPR = {max_fpr:g}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_title(mtype)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "ROC per machine ID (AUC / pAUC (McClish) in %)")
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    return os.fspath(path)
