"""The confusion-matrix figure, written as PNG next to the metrics it shows."""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxaudio.metrics.classification import ClassificationResult


def plot_confusion_matrix(result: ClassificationResult, path: os.PathLike | str, title: str | None = None) -> str:
    """Rows (true classes) normalised to 1, so a class's row reads as where its images went; the
    counts are written in the cells when the matrix is small enough to read. Returns the path."""
    matrix = result.confusion.astype(np.float64)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    n = len(result.class_names)
    side = max(4.0, 0.32 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rows, vmin=0.0, vmax=1.0, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), result.class_names, rotation=90, fontsize=7 if n > 20 else 9)
    ax.set_yticks(range(n), result.class_names, fontsize=7 if n > 20 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if result.confusion[i, j]:
                    ax.text(j, i, str(int(result.confusion[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title(f"{title + ': ' if title else ''}accuracy {result.accuracy:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    return str(path)
