"""Shared plumbing for the SED metrics: input checks, packing, detections and overlaps.

All SED metrics start from the same inputs (frame scores per clip, ground-truth events,
clip durations) and need the same few operations on them, so they live here once:

* `pack_inputs` validates the user's dicts and packs them into padded arrays
  (`SedSet`), clips in sorted-id order.
* `runs_above` turns frame scores into detected events at one threshold.
* `same_clip_pairs` / `overlap` pair detections with ground-truth events of the same clip.

Conventions shared by every metric here:
  * A frame belongs to a detection at threshold ``t`` when its score is strictly greater
    than ``t`` (``score > t``). An event is a maximal run of such frames; it starts at the
    onset timestamp of its first frame and ends at the offset timestamp of its last frame.
  * Times are compared after rounding to ``time_decimals`` (6) decimals, so that an overlap
    that equals a criterion exactly is not lost to floating-point noise.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from jaxaudio.errors import ConfigError, DataFormatError


@dataclasses.dataclass(frozen=True)
class SedSet:
    """Scores, timestamps and ground truth of an evaluation set as padded arrays.

    scores: (clips, classes, frames) float64, padded with -inf past each clip's last frame.
    timestamps: (clips, frames + 1) frame boundaries in seconds, padded with the last value.
    n_frames, durations: (clips,). gt_*: (events,) flat ground-truth arrays, sorted by clip.
    """

    clip_ids: tuple[str, ...]
    classes: tuple[str, ...]
    scores: np.ndarray
    timestamps: np.ndarray
    n_frames: np.ndarray
    durations: np.ndarray
    gt_clip: np.ndarray
    gt_class: np.ndarray
    gt_onset: np.ndarray
    gt_offset: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def n_ref(self) -> np.ndarray:
        """Number of ground-truth events per class, (classes,)."""
        return np.bincount(self.gt_class, minlength=self.num_classes)

    def t_ref(self) -> np.ndarray:
        """Total ground-truth duration per class in seconds, (classes,)."""
        return np.bincount(self.gt_class, self.gt_offset - self.gt_onset, minlength=self.num_classes)


def pack_inputs(scores, timestamps, ground_truth, durations, classes: Sequence[str]) -> SedSet:
    """Validate the metric inputs and pack them into a `SedSet` (see module docstring)."""
    classes = tuple(classes)
    if len(classes) == 0 or len(set(classes)) != len(classes):
        raise ConfigError(f"classes: need a non-empty list of distinct names, got {classes!r}")
    if not isinstance(scores, Mapping) or len(scores) == 0:
        raise DataFormatError("scores", "expected a non-empty dict clip_id -> (frames, classes) array")
    clip_ids = tuple(sorted(scores))
    _check_same_clips("ground_truth", ground_truth, clip_ids)
    _check_same_clips("durations", durations, clip_ids, allow_extra=True)

    per_clip_scores, per_clip_times = [], []
    for clip in clip_ids:
        clip_scores = np.asarray(scores[clip], dtype=np.float64)
        if clip_scores.ndim != 2 or clip_scores.shape[1] != len(classes) or clip_scores.shape[0] == 0:
            raise DataFormatError(
                f"scores[{clip!r}]", f"expected shape (frames>0, {len(classes)}), got {clip_scores.shape}")
        if not np.all(np.isfinite(clip_scores)):
            raise DataFormatError(f"scores[{clip!r}]", "contains NaN or infinite values")
        clip_times = timestamps[clip] if isinstance(timestamps, Mapping) else timestamps
        clip_times = np.asarray(clip_times, dtype=np.float64)
        if clip_times.shape != (clip_scores.shape[0] + 1,):
            raise DataFormatError(
                f"timestamps[{clip!r}]",
                f"expected shape ({clip_scores.shape[0] + 1},) = frames + 1, got {clip_times.shape}")
        if not np.all(np.diff(clip_times) > 0) or clip_times[0] < 0:
            raise DataFormatError(f"timestamps[{clip!r}]", "must start at >= 0 and increase strictly")
        per_clip_scores.append(clip_scores)
        per_clip_times.append(clip_times)

    n_frames = np.array([len(s) for s in per_clip_scores])
    max_frames = int(n_frames.max())
    packed_scores = np.full((len(clip_ids), len(classes), max_frames), -np.inf)
    packed_times = np.empty((len(clip_ids), max_frames + 1))
    for i, (clip_scores, clip_times) in enumerate(zip(per_clip_scores, per_clip_times)):
        packed_scores[i, :, : len(clip_scores)] = clip_scores.T
        packed_times[i, : len(clip_times)] = clip_times
        packed_times[i, len(clip_times):] = clip_times[-1]

    clip_durations = np.array([_duration(durations, clip) for clip in clip_ids])
    gt = _pack_ground_truth(ground_truth, clip_ids, classes)
    return SedSet(clip_ids, classes, packed_scores, packed_times, n_frames, clip_durations, *gt)


def _check_same_clips(name, mapping, clip_ids, allow_extra=False):
    if not isinstance(mapping, Mapping):
        raise DataFormatError(name, f"expected a dict keyed by clip id, got {type(mapping).__name__}")
    missing = sorted(set(clip_ids) - set(mapping))
    extra = [] if allow_extra else sorted(set(mapping) - set(clip_ids))
    if missing or extra:
        raise DataFormatError(
            name, f"clip ids differ from those in scores: missing {missing[:5]}, extra {extra[:5]}"
            " (give every scored clip an entry; an empty list marks a clip without events)")


def _duration(durations, clip) -> float:
    value = float(durations[clip])
    if not math.isfinite(value) or value <= 0:
        raise DataFormatError(f"durations[{clip!r}]", f"must be a positive number of seconds, got {value}")
    return value


def _pack_ground_truth(ground_truth, clip_ids, classes):
    class_index = {name: k for k, name in enumerate(classes)}
    clip_col, class_col, onsets, offsets = [], [], [], []
    for i, clip in enumerate(clip_ids):
        events = ground_truth[clip]
        if not isinstance(events, (list, tuple)):
            raise DataFormatError(f"ground_truth[{clip!r}]", "expected a list of (onset, offset, label)")
        spans_by_class: dict[int, list[tuple[float, float]]] = {}
        for row, event in enumerate(events):
            if not isinstance(event, (list, tuple)) or len(event) != 3:
                raise DataFormatError(f"ground_truth[{clip!r}]", f"expected (onset, offset, label), got {event!r}", row)
            onset, offset, label = float(event[0]), float(event[1]), event[2]
            if label not in class_index:
                raise DataFormatError(f"ground_truth[{clip!r}]", f"label {label!r} is not one of classes", row)
            if not (math.isfinite(onset) and math.isfinite(offset)) or not 0 <= onset < offset:
                raise DataFormatError(
                    f"ground_truth[{clip!r}]", f"need 0 <= onset < offset, got ({onset}, {offset})", row)
            spans_by_class.setdefault(class_index[label], []).append((onset, offset))
            clip_col.append(i)
            class_col.append(class_index[label])
            onsets.append(onset)
            offsets.append(offset)
        for k, spans in spans_by_class.items():
            spans.sort()
            for (_, prev_off), (next_on, _) in zip(spans, spans[1:]):
                if next_on < prev_off:
                    raise DataFormatError(
                        f"ground_truth[{clip!r}]",
                        f"two {classes[k]!r} events overlap ({next_on} < {prev_off}); merge them first,"
                        " intersection criteria would count the overlap twice")
    return (np.asarray(clip_col, dtype=np.int64), np.asarray(class_col, dtype=np.int64),
            np.asarray(onsets, dtype=np.float64), np.asarray(offsets, dtype=np.float64))


def class_thresholds(threshold, classes) -> np.ndarray:
    """A scalar or a {class: threshold} dict as a (classes,) array."""
    if isinstance(threshold, Mapping):
        missing = [c for c in classes if c not in threshold]
        if missing:
            raise ConfigError(f"threshold: no value for classes {missing}")
        return np.array([float(threshold[c]) for c in classes])
    return np.full(len(classes), float(threshold))


def runs_above(sed: SedSet, threshold: np.ndarray):
    """Detected events where scores exceed the per-class `threshold` (classes,).

    Returns (clip, class, onset_time, offset_time) arrays, one entry per event.
    """
    active = sed.scores > threshold[None, :, None]
    edges = np.diff(np.pad(active, ((0, 0), (0, 0), (1, 1))).astype(np.int8), axis=-1)
    clip, cls, first = np.nonzero(edges == 1)
    _, _, stop = np.nonzero(edges == -1)  # same row-major order, so starts and stops pair up
    return clip, cls, sed.timestamps[clip, first], sed.timestamps[clip, stop]


def same_clip_pairs(det_clip: np.ndarray, gt_clip: np.ndarray, num_clips: int):
    """All (detection, ground-truth event) index pairs that share a clip; gt_clip is sorted."""
    gt_per_clip = np.bincount(gt_clip, minlength=num_clips)
    gt_start = np.cumsum(gt_per_clip) - gt_per_clip
    counts = gt_per_clip[det_clip]
    det_idx = np.repeat(np.arange(len(det_clip)), counts)
    within = np.arange(len(det_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
    gt_idx = gt_start[det_clip][det_idx] + within
    return det_idx, gt_idx


def overlap(on_a, off_a, on_b, off_b) -> np.ndarray:
    """Length of the intersection of [on_a, off_a) and [on_b, off_b), 0 if disjoint."""
    return np.maximum(np.minimum(off_a, off_b) - np.maximum(on_a, on_b), 0.0)


def detection_relevance(det_clip, det_class, det_on, det_off, sed: SedSet, *, dtc, cttc, decimals):
    """The intersection-based criteria that depend on one detection only.

    Returns:
      relevant: (detections,) bool, detection passes the DTC: at least `dtc` of its length
        lies inside ground-truth events of its own class.
      cross: (det_idx, other_class) pairs where the detection failed the DTC and at least
        `cttc` (> 0) of its length lies inside events of that other class; empty if cttc is None.
      pairs: (det_idx, gt_idx, inter) of same-clip, same-class pairs that intersect.
    """
    n_det, n_cls = len(det_clip), sed.num_classes
    det_idx, gt_idx = same_clip_pairs(det_clip, sed.gt_clip, len(sed.clip_ids))
    inter = overlap(det_on[det_idx], det_off[det_idx], sed.gt_onset[gt_idx], sed.gt_offset[gt_idx])
    touching = inter > 0
    det_idx, gt_idx, inter = det_idx[touching], gt_idx[touching], inter[touching]
    gt_cls = sed.gt_class[gt_idx]
    own = gt_cls == det_class[det_idx]
    det_len = det_off - det_on
    own_sum = np.bincount(det_idx[own], inter[own], minlength=n_det)
    relevant = np.round(own_sum, decimals) >= np.round(dtc * det_len, decimals)
    cross = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if cttc is not None:
        other = ~own & ~relevant[det_idx]
        key, inverse = np.unique(det_idx[other] * n_cls + gt_cls[other], return_inverse=True)
        other_sum = np.bincount(inverse.ravel(), inter[other], minlength=len(key))
        det, cls = np.divmod(key, n_cls)
        hit = np.round(other_sum, decimals) >= np.round(cttc * det_len[det], decimals)
        cross = (det[hit], cls[hit])
    return relevant, cross, (det_idx[own], gt_idx[own], inter[own])
