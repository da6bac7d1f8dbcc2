"""Single-label classification (scene images, or clips of a class): logits per item -> overall and
per-class accuracy, a confusion-matrix PNG, the per-class table and every item's prediction.

A system's ``predict`` returns ``{"logits": (rows, classes)}``; the labels come from the source's
``labels`` (one int per item, in its order), so padding rows (index -1) need no label.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Callable, Optional, Sequence

import numpy as np

from jaxaudio.evaluators.base import collect_rows
from jaxaudio.metrics.classification import classification_metrics, per_class_markdown
from jaxaudio.metrics.classification_plots import plot_confusion_matrix

LOGITS = "logits"


def collect_logits(source, predict, batch_size: int, output: str = LOGITS) -> np.ndarray:
    """``(len(source), classes)`` in the source's order; padding rows dropped."""
    return collect_rows(source, predict, batch_size, output)


@dataclasses.dataclass
class ClassificationEvaluator:
    """source_fn: builds the Source (it has ``labels`` and, for the CSV, ``files``), called when
    first needed; class_names: in label order."""

    source_fn: Callable[[], object]
    batch_size: int
    class_names: Sequence[str]
    primary_metric: str = "accuracy"
    output: str = LOGITS
    _source: object = dataclasses.field(default=None, init=False, repr=False)

    @property
    def source(self):
        if self._source is None:
            self._source = self.source_fn()
        return self._source

    def run(self, predict, *, plot_dir: Optional[str] = None, plot_prefix: str = "", title: str = "") -> dict:
        return self.score_arrays({self.output: collect_logits(self.source, predict, self.batch_size, self.output)},
                                 plot_dir=plot_dir, plot_prefix=plot_prefix, title=title)

    def score_arrays(self, outputs: dict, item_ids: Optional[Sequence[int]] = None, *,
                     plot_dir: Optional[str] = None, plot_prefix: str = "", title: str = "") -> dict:
        """Metrics of outputs already computed; ``item_ids``: the source positions they belong to
        (None: the whole source in order), as export verification scores a subset."""
        logits = np.asarray(outputs[self.output], np.float64)
        labels = np.asarray(self.source.labels, np.int64)
        ids = np.arange(len(labels)) if item_ids is None else np.asarray(item_ids, np.int64)
        labels = labels[ids]
        result = classification_metrics(labels, logits, self.class_names)
        if plot_dir:
            prefix = f"{plot_prefix}_" if plot_prefix else ""
            plot_confusion_matrix(result, os.path.join(plot_dir, f"{prefix}confusion.png"), title=title or None)
            with open(os.path.join(plot_dir, f"{prefix}per_class.md"), "w") as f:
                f.write(per_class_markdown(result) + "\n")
            files = getattr(self.source, "files", None)
            with open(os.path.join(plot_dir, f"{prefix}predictions.csv"), "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["path", "label", "predicted", "confidence"])
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                for row, (i, label) in enumerate(zip(ids, labels)):
                    path = str(files[i]) if files is not None else str(i)
                    writer.writerow([path, self.class_names[label], self.class_names[int(probs[row].argmax())],
                                     f"{probs[row].max():.4f}"])
        return result.to_dict()
