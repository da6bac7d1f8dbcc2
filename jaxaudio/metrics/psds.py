"""Polyphonic Sound Detection Score (PSDS), exact and threshold-free.

PSDS (Bilen et al., ICASSP 2020) is the normalised area under the effective PSD-ROC: per
class, the true-positive ratio of intersection-based detection against the effective
false-positive rate per hour, then the mean minus `alpha_st` times the standard deviation
over classes. We evaluate it at *every* operating point the scores allow, as Ebbers et al.
(ICASSP 2022) showed is possible, rather than at a grid of thresholds: a grid of 50
under-samples the curve and gives values 0.01-0.04 lower.

How every operating point is found at once. At threshold ``s`` the detections of one clip
and class are the maximal runs of frames with ``score >= s``. Across all ``s`` these runs
form a tree (runs grow and merge as ``s`` falls). A run over frames ``[a, b)`` exists for
``s`` in ``(lo, hi]`` where ``hi`` is its lowest score and ``lo`` the higher of its two
neighbours' scores. Every run is found from a frame ``m`` holding its lowest score: the run
reaches left and right until the first strictly lower score. So each run is judged once
(DTC, cross triggers, overlap with each ground-truth event), and the counts at all
thresholds follow from adding its contribution at ``hi`` and removing it at ``lo``.
False positives and cross triggers add up over runs; a true positive needs the *sum* of the
relevant runs' overlap with one ground-truth event, which we track per event the same way.

Conventions: operating point ``s`` means "frames with score >= s are active", i.e. a
threshold just below ``s``; the curve also holds the point of no detections (0, 0).
Classes without ground-truth events have no true-positive ratio; they are left out of the
average with a warning (sed_scores_eval refuses such sets).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from jaxaudio.errors import ConfigError
from jaxaudio.metrics.sed_events import SedSet, detection_relevance, pack_inputs

SECONDS_PER_UNIT = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


@dataclasses.dataclass
class PSDSResult:
    """PSDS value with the curves it was computed from.

    value: area under `effective_tpr` over `efpr` in [0, max_efpr], divided by max_efpr.
    efpr, effective_tpr: the effective PSD-ROC as a staircase (value holds from each x to the next).
    per_class: class -> (efpr, tpr) staircase of that class (classes without events left out).
    params: the parameters used, plus `classes_without_events`.
    """

    value: float
    efpr: np.ndarray
    effective_tpr: np.ndarray
    per_class: dict
    params: dict


def psds(scores, timestamps, ground_truth, durations, classes, *, dtc_threshold, gtc_threshold,
         cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0, unit_of_time="hour",
         time_decimals=6) -> PSDSResult:
    """Exact PSDS from frame scores. Inputs as in `jaxaudio.metrics.sed` (see its docstring).

    dtc/gtc/cttc thresholds are the intersection criteria; `cttc_threshold` must be given
    exactly when `alpha_ct` > 0 (cross triggers only matter then).
    """
    params = dict(dtc_threshold=dtc_threshold, gtc_threshold=gtc_threshold, cttc_threshold=cttc_threshold,
                  alpha_ct=alpha_ct, alpha_st=alpha_st, max_efpr=max_efpr, unit_of_time=unit_of_time)
    _check_params(params)
    sed = pack_inputs(scores, timestamps, ground_truth, durations, classes)
    stats = _counts_at_all_thresholds(sed, dtc_threshold, gtc_threshold, cttc_threshold, time_decimals)

    n_ref, t_ref = sed.n_ref(), sed.t_ref()
    seconds = SECONDS_PER_UNIT[unit_of_time]
    total_duration = sed.durations.sum()
    per_class = {}
    for k, (tps, fps, cts) in enumerate(stats):
        if n_ref[k] == 0:
            continue
        tpr = tps / n_ref[k]
        efpr = fps / total_duration
        if alpha_ct > 0 and sed.num_classes > 1:
            others = np.arange(sed.num_classes) != k
            ct_rates = cts[:, others] / np.maximum(t_ref[others], 1e-12)
            efpr = efpr + alpha_ct * ct_rates.mean(axis=1)
        per_class[sed.classes[k]] = _roc_staircase(efpr * seconds, tpr, max_efpr)
    missing = [name for k, name in enumerate(sed.classes) if n_ref[k] == 0]
    if missing:
        warnings.warn(f"PSDS: classes without ground-truth events are left out: {missing}")
    if not per_class:
        raise ConfigError("ground_truth: no class has any event, PSDS is undefined")

    efpr, etpr = _effective_roc(per_class, alpha_st, max_efpr)
    value = _staircase_area(efpr, etpr, max_efpr) / max_efpr
    return PSDSResult(float(value), efpr, etpr, per_class, {**params, "classes_without_events": missing})


def psds1(scores, timestamps, ground_truth, durations, classes, **overrides) -> PSDSResult:
    """DCASE scenario 1 (DESED_task): dtc = gtc = 0.7, no cross triggers, alpha_st 1, max eFPR 100/h."""
    kwargs = dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0,
                  max_efpr=100.0)
    return psds(scores, timestamps, ground_truth, durations, classes, **{**kwargs, **overrides})


def psds2(scores, timestamps, ground_truth, durations, classes, **overrides) -> PSDSResult:
    """DCASE scenario 2: dtc = gtc = 0.1, cttc 0.3, alpha_ct 0.5, alpha_st 1, max eFPR 100/h."""
    kwargs = dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0,
                  max_efpr=100.0)
    return psds(scores, timestamps, ground_truth, durations, classes, **{**kwargs, **overrides})


def _check_params(p):
    for key in ("dtc_threshold", "gtc_threshold"):
        if not 0 < p[key] <= 1:
            raise ConfigError(f"{key}: must lie in (0, 1], got {p[key]}")
    if p["alpha_ct"] < 0 or p["alpha_st"] < 0:
        raise ConfigError(f"alpha_ct, alpha_st: must be >= 0, got {p['alpha_ct']}, {p['alpha_st']}")
    if (p["alpha_ct"] > 0) != (p["cttc_threshold"] is not None):
        raise ConfigError("cttc_threshold: give it exactly when alpha_ct > 0 "
                          f"(got cttc_threshold={p['cttc_threshold']}, alpha_ct={p['alpha_ct']})")
    if p["cttc_threshold"] is not None and not 0 < p["cttc_threshold"] <= 1:
        raise ConfigError(f"cttc_threshold: must lie in (0, 1], got {p['cttc_threshold']}")
    if not p["max_efpr"] > 0:
        raise ConfigError(f"max_efpr: must be > 0, got {p['max_efpr']}")
    if p["unit_of_time"] not in SECONDS_PER_UNIT:
        raise ConfigError(f"unit_of_time: one of {sorted(SECONDS_PER_UNIT)}, got {p['unit_of_time']!r}")


def score_runs(scores: np.ndarray, max_chunk_size: int = 500_000):
    """Every run of frames that is a detection at some threshold, for each row of `scores`.

    scores: (rows, frames), padded with -inf (pads never belong to a run).
    Returns (row, first, stop, low, neighbour): the run covers frames [first, stop); `low` is
    the first of its frames holding its lowest score hi, `neighbour` the frame next to the
    run holding the higher neighbouring score lo (-1 when both neighbours are outside the
    clip). The run is a detection for thresholds s in (lo, hi].
    """
    rows_per_chunk = max(1, max_chunk_size // (scores.shape[1] + 2))
    starts = range(0, len(scores), rows_per_chunk)
    parts = [_runs_of_chunk(scores[i: i + rows_per_chunk]) for i in starts]
    row, first, stop, low, neighbour = (np.concatenate(p) for p in zip(*parts))
    row += np.repeat(np.asarray(starts), [len(p[0]) for p in parts])
    return row, first, stop, low, neighbour


def _runs_of_chunk(x):
    rows, frames = x.shape
    padded = np.pad(x, ((0, 0), (1, 1)), constant_values=-np.inf)  # frame m sits at m + 1
    width = frames + 2
    table = _range_minima(padded)
    r = np.arange(rows)[:, None]
    centre = np.arange(1, frames + 1)[None, :]
    value = padded[:, 1:-1]
    # Grow [first, stop) around each frame in shrinking power-of-two steps while the block
    # added keeps every score >= the frame's own: the run in which that frame is lowest.
    first = np.broadcast_to(centre, (rows, frames)).copy()
    stop = first + 1
    for level in reversed(range(len(table))):
        size = 2 ** level
        grow = (first - size >= 0) & (table[level][r, np.maximum(first - size, 0)] >= value)
        first = np.where(grow, first - size, first)
        grow = (stop + size <= width) & (table[level][r, np.minimum(stop, width - 1)] >= value)
        stop = np.where(grow, stop + size, stop)
    # Frames tied for a run's lowest score find the same run; keep the leftmost of them.
    span = np.maximum(centre - first, 1)
    level = np.floor(np.log2(span)).astype(np.int64)
    left_min = np.minimum(table[level, r, first], table[level, r, centre - 2 ** level])
    keep = np.isfinite(value) & ((centre == first) | (left_min > value))
    rr, mm = np.nonzero(keep)
    f, s = first[rr, mm], stop[rr, mm]
    right_higher = padded[rr, s] > padded[rr, f - 1]
    neighbour = np.where(right_higher, s, f - 1)
    neighbour = np.where(np.isfinite(padded[rr, neighbour]), neighbour - 1, -1)
    return rr, f - 1, s - 1, mm, neighbour


def _range_minima(padded):
    """(levels, rows, width) table: [l, r, i] = min of padded[r, i: i + 2**l], -inf past the end."""
    table = [padded]
    while 2 ** len(table) <= padded.shape[1]:
        prev, step = table[-1], 2 ** (len(table) - 1)
        nxt = np.full_like(prev, -np.inf)
        nxt[:, :-step] = np.minimum(prev[:, :-step], prev[:, step:])
        table.append(nxt)
    return np.stack(table)


def _score_levels(sed: SedSet):
    """Rank every frame score among its class's distinct scores, highest first.

    Returns (level, offsets): level (clips, classes, frames) holds the global index
    `offsets[k] + rank` of each score (-1 on pads); class k owns levels offsets[k]:offsets[k+1].
    """
    level = np.full(sed.scores.shape, -1, dtype=np.int64)
    offsets = [0]
    for k in range(sed.num_classes):
        scores_k = sed.scores[:, k, :]
        finite = np.isfinite(scores_k)
        distinct, inverse = np.unique(-scores_k[finite], return_inverse=True)
        level[:, k, :][finite] = offsets[-1] + inverse.ravel()
        offsets.append(offsets[-1] + len(distinct))
    return level, np.asarray(offsets)


def _counts_at_all_thresholds(sed: SedSet, dtc, gtc, cttc, decimals):
    """Yields per class: (tps, fps, cts) at every operating point, best first.

    Point 0 is "no detections" (all zeros); point i > 0 is "frames with score >= the
    i-th highest distinct score of the class are active". cts is (points, classes), the
    cross triggers on each other class, or None when cttc is None.
    """
    n_clips, n_cls, n_frames = sed.scores.shape
    level, offsets = _score_levels(sed)
    row, first, stop, low, neighbour = score_runs(sed.scores.reshape(n_clips * n_cls, n_frames))
    clip, cls = np.divmod(row, n_cls)
    on, off = sed.timestamps[clip, first], sed.timestamps[clip, stop]
    relevant, (ct_run, ct_class), (det_i, gt_i, inter) = detection_relevance(
        clip, cls, on, off, sed, dtc=dtc, cttc=cttc, decimals=decimals)
    flat_level = level.reshape(n_clips * n_cls, n_frames)
    appear = flat_level[row, low]
    vanish = np.where(neighbour >= 0, flat_level[row, np.maximum(neighbour, 0)], -1)

    # Counts change by +-1 at levels: a run adds its FP (or cross trigger) at the level where
    # it appears and takes it back where it vanishes; TPs follow each event's coverage.
    fp_at, fp_sign = _appear_and_vanish(np.nonzero(~relevant)[0], appear, vanish)
    tp_at, tp_sign = _true_positive_changes(sed, relevant, appear, vanish, det_i, gt_i, inter, gtc, decimals)
    per_level = np.bincount(np.r_[tp_at * 2, fp_at * 2 + 1], np.r_[tp_sign, fp_sign], minlength=offsets[-1] * 2)
    counts = np.cumsum(np.vstack([np.zeros((1, 2)), per_level.reshape(-1, 2)]), axis=0)
    if cttc is not None:
        ct_at, ct_sign = _appear_and_vanish(np.arange(len(ct_run)), appear[ct_run], vanish[ct_run])
        ct_class = np.r_[ct_class, ct_class[vanish[ct_run] >= 0]]
    for k in range(n_cls):
        # Class k's points: the "no detections" point, then its own levels. The cumulative
        # sums ran across classes, so subtract what earlier classes added.
        span = slice(offsets[k], offsets[k + 1] + 1)
        tps, fps = (counts[span] - counts[offsets[k]]).T
        cts = None
        if cttc is not None:
            mine = (ct_at >= offsets[k]) & (ct_at < offsets[k + 1])
            n_levels = offsets[k + 1] - offsets[k]
            per_level = np.bincount((ct_at[mine] - offsets[k]) * n_cls + ct_class[mine], ct_sign[mine],
                                    minlength=n_levels * n_cls)
            cts = np.cumsum(np.vstack([np.zeros((1, n_cls)), per_level.reshape(-1, n_cls)]), axis=0)
        yield tps, fps, cts


def _appear_and_vanish(runs, appear, vanish):
    """(level, +-1) changes for runs that count while they exist."""
    ends = runs[vanish[runs] >= 0]
    return np.r_[appear[runs], vanish[ends]], np.r_[np.ones(len(runs)), -np.ones(len(ends))]


def _true_positive_changes(sed, relevant, appear, vanish, det_i, gt_i, inter, gtc, decimals):
    """(level, +-1) where a ground-truth event starts or stops being a true positive.

    A ground-truth event is detected while the relevant runs of its class cover at least
    `gtc` of it. Its covered length changes only where such a run appears or vanishes.
    """
    use = relevant[det_i]
    det_i, gt_i, inter = det_i[use], gt_i[use], inter[use]
    ends = vanish[det_i] >= 0
    ev_gt = np.concatenate([gt_i, gt_i[ends]])
    ev_at = np.concatenate([appear[det_i], vanish[det_i][ends]])
    ev_len = np.concatenate([inter, -inter[ends]])
    if len(ev_gt) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    # Sum simultaneous changes; order each event's changes by falling threshold (rising level).
    order = np.lexsort((ev_at, ev_gt))
    ev_gt, ev_at, ev_len = ev_gt[order], ev_at[order], ev_len[order]
    new_step = np.r_[True, (ev_gt[1:] != ev_gt[:-1]) | (ev_at[1:] != ev_at[:-1])]
    change = np.bincount(np.cumsum(new_step) - 1, ev_len)
    gt, at = ev_gt[new_step], ev_at[new_step]
    group_start = np.r_[True, gt[1:] != gt[:-1]]
    running = np.cumsum(change)
    start = np.maximum.accumulate(np.where(group_start, np.arange(len(gt)), 0))
    covered = running - (running[start] - change[start])
    gt_len = sed.gt_offset[gt] - sed.gt_onset[gt]
    hit = (np.round(covered, decimals) >= np.round(gtc * gt_len, decimals)).astype(np.float64)
    delta = hit - np.where(group_start, 0.0, np.r_[0.0, hit[:-1]])
    moved = delta != 0
    return at[moved], delta[moved]


def _roc_staircase(efpr, tpr, max_efpr):
    """Keep the operating points on the upper-left hull of a class's ROC, up to max_efpr."""
    order = np.lexsort((tpr, efpr))
    efpr, tpr = efpr[order], tpr[order]
    best = np.maximum.accumulate(tpr)
    rises = np.r_[True, best[1:] > best[:-1]]
    efpr, tpr = efpr[rises], tpr[rises]
    last_of_x = np.r_[efpr[1:] != efpr[:-1], True]
    efpr, tpr = efpr[last_of_x], tpr[last_of_x]
    inside = efpr <= max_efpr
    return efpr[inside], tpr[inside]


def _effective_roc(per_class, alpha_st, max_efpr):
    """Mean minus alpha_st * std of the class staircases on the union of their x values."""
    grid = np.unique(np.concatenate([efpr for efpr, _ in per_class.values()]))
    curves = []
    for efpr, tpr in per_class.values():
        idx = np.searchsorted(efpr, grid, side="right") - 1
        curves.append(np.where(idx >= 0, tpr[np.maximum(idx, 0)], 0.0))
    curves = np.stack(curves)
    etpr = np.maximum(curves.mean(axis=0) - alpha_st * curves.std(axis=0), 0.0)
    return np.r_[grid, max_efpr], np.r_[etpr, etpr[-1]]


def _staircase_area(x, y, max_x):
    """Area under a staircase that holds y[i] from x[i] to x[i+1], cut at max_x."""
    inside = x <= max_x
    x = np.r_[x[inside], max_x]
    return float(np.sum(y[inside] * np.diff(x)))
