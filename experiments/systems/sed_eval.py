"""Evaluation shared by the SED systems: frame probabilities -> PSDS1/PSDS2, F1s, PSD-ROC plot."""
from __future__ import annotations

import json

import jax
import numpy as np

from jaxaudio.data.labels import median_filter
from jaxaudio.data.pipeline import ClipSource, eval_batches
from jaxaudio.io import paths
from jaxaudio.metrics.sed import collar_f1, intersection_f1, plot_psd_roc, psds1, psds2, segment_f1


def predict_subset(source: ClipSource, predict, batch_size: int, to_device) -> dict[str, np.ndarray]:
    """Run ``predict(device_batch) -> (strong (B, T, K), weak (B, K))`` over a whole subset.

    Returns ``{clip_id: strong probabilities (T, K)}`` in the source's order. Outputs are
    replicated, so every process sees all clips.
    """
    scores = {}
    for batch in eval_batches(source, batch_size, shard_index=jax.process_index(), shard_count=jax.process_count()):
        strong, index = predict(to_device(batch))
        strong, index = np.asarray(strong), np.asarray(index)
        for row, i in enumerate(index):
            if i >= 0:
                scores[source.records[int(i)].clip_id] = strong[row]
    return scores


def sed_metrics(scores: dict, source: ClipSource, median_window: int, *, plot_path: str | None = None,
                title: str = "") -> dict[str, float]:
    """PSDS1/PSDS2 (exact, threshold-free) and the three F1 variants at 0.5 on median-filtered scores."""
    encoder = source.encoder
    classes = list(encoder.classes)
    timestamps = encoder.timestamps()
    filtered = {clip: median_filter(s, median_window) for clip, s in scores.items()}
    truth, durations = {}, {}
    for record in source.records:
        if record.clip_id in filtered:
            truth[record.clip_id] = list(record.events or [])
            durations[record.clip_id] = record.duration or encoder.clip_seconds
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
    }


def write_json(path: str, values: dict) -> None:
    """Write atomically (local: tmp + rename; gs://: one upload) from process 0 only."""
    if jax.process_index() != 0:
        return
    paths.write_text_atomic(path, json.dumps(values, indent=2, sort_keys=True))
