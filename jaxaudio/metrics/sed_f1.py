"""F1 scores of SED systems at one decision threshold: intersection, collar and segment based.

All three turn frame scores into detections with ``score > threshold`` (strictly greater;
see `sed_events`). They return ``(macro_f1, per_class)`` where per_class maps each class
to ``{"f1", "precision", "recall", "tp", "fp", "n_ref"}``. Precision is 1 when a class has
no detections; a class without reference events (n_ref = 0) has no recall, gets
F1 = NaN and is left out of the macro average.
"""
from __future__ import annotations

import numpy as np

from jaxaudio.errors import ConfigError
from jaxaudio.metrics.sed_events import (SedSet, class_thresholds, detection_relevance, pack_inputs, runs_above,
                                         same_clip_pairs)


def intersection_f1(scores, timestamps, ground_truth, durations, classes, threshold=0.5, dtc=0.5, gtc=0.5,
                    cttc=0.3, time_decimals=6):
    """Intersection-based F1 (Bilen et al. 2020) at `threshold` (scalar or {class: value}).

    A detection is a true detection when at least `dtc` of it overlaps events of its class;
    a reference event is found when true detections cover at least `gtc` of it. Every other
    detection is a false positive. `cttc` is accepted for parity with DESED_task's call but
    does not change F1: cross triggers are false positives like any other.
    """
    _check_fraction("dtc", dtc)
    _check_fraction("gtc", gtc)
    sed = pack_inputs(scores, timestamps, ground_truth, durations, classes)
    clip, cls, on, off = runs_above(sed, class_thresholds(threshold, sed.classes))
    relevant, _, (det_i, gt_i, inter) = detection_relevance(clip, cls, on, off, sed, dtc=dtc, cttc=None,
                                                             decimals=time_decimals)
    pair_ok = relevant[det_i]
    covered = np.bincount(gt_i[pair_ok], inter[pair_ok], minlength=len(sed.gt_class))
    gt_len = sed.gt_offset - sed.gt_onset
    found = np.round(covered, time_decimals) >= np.round(gtc * gt_len, time_decimals)
    tp = np.bincount(sed.gt_class[found], minlength=sed.num_classes)
    fp = np.bincount(cls[~relevant], minlength=sed.num_classes)
    return _f1_table(sed.classes, tp, fp, sed.n_ref())


def collar_f1(scores, timestamps, ground_truth, durations, classes, threshold=0.5, onset_collar=0.2,
              offset_collar=0.2, offset_collar_rate=0.2, time_decimals=6):
    """Collar-based (event-based) F1 (Mesaros et al. 2016) at `threshold`.

    A detection matches a reference event of its class when its onset is within
    `onset_collar` seconds and its offset within max(`offset_collar`, `offset_collar_rate`
    x event length) seconds. Each detection and event is used at most once; TP is the size
    of the largest such one-to-one matching.
    """
    sed = pack_inputs(scores, timestamps, ground_truth, durations, classes)
    clip, cls, on, off = runs_above(sed, class_thresholds(threshold, sed.classes))
    det_i, gt_i = same_clip_pairs(clip, sed.gt_clip, len(sed.clip_ids))
    gt_on, gt_off = sed.gt_onset[gt_i], sed.gt_offset[gt_i]
    off_collar = np.maximum(offset_collar, offset_collar_rate * (gt_off - gt_on))
    hit = ((sed.gt_class[gt_i] == cls[det_i])
           & (np.round(np.abs(on[det_i] - gt_on) - onset_collar, time_decimals) <= 0)
           & (np.round(np.abs(off[det_i] - gt_off) - off_collar, time_decimals) <= 0))
    det_i, gt_i = det_i[hit], gt_i[hit]
    tp = np.zeros(sed.num_classes, dtype=np.int64)
    ambiguous = _ambiguous(det_i, len(clip)) | _ambiguous(gt_i, len(sed.gt_class))
    np.add.at(tp, cls[det_i[~ambiguous]], 1)
    if ambiguous.any():
        for k, size in _matchings(det_i[ambiguous], gt_i[ambiguous], cls[det_i[ambiguous]]):
            tp[k] += size
    fp = np.bincount(cls, minlength=sed.num_classes) - tp
    return _f1_table(sed.classes, tp, fp, sed.n_ref())


def segment_f1(scores, timestamps, ground_truth, durations, classes, threshold=0.5, segment_length=1.0,
               time_decimals=6):
    """Segment-based F1 (Mesaros et al. 2016) at `threshold`.

    Each clip is cut into ceil(duration / segment_length) segments. A segment is active
    for a class when a reference event overlaps it, and detected when any frame touching
    it scores above the threshold (frames past the clip's last timestamp score 0). TP, FP
    and n_ref count segments.
    """
    if not segment_length > 0:
        raise ConfigError(f"segment_length: must be > 0, got {segment_length}")
    sed = pack_inputs(scores, timestamps, ground_truth, durations, classes)
    thresholds = class_thresholds(threshold, sed.classes)
    tp = np.zeros(sed.num_classes, dtype=np.int64)
    fp = np.zeros_like(tp)
    n_ref = np.zeros_like(tp)
    gt_start = np.searchsorted(sed.gt_clip, np.arange(len(sed.clip_ids) + 1))
    for i in range(len(sed.clip_ids)):
        detected = _segment_scores(sed, i, segment_length, time_decimals) > thresholds
        active = _segment_truth(sed, slice(gt_start[i], gt_start[i + 1]), len(detected), segment_length,
                                time_decimals)
        tp += (detected & active).sum(axis=0)
        fp += (detected & ~active).sum(axis=0)
        n_ref += active.sum(axis=0)
    return _f1_table(sed.classes, tp, fp, n_ref)


def _check_fraction(key, value):
    if not 0 < value <= 1:
        raise ConfigError(f"{key}: must lie in (0, 1], got {value}")


def _ambiguous(index, size):
    """Mark pairs whose detection (or event) takes part in more than one candidate match."""
    return np.bincount(index, minlength=size)[index] > 1


def _matchings(det_i, gt_i, cls):
    """Size of a maximum one-to-one matching per class, by augmenting paths (Kuhn)."""
    sizes = {}
    for k in np.unique(cls):
        options: dict[int, list[int]] = {}
        for d, g in zip(det_i[cls == k], gt_i[cls == k]):
            options.setdefault(int(d), []).append(int(g))
        owner: dict[int, int] = {}

        def assign(d, seen):
            for g in options[d]:
                if g not in seen:
                    seen.add(g)
                    if g not in owner or assign(owner[g], seen):
                        owner[g] = d
                        return True
            return False

        sizes[int(k)] = sum(assign(d, set()) for d in options)
    return sizes.items()


def _segment_scores(sed: SedSet, i, segment_length, decimals):
    """(segments, classes) maximum score over the frames that touch each segment."""
    n_segments = int(np.ceil(sed.durations[i] / segment_length))
    bounds = np.round(np.arange(n_segments + 1) * segment_length, decimals)
    ts = np.round(sed.timestamps[i, : sed.n_frames[i] + 1], decimals)
    first = np.maximum(np.searchsorted(ts, bounds[:-1], side="right") - 1, 0)
    stop = np.minimum(np.searchsorted(ts, bounds[1:], side="left"), len(ts) - 1)
    frames = np.arange(sed.n_frames[i])
    touches = (frames >= first[:, None]) & (frames < stop[:, None])
    clip_scores = sed.scores[i, :, : sed.n_frames[i]]
    best = np.where(touches[:, None, :], clip_scores[None], -np.inf).max(axis=-1, initial=-np.inf)
    return np.where(np.isfinite(best), best, 0.0)


def _segment_truth(sed: SedSet, events, n_segments, segment_length, decimals):
    """(segments, classes) True where a reference event of the class overlaps the segment."""
    bounds = np.round(np.arange(n_segments + 1) * segment_length, decimals)
    on, off, cls = sed.gt_onset[events], sed.gt_offset[events], sed.gt_class[events]
    hits = (bounds[:-1, None] < off) & (bounds[1:, None] > on)
    active = np.zeros((n_segments, sed.num_classes), dtype=bool)
    seg, ev = np.nonzero(hits)
    active[seg, cls[ev]] = True
    return active


def _f1_table(classes, tp, fp, n_ref):
    per_class = {}
    for k, name in enumerate(classes):
        t, f, n = int(tp[k]), int(fp[k]), int(n_ref[k])
        precision = t / (t + f) if t + f > 0 else 1.0
        recall = t / n if n > 0 else float("nan")
        f1 = 2 * precision * recall / max(precision + recall, 1e-15) if n > 0 else float("nan")
        per_class[name] = dict(f1=f1, precision=precision, recall=recall, tp=t, fp=f, n_ref=n)
    valid = [v["f1"] for v in per_class.values() if v["n_ref"] > 0]
    macro = float(np.mean(valid)) if valid else float("nan")
    return macro, per_class
