"""Sound event detection: frame probabilities -> post-processing -> PSDS1/PSDS2 and three F1s.

One evaluator for every SED system, so validation during training, the final evaluation,
export verification and predict mode post-process and score frame probabilities the same way.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from jaxaudio.data.sed.labels import max_filter, median_filter
from jaxaudio.data.source import eval_batches
from jaxaudio.metrics.frame_auc import frame_auc
from jaxaudio.metrics.sed import collar_f1, intersection_f1, plot_psd_roc, psds1, psds2, segment_f1

STRONG = "strong"


def collect_scores(source, predict, batch_size: int, output: str = STRONG) -> dict[str, np.ndarray]:
    """``{clip_id: output (T, K)}`` over a whole ClipSource, in its order.

    ``predict(host_batch)`` returns every row of the global batch (replicated outputs), so
    every process sees all clips; padding rows carry index -1 and are dropped.
    """
    scores = {}
    for batch in eval_batches(source, batch_size, shard_index=jax.process_index(), shard_count=jax.process_count()):
        out = predict(batch)
        values, index = np.asarray(out[output]), np.asarray(out["index"])
        for row, i in enumerate(index):
            if i >= 0:
                scores[source.records[int(i)].clip_id] = values[row]
    return scores


def postprocess(scores: dict[str, np.ndarray], median_window) -> dict[str, np.ndarray]:
    """The systems' post-processing: a class-wise median filter over time."""
    return {clip: median_filter(s, median_window) for clip, s in scores.items()}


def _references(filtered: dict[str, np.ndarray], source):
    """(timestamps, truth, durations, classes, frame targets) of the clips in ``filtered``."""
    encoder = source.encoder
    truth, durations, frames = {}, {}, {}
    for record in source.records:
        if record.clip_id in filtered:
            truth[record.clip_id] = list(record.events or [])
            durations[record.clip_id] = record.duration or encoder.clip_seconds
            frames[record.clip_id] = encoder.encode_strong(truth[record.clip_id])
    return encoder.timestamps(), truth, durations, list(encoder.classes), frames


def score_clips(filtered: dict[str, np.ndarray], source, *, plot_path: Optional[str] = None,
                title: str = "") -> dict[str, float]:
    """PSDS1/PSDS2 (exact, threshold-free), intersection/collar/segment F1 at 0.5 and the
    frame ROC AUC of post-processed scores against the source's reference events."""
    timestamps, truth, durations, classes, frames = _references(filtered, source)
    args = (filtered, timestamps, truth, durations, classes)
    p1, p2 = psds1(*args), psds2(*args)
    if plot_path:
        plot_psd_roc(p1, plot_path, title=f"{title} PSDS1 = {p1.value:.3f}".strip())
    return {
        "psds1": float(p1.value),
        "psds2": float(p2.value),
        "intersection_f1": float(intersection_f1(*args)[0]),
        "collar_f1": float(collar_f1(*args)[0]),
        "segment_f1": float(segment_f1(*args)[0]),
        "frame_auc": frame_auc(filtered, frames),
    }


@dataclasses.dataclass
class SEDEvaluator:
    """PSDS and F1 of frame probabilities (output ``strong``) on one labelled subset.

    source: a function building the ClipSource (called once, when first needed: the data may
    have to be generated). median_window: one length (frames) for all classes or one per class.
    max_filter_psds2: also report ``psds2_max_filter``, PSDS2 after a class-wise maximum filter
    of the same windows instead of the median (MAT-SED's PSDS2 post-processing).
    """

    source_fn: Callable[[], object]
    batch_size: int
    median_window: int | Sequence[int]
    primary_metric: str = "psds1"
    output: str = STRONG
    max_filter_psds2: bool = False
    _source: object = dataclasses.field(default=None, init=False, repr=False)

    @property
    def source(self):
        if self._source is None:
            self._source = self.source_fn()
        return self._source

    def postprocess(self, scores: np.ndarray) -> np.ndarray:
        """One clip's (or file's) scores ``(time, classes)`` -> post-processed."""
        return median_filter(scores, self.median_window)

    def scores(self, predict) -> dict[str, np.ndarray]:
        """Post-processed scores of every clip."""
        return postprocess(collect_scores(self.source, predict, self.batch_size, self.output), self.median_window)

    def run(self, predict, *, plot_dir: Optional[str] = None, plot_prefix: str = "", title: str = "") -> dict:
        plot = os.path.join(plot_dir, f"{plot_prefix}_psd_roc.png") if plot_dir else None
        raw = collect_scores(self.source, predict, self.batch_size, self.output)
        metrics = score_clips(postprocess(raw, self.median_window), self.source, plot_path=plot, title=title)
        if self.max_filter_psds2:
            widened = {clip: max_filter(s, self.median_window) for clip, s in raw.items()}
            timestamps, truth, durations, classes, _ = _references(widened, self.source)
            metrics["psds2_max_filter"] = float(psds2(widened, timestamps, truth, durations, classes).value)
        return metrics

    def score_arrays(self, outputs: dict[str, np.ndarray], clip_ids: Sequence[str]) -> dict[str, float]:
        """Metrics of outputs already computed for ``clip_ids`` (export verification)."""
        raw = {clip: np.asarray(outputs[self.output][i]) for i, clip in enumerate(clip_ids)}
        return score_clips(postprocess(raw, self.median_window), self.source)
