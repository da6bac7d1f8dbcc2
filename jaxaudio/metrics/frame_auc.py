"""Frame-level ROC AUC: how well frame scores rank active frames above inactive ones, per class.

Why beside PSDS: PSDS puts false positives on a per-hour axis (up to 100 per hour for PSDS1),
so on a minute of validation audio one false alarm already spends the whole budget and every
small model scores 0. The frame AUC needs no threshold and no amount of audio, so it tells a
model that learned something from one that did not even on a smoke-test set.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC of ``scores`` for 0/1 ``labels`` (ties count half); NaN if one class is absent."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel() > 0.5
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: a tie between a positive and a negative counts 1/2
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def frame_auc(scores: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> float:
    """Mean over classes (those with active and inactive frames) of the frame ROC AUC.

    scores, targets: ``{clip_id: (frames, classes)}``, the same frame grid per clip.
    """
    clips = sorted(scores)
    s = np.concatenate([np.asarray(scores[c]) for c in clips])
    t = np.concatenate([np.asarray(targets[c]) for c in clips])
    if s.shape != t.shape:
        raise ValueError(f"frame_auc: scores {s.shape} and targets {t.shape} differ in shape")
    per_class = [binary_auc(s[:, k], t[:, k]) for k in range(s.shape[1])]
    valid = [a for a in per_class if np.isfinite(a)]
    return float(np.mean(valid)) if valid else float("nan")
