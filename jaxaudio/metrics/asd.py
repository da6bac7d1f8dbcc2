"""Anomalous sound detection metrics: ROC AUC and partial AUC, per machine ID, as DCASE2020 task 2.

Conventions: label 1 = anomalous clip, 0 = normal; a higher score means more anomalous. Ties between
an anomalous and a normal clip count half (the ROC polygon through tied thresholds is a diagonal
segment), as scikit-learn's ``roc_auc_score`` does.

Two pAUCs, because the literature uses two numbers under one name:

- ``partial_auc_mcclish`` is what the official DCASE2020 baseline and evaluator report: they call
  ``sklearn.metrics.roc_auc_score(y, s, max_fpr=0.1)``, which standardises the raw area ``A`` on
  [0, p] as McClish (1989) does, ``0.5 * (1 + (A - p^2/2) / (p - p^2/2))``: chance gives 0.5, a
  perfect detector 1. Published DCASE2020 tables hold this value.
- ``partial_auc_raw`` is the task paper's formula (Koizumi et al., arXiv 2006.05822): ``A / p``,
  the fraction of (anomaly, top-p normal) pairs ranked correctly; chance gives p/2.

They differ a lot (e.g. 0.675 vs 0.383), so every table and dict here names which one it holds.

Aggregation follows the official DCASE2020 code: the metrics per (machine type, machine ID), the
arithmetic mean over a type's IDs, then the arithmetic mean over types. (DCASE2021+ rank by harmonic
means over sections; that is not what this module computes.)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from jaxaudio.errors import ConfigError, DataFormatError, ShapeError

METRICS = ("auc", "pauc", "pauc_raw")
"""Keys of the per-group metric dicts: ROC AUC, pAUC (McClish, as the official code), pAUC raw (A / p)."""


# ----------------------------------------------------------------------------------------------------
# ROC and areas


def _check_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """1-D float64 scores and bool labels of equal length; loud on NaN/Inf scores or labels not 0/1."""
    scores = np.asarray(scores, dtype=np.float64)
    labels_in = np.asarray(labels)
    if scores.ndim != 1 or labels_in.ndim != 1 or scores.shape != labels_in.shape:
        raise ShapeError(f"labels and scores must be 1-D of equal length; got {labels_in.shape} and {scores.shape}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise DataFormatError("scores", f"score is {scores[bad[0]]} (all scores must be finite)", row=int(bad[0]))
    not01 = np.flatnonzero((labels_in != 0) & (labels_in != 1))
    if not01.size:
        raise DataFormatError("labels", f"label is {labels_in[not01[0]]!r}; expected 0 (normal) or 1 (anomaly)",
                              row=int(not01[0]))
    return labels_in == 1, scores


def _check_max_fpr(max_fpr: float) -> float:
    max_fpr = float(max_fpr)
    if not 0.0 < max_fpr <= 1.0:
        raise ConfigError(f"max_fpr must be in (0, 1]; got {max_fpr}")
    return max_fpr


def _roc_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (false, true) positive counts at each distinct threshold, from (0, 0) upward.

    Thresholds run from the highest score down; all clips sharing a score enter together, so a
    tie between classes is one diagonal step (= half credit in the area).
    """
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return np.r_[0, fps], np.r_[0, tps]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC polygon ``(fpr, tpr)``, starting at (0, 0), one vertex per distinct score (for plots).

    Raises DataFormatError if one class is absent (the curve is undefined then).
    """
    labels, scores = _check_inputs(labels, scores)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataFormatError("labels", f"ROC needs normal and anomalous clips; got {n_neg} normal, {n_pos} anomalous")
    fps, tps = _roc_counts(labels, scores)
    return fps / n_neg, tps / n_pos


def _counts_or_none(labels, scores):
    """Checked inputs -> ``(fps, tps, n_pos, n_neg)`` of the ROC, or None when one class is absent."""
    labels, scores = _check_inputs(labels, scores)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    fps, tps = _roc_counts(labels, scores)
    return fps, tps, n_pos, n_neg


def roc_auc(labels, scores) -> float:
    """Area under the ROC (= Mann-Whitney U / (N+ N-)), ties counted half; NaN if one class is absent."""
    counts = _counts_or_none(labels, scores)
    if counts is None:
        return float("nan")
    fps, tps, n_pos, n_neg = counts
    # Trapezoids in integer counts (exact), scaled once: sum dFP * (TP_prev + TP) / 2.
    twice_area = int(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])))
    return twice_area / (2.0 * n_pos * n_neg)


def _partial_area(labels, scores, max_fpr: float) -> float:
    """Raw area under the ROC on [0, max_fpr], the curve interpolated linearly at max_fpr; NaN if a class is absent."""
    max_fpr = _check_max_fpr(max_fpr)
    counts = _counts_or_none(labels, scores)
    if counts is None:
        return float("nan")
    fps, tps, n_pos, n_neg = counts
    fpr, tpr = fps / n_neg, tps / n_pos
    # Vertices with fpr <= max_fpr, then the point on the next segment at fpr = max_fpr. `stop` is past
    # every vertex at fpr <= max_fpr, so a vertical segment at max_fpr keeps its highest tpr.
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    if stop < fpr.size:
        t_end = np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1])
        x, y = np.r_[fpr[:stop], max_fpr], np.r_[tpr[:stop], t_end]
    else:  # max_fpr == 1
        x, y = fpr, tpr
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def partial_auc_raw(labels, scores, max_fpr: float = 0.1) -> float:
    """pAUC as the DCASE2020 task paper defines it: raw ROC area on [0, max_fpr] divided by max_fpr.

    With no ties and an integer ``max_fpr * N-`` this is the paper's pair count over the top normals.
    Chance level is max_fpr / 2. NaN if one class is absent.
    """
    return _partial_area(labels, scores, max_fpr) / _check_max_fpr(max_fpr)


def partial_auc_mcclish(labels, scores, max_fpr: float = 0.1) -> float:
    """pAUC (McClish, as in the official DCASE2020 code) = sklearn ``roc_auc_score(y, s, max_fpr=p)``.

    ``0.5 * (1 + (A - p^2/2) / (p - p^2/2))`` with A the raw area on [0, p]: 0.5 at chance, 1 when
    perfect; equals the full AUC at p = 1. NaN if one class is absent.
    """
    p = _check_max_fpr(max_fpr)
    area = _partial_area(labels, scores, p)
    min_area, max_area = 0.5 * p * p, p
    return 0.5 * (1.0 + (area - min_area) / (max_area - min_area))


# ----------------------------------------------------------------------------------------------------
# Per machine type / ID aggregation


@dataclasses.dataclass(frozen=True)
class ScoreRecord:
    """One test clip's anomaly score. label: 1 anomaly, 0 normal; a higher score is more anomalous."""

    path: str
    machine_type: str
    machine_id: str
    label: int
    score: float


@dataclasses.dataclass(frozen=True)
class ASDResult:
    """DCASE2020-style ASD metrics.

    per_id: (machine_type, machine_id) -> {"auc", "pauc", "pauc_raw": float; "n_normal", "n_anomaly": int}.
    per_type: machine_type -> {"auc", "pauc", "pauc_raw"}, arithmetic means over the type's IDs.
    overall: {"auc", "pauc", "pauc_raw"}, arithmetic means over machine types (not over IDs).
    "pauc" is McClish-standardised (what the official DCASE2020 code reports); "pauc_raw" is area / max_fpr.
    Types and IDs are in sorted order.
    """

    per_id: dict[tuple[str, str], dict[str, float]]
    per_type: dict[str, dict[str, float]]
    overall: dict[str, float]
    max_fpr: float

    def to_dict(self) -> dict[str, float | int]:
        """Flat JSON-ready names: "fan/id_00/auc", "fan/id_00/n_normal", ..., "fan/auc", ..., "auc", "pauc"."""
        out: dict[str, float | int] = {}
        for (mtype, mid), values in self.per_id.items():
            for key, value in values.items():
                out[f"{mtype}/{mid}/{key}"] = value
        for mtype, values in self.per_type.items():
            for key, value in values.items():
                out[f"{mtype}/{key}"] = value
        out.update(self.overall)
        return out


def _group(records: Sequence[ScoreRecord]) -> dict[tuple[str, str], list[ScoreRecord]]:
    """Records by (machine type, ID) in sorted order, each checked (finite score, 0/1 label, unique path)."""
    if len(records) == 0:
        raise DataFormatError("<score records>", "no records to evaluate")
    groups: dict[tuple[str, str], list[ScoreRecord]] = {}
    seen: set[str] = set()
    for rec in records:
        if rec.path in seen:
            raise DataFormatError(rec.path, "scored twice (each test clip must appear once)")
        seen.add(rec.path)
        if not math.isfinite(float(rec.score)):
            raise DataFormatError(rec.path, f"score is {rec.score} (machine type {rec.machine_type!r}, "
                                            f"ID {rec.machine_id!r}); anomaly scores must be finite")
        if rec.label not in (0, 1):
            raise DataFormatError(rec.path, f"label is {rec.label!r}; expected 0 (normal) or 1 (anomaly)")
        for what, name in (("machine type", rec.machine_type), ("machine ID", rec.machine_id)):
            if not name or "/" in name:
                raise DataFormatError(rec.path, f"{what} {name!r} must be non-empty and free of '/' "
                                                "(it becomes part of a metric name)")
        groups.setdefault((rec.machine_type, rec.machine_id), []).append(rec)
    return dict(sorted(groups.items()))


def group_arrays(records: Sequence[ScoreRecord]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(machine type, ID) -> (labels, scores), sorted, each group holding both classes (else DataFormatError)."""
    out = {}
    for (mtype, mid), recs in _group(records).items():
        labels = np.array([r.label for r in recs], dtype=np.int64)
        n_anomaly = int(labels.sum())
        n_normal = labels.size - n_anomaly
        if n_anomaly == 0 or n_normal == 0:
            raise DataFormatError(
                recs[0].path, f"machine type {mtype!r}, ID {mid!r} has {n_normal} normal and {n_anomaly} anomalous "
                "test clips; AUC and pAUC need both, so this test set cannot be scored")
        out[(mtype, mid)] = (labels, np.array([r.score for r in recs], dtype=np.float64))
    return out


def asd_metrics(records: Sequence[ScoreRecord], max_fpr: float = 0.1) -> ASDResult:
    """AUC, pAUC (McClish) and pAUC (raw) per machine type and ID, with the DCASE2020 arithmetic means."""
    max_fpr = _check_max_fpr(max_fpr)
    per_id: dict[tuple[str, str], dict[str, float]] = {}
    for key, (labels, scores) in group_arrays(records).items():
        n_anomaly = int(labels.sum())
        per_id[key] = {
            "auc": roc_auc(labels, scores),
            "pauc": partial_auc_mcclish(labels, scores, max_fpr),
            "pauc_raw": partial_auc_raw(labels, scores, max_fpr),
            "n_normal": int(labels.size - n_anomaly),
            "n_anomaly": n_anomaly,
        }
    per_type: dict[str, dict[str, float]] = {}
    for mtype in sorted({t for t, _ in per_id}):
        ids = [v for (t, _), v in per_id.items() if t == mtype]
        per_type[mtype] = {m: float(np.mean([v[m] for v in ids])) for m in METRICS}
    overall = {m: float(np.mean([v[m] for v in per_type.values()])) for m in METRICS}
    return ASDResult(per_id=per_id, per_type=per_type, overall=overall, max_fpr=max_fpr)


def per_id_table_markdown(result: ASDResult) -> str:
    """Markdown table as DCASE papers print it: values in percent, 2 decimals; a mean row per type, then the average.

    The count columns of mean rows hold sums over the IDs.
    """
    p = f"{result.max_fpr:g}"
    lines = [
        f"| Machine type | ID | #normal | #anomaly | AUC (%) | pAUC (McClish, as in the official DCASE2020 code), "
        f"p={p} (%) | pAUC (raw/p), p={p} (%) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def row(mtype, mid, n_normal, n_anomaly, values):
        cells = " | ".join(f"{100.0 * values[m]:.2f}" for m in METRICS)
        return f"| {mtype} | {mid} | {n_normal} | {n_anomaly} | {cells} |"

    for mtype, means in result.per_type.items():
        ids = [(mid, v) for (t, mid), v in result.per_id.items() if t == mtype]
        for mid, values in ids:
            lines.append(row(mtype, mid, values["n_normal"], values["n_anomaly"], values))
        lines.append(row(f"**{mtype}**", "**mean**", sum(v["n_normal"] for _, v in ids),
                         sum(v["n_anomaly"] for _, v in ids), means))
    lines.append(row("**all types**", "**average**", sum(v["n_normal"] for v in result.per_id.values()),
                     sum(v["n_anomaly"] for v in result.per_id.values()), result.overall))
    return "\n".join(lines) + "\n"
