"""Scene (or any single-label) classification metrics: overall accuracy, per-class accuracy and
the confusion matrix, on host in numpy.

Overall accuracy (OA) is what remote-sensing papers report on NWPU-RESISC45; the per-class
accuracy (each class's recall) and their mean (average accuracy, AA) show what OA hides when a
few classes fail. The confusion matrix has true classes in rows, predictions in columns, as
scikit-learn's ``confusion_matrix``.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxaudio.errors import ShapeError


@dataclasses.dataclass(frozen=True)
class ClassificationResult:
    accuracy: float                 # overall accuracy: correct / all
    average_accuracy: float         # mean of the per-class accuracies of classes with examples
    per_class: dict[str, float]     # class name -> recall (NaN for a class with no examples)
    confusion: np.ndarray           # (classes, classes): rows true, columns predicted
    class_names: tuple[str, ...]

    def to_dict(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy, "average_accuracy": self.average_accuracy}
        out.update({f"class/{name}/accuracy": value for name, value in self.per_class.items()})
        return out


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    labels, predictions = np.asarray(labels, np.int64).reshape(-1), np.asarray(predictions, np.int64).reshape(-1)
    if labels.shape != predictions.shape:
        raise ShapeError(f"confusion_matrix: {labels.shape[0]} labels but {predictions.shape[0]} predictions")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ShapeError(f"confusion_matrix: {name} outside [0, {n_classes})")
    out = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(out, (labels, predictions), 1)
    return out


def classification_metrics(labels: np.ndarray, logits_or_predictions: np.ndarray,
                           class_names: Sequence[str]) -> ClassificationResult:
    """``labels`` ``(n,)``; scores ``(n, classes)`` (argmax taken) or predicted ids ``(n,)``."""
    scores = np.asarray(logits_or_predictions)
    predictions = scores.argmax(axis=-1) if scores.ndim == 2 else scores
    n_classes = len(class_names)
    if scores.ndim == 2 and scores.shape[1] != n_classes:
        raise ShapeError(f"classification_metrics: {scores.shape[1]} scores per row for {n_classes} classes")
    matrix = confusion_matrix(labels, predictions, n_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)
    total = matrix.sum()
    return ClassificationResult(
        accuracy=float(np.trace(matrix) / total) if total else float("nan"),
        average_accuracy=float(np.nanmean(recall)) if np.any(support > 0) else float("nan"),
        per_class={name: float(r) for name, r in zip(class_names, recall)},
        confusion=matrix, class_names=tuple(class_names))


def per_class_markdown(result: ClassificationResult) -> str:
    lines = ["| class | examples | accuracy |", "|---|---|---|"]
    for i, name in enumerate(result.class_names):
        lines.append(f"| {name} | {int(result.confusion[i].sum())} | {result.per_class[name]:.3f} |")
    lines.append(f"| **overall** | {int(result.confusion.sum())} | {result.accuracy:.3f} |")
    return "\n".join(lines)
