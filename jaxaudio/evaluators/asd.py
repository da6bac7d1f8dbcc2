"""Anomalous sound detection: one anomaly score per clip -> AUC and pAUC per machine ID.

One evaluator for every ASD system (GeCo, the ID classifier, the DCASE autoencoder), so
validation, the final evaluation, export verification and predict mode score alike. A system's
``predict`` returns ``{"score": (rows,)}``: higher is more anomalous.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Callable, Optional, Sequence

import numpy as np

from jaxaudio.evaluators.base import collect_rows
from jaxaudio.metrics.asd import ScoreRecord, asd_metrics, per_id_table_markdown
from jaxaudio.metrics.asd_plots import plot_roc_curves

SCORE = "score"


def collect_clip_scores(source, predict, batch_size: int, output: str = SCORE) -> np.ndarray:
    """``(len(source),)`` scores in the source's order; padding rows (index -1) are dropped."""
    return collect_rows(source, predict, batch_size, output).reshape(len(source))


def score_records(source, scores: np.ndarray) -> list[ScoreRecord]:
    """The labelled files of ``source`` with their scores (unlabelled eval clips are left out)."""
    return [ScoreRecord(str(f.path), f.machine_type, f.machine_id, int(f.label), float(s))
            for f, s in zip(source.files, scores) if f.label is not None]


def write_scores_csv(records: Sequence[ScoreRecord], path: str) -> None:
    """Every scored clip (file, machine type, ID, label, score): what the per-ID figures came from,
    for a reader who wants other cuts of them (the built-in set's anomaly kinds, say)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "machine_type", "machine_id", "label", "score"])
        for r in records:
            writer.writerow([r.path, r.machine_type, r.machine_id, r.label, repr(float(r.score))])


@dataclasses.dataclass
class ASDEvaluator:
    """AUC, pAUC (McClish, as the official DCASE2020 code) and pAUC (raw area / p) of clip
    scores on one labelled test set: per machine ID, per machine type (mean over its IDs) and
    overall (mean over types). Plots: ROC curves per type; the per-ID table as Markdown;
    every clip's score as CSV.

    source_fn: builds the ``ASDClipSource`` (called once, when first needed: the data may have to
    be generated).
    """

    source_fn: Callable[[], object]
    batch_size: int
    max_fpr: float = 0.1
    primary_metric: str = "auc"
    output: str = SCORE
    _source: object = dataclasses.field(default=None, init=False, repr=False)

    @property
    def source(self):
        if self._source is None:
            self._source = self.source_fn()
        return self._source

    def scores(self, predict) -> np.ndarray:
        return collect_clip_scores(self.source, predict, self.batch_size, self.output)

    def run(self, predict, *, plot_dir: Optional[str] = None, plot_prefix: str = "", title: str = "") -> dict:
        return self.score_arrays({self.output: self.scores(predict)}, None, plot_dir=plot_dir,
                                 plot_prefix=plot_prefix, title=title)

    def score_arrays(self, outputs: dict, clip_ids: Optional[Sequence[int]] = None, *,
                     plot_dir: Optional[str] = None, plot_prefix: str = "", title: str = "") -> dict:
        """Metrics of scores already computed; ``clip_ids``: the source positions they belong to
        (None: the whole source in order), as export verification scores a subset."""
        values = np.asarray(outputs[self.output], np.float64).reshape(-1)
        if clip_ids is None:
            scores = values
        else:
            scores = np.full(len(self.source), np.nan)
            scores[np.asarray(clip_ids, int)] = values
        records = [r for r in score_records(self.source, scores) if np.isfinite(r.score)]
        result = asd_metrics(records, max_fpr=self.max_fpr)
        if plot_dir:
            prefix = f"{plot_prefix}_" if plot_prefix else ""
            plot_roc_curves(records, os.path.join(plot_dir, f"{prefix}roc.png"), title=title or None,
                            max_fpr=self.max_fpr)
            with open(os.path.join(plot_dir, f"{prefix}per_id.md"), "w") as f:
                f.write(per_id_table_markdown(result) + "\n")
            write_scores_csv(records, os.path.join(plot_dir, f"{prefix}scores.csv"))
        return result.to_dict()
