"""What prediction writes: sed_scores_eval score tables, DCASE event lists, the summary."""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from jaxaudio.io import paths

# Nine significant digits round-trip every float32 exactly (FLT_DECIMAL_DIG = 9).
SCORE_FORMAT = "%.9g"
# Frame boundaries are rounded to the nanosecond and written in Python's shortest repr, so a
# boundary shared by two frames is the same string (and the same float) on both rows.
TIME_DECIMALS = 9

EVENTS_HEADER = "filename\tonset\toffset\tevent_label"


def _time(t: float) -> str:
    return repr(float(t))


def scores_tsv(timestamps: np.ndarray, scores: np.ndarray, class_names: Sequence[str]) -> str:
    """sed_scores_eval's format: `onset offset <class>...`, one row per frame, tab-separated."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (len(timestamps) - 1, len(class_names)):
        raise ValueError(
            f"scores of shape {scores.shape} do not fit {len(timestamps)} timestamps and "
            f"{len(class_names)} classes"
        )
    times = [_time(t) for t in timestamps]
    lines = ["\t".join(["onset", "offset", *class_names])]
    for i, row in enumerate(scores.tolist()):
        lines.append(
            f"{times[i]}\t{times[i + 1]}\t" + "\t".join(SCORE_FORMAT % v for v in row)
        )
    return "\n".join(lines) + "\n"


def detect_events(
    timestamps: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    thresholds: np.ndarray,
) -> list[tuple[float, float, str]]:
    """Frames with score > threshold (strict, as the DESED baseline); each run of active frames
    of one class is one event [onset of its first frame, offset of its last). Sorted by onset,
    then class order."""
    active = np.asarray(scores) > np.asarray(thresholds)[None, :]
    found = []
    for k, label in enumerate(class_names):
        change = np.diff(np.concatenate([[0], active[:, k].astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
        for s, e in zip(starts, ends):
            found.append((float(timestamps[s]), k, float(timestamps[e]), label))
    found.sort(key=lambda ev: (ev[0], ev[1]))
    return [(onset, offset, label) for onset, _, offset, label in found]


def events_tsv(rows: Sequence[tuple[str, float, float, str]]) -> str:
    """The DCASE/DESED event list: `filename onset offset event_label`."""
    lines = [EVENTS_HEADER]
    lines += [f"{name}\t{_time(on)}\t{_time(off)}\t{label}" for name, on, off, label in rows]
    return "\n".join(lines) + "\n"


def write_json(path: os.PathLike | str, obj) -> None:
    paths.write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
