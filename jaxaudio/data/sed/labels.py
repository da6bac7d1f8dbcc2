"""Events <-> frame targets: encode labels for training, decode frame scores into events.

Frame i covers the half-open interval [i * hop, (i + 1) * hop) with hop = clip_seconds / n_frames,
the grid of the model's output frames (e.g. 10 s / 156 frames for the DESED baseline).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from jaxaudio.errors import ConfigError, ShapeError

# Tolerance, in frames, on the floor/ceil of event boundaries: an onset written as 0.64 s on a
# 0.064 s grid gives 9.999999 frames in floating point and must still map to frame 10.
_FRAME_TOLERANCE = 1e-6


def _class_windows(windows: int | Sequence[int], n_classes: int) -> list[int]:
    """One window per class; they come from config (median_window), hence ConfigError."""
    per_class = np.ndim(windows) > 0
    windows = list(windows) if per_class else [windows] * n_classes
    if len(windows) != n_classes:
        raise ConfigError(
            f"median windows {windows}: got {len(windows)} windows for {n_classes} classes; "
            "give one window for all classes or one per class"
        )
    for k, w in enumerate(windows):
        if not _is_whole_positive(w):
            which = f" (class {k})" if per_class else ""
            raise ConfigError(f"median window {w}{which} must be a whole number of frames >= 1")
    return [int(w) for w in windows]


def _is_whole_positive(w) -> bool:
    if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.integer, np.floating)):
        return False
    return float(w).is_integer() and w >= 1


def _class_wise(scipy_filter, name: str, probs, windows) -> np.ndarray:
    """``scipy_filter`` over time, column by column, each class with its own window (mode 'reflect')."""
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ShapeError(f"{name}: expected probs of shape (time, classes), got {probs.shape}")
    out = np.empty_like(probs)
    for k, w in enumerate(_class_windows(windows, probs.shape[1])):
        out[:, k] = probs[:, k] if w == 1 else scipy_filter(probs[:, k], size=w, mode="reflect")
    return out


def median_filter(probs: np.ndarray, windows: int | Sequence[int]) -> np.ndarray:
    """Class-wise median filter over time of `probs` `(time, classes)`: scipy.ndimage's, as the
    DESED baseline and Transformer4SED (``src/codec/decoder.py``) post-process.

    `windows` is one length for all classes or one per class (1 = unchanged). Even lengths are
    allowed, as the reference's class-wise windows are (e.g. 32 and 128 frames): scipy then takes
    frames ``i - w/2 .. i + w/2 - 1`` and the upper of the two middle values. Edges are mirrored
    including the edge sample (``... b a | a b c ...``, mode 'reflect'). A bad window is a
    ConfigError; probs that are not 2-d, a ShapeError.
    """
    return _class_wise(ndimage.median_filter, "median_filter", probs, windows)


def max_filter(probs: np.ndarray, windows: int | Sequence[int]) -> np.ndarray:
    """Class-wise maximum filter over time (scipy.ndimage's, edges mirrored): Transformer4SED's
    ``filter_type: max`` post-processing, which MAT-SED reports PSDS2 with (it widens detections,
    which PSDS2's cross-trigger-tolerant scenario rewards). `windows` as in ``median_filter``."""
    return _class_wise(ndimage.maximum_filter, "max_filter", probs, windows)


class FrameLabelEncoder:
    """Maps (onset, offset, label) events and weak label sets to float32 targets on a frame grid."""

    def __init__(self, classes: Sequence[str], clip_seconds: float, n_frames: int):
        if clip_seconds <= 0 or n_frames <= 0:
            raise ValueError(
                f"clip_seconds and n_frames must be positive, got {clip_seconds}, {n_frames}"
            )
        self.classes = tuple(classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique, got {self.classes}")
        self.clip_seconds = float(clip_seconds)
        self.n_frames = int(n_frames)
        self.frame_hop = self.clip_seconds / self.n_frames
        self._index = {name: i for i, name in enumerate(self.classes)}

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_index(self, label: str) -> int:
        try:
            return self._index[label]
        except KeyError:
            raise ValueError(f"unknown class {label!r}; known classes: {self.classes}") from None

    def encode_strong(self, events: Iterable[tuple[float, float, str]]) -> np.ndarray:
        """`(n_frames, classes)` targets: an event marks frames floor(onset/hop) up to
        ceil(offset/hop) (exclusive), clipped to the grid, so every frame that the event
        touches is active. Events outside the clip leave no mark."""
        target = np.zeros((self.n_frames, self.n_classes), np.float32)
        for onset, offset, label in events:
            k = self.class_index(label)
            first = int(np.floor(onset / self.frame_hop + _FRAME_TOLERANCE))
            last = int(np.ceil(offset / self.frame_hop - _FRAME_TOLERANCE))
            first, last = max(first, 0), min(last, self.n_frames)
            if last > first:
                target[first:last, k] = 1.0
        return target

    def encode_weak(self, labels: Iterable[str]) -> np.ndarray:
        """`(classes,)` multi-hot vector of the clip-level labels."""
        target = np.zeros((self.n_classes,), np.float32)
        for label in labels:
            target[self.class_index(label)] = 1.0
        return target

    def timestamps(self) -> np.ndarray:
        """`(n_frames + 1,)` frame boundaries in seconds (the format sed_scores_eval wants)."""
        return np.arange(self.n_frames + 1, dtype=np.float64) * self.frame_hop

    def decode_strong(
        self,
        probs: np.ndarray,
        threshold: float = 0.5,
        median_windows: int | Sequence[int] = 1,
    ) -> list[tuple[float, float, str]]:
        """Events from `(n_frames, classes)` scores: class-wise median filter, then frames with
        score > threshold (strict, as the DESED baseline), then each run of active frames
        becomes one event [first * hop, end * hop). Sorted by onset, then class order."""
        probs = np.asarray(probs)
        if probs.shape != (self.n_frames, self.n_classes):
            raise ShapeError(
                f"decode_strong: expected probs of shape (n_frames, classes) = "
                f"{(self.n_frames, self.n_classes)}, got {probs.shape}"
            )
        active = median_filter(probs, median_windows) > threshold
        events = []
        for k, label in enumerate(self.classes):
            # Run starts and ends are where the zero-padded activity changes value.
            change = np.diff(np.concatenate([[0], active[:, k].astype(np.int8), [0]]))
            starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
            for s, e in zip(starts, ends):
                events.append((k, float(s * self.frame_hop), float(e * self.frame_hop), label))
        events.sort(key=lambda ev: (ev[1], ev[0]))
        return [(onset, offset, label) for _, onset, offset, label in events]
