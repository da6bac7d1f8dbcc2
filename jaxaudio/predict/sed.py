"""Run a trained sound event detection model on a user's own recordings.

A recording of any length, rate and channel count is mixed to mono and resampled to the
model's rate, cut into clip-length windows that overlap, and each window is scored by the
model. The frame grid of window k starts `k * hop_frames` output frames into the file, so
overlapping windows score the *same* frames and stitching is a plain average of the windows
that cover a frame. The file's last window and a file shorter than one clip are zero-padded;
frames past the end of the file are dropped, except a final partial frame, which is kept up
to the file's duration (so the scores cover exactly [0, duration]).

The whole-file scores are then post-processed (e.g. a class-wise median filter) and written:

  out_dir/scores/<clip>.tsv     sed_scores_eval's format, the post-processed scores (the ones
                                PSDS is computed on), every float32 written exactly
  out_dir/events.tsv            DCASE format, post-processed scores > threshold, runs merged
  out_dir/timelines/<clip>.png  spectrogram, scores and events of the first `plots` files
  out_dir/summary.json          what was done, and which files failed and why

A file that cannot be read is logged (ERROR, logger `jaxaudio.predict`) and listed in the
summary; the others are still processed. A model whose outputs do not have the declared
shapes raises at once: that is a wiring error, not a property of one file.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from jaxaudio.errors import AudioFileError
from jaxaudio.io import paths
from jaxaudio.predict import outputs
from jaxaudio.predict.files import InputFile, assign_clip_ids, gather_inputs, read_for_model
from jaxaudio.predict.progress import FileProgress

logger = logging.getLogger("jaxaudio.predict")

# A trailing piece of the file shorter than this many frames gets no frame of its own: the
# previous frame is stretched to the file's end instead (avoids near-zero-length frames).
_PARTIAL_FRAME_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class SEDPredictor:
    """A trained SED model as prediction needs it.

    predict_batch: `(batch_size, clip_samples)` float32 waveforms -> {"strong": `(batch_size,
      frames, classes)` probabilities, "weak": `(batch_size, classes)`}. Always called with
      exactly `batch_size` rows (zero rows pad the last batch), so a jitted function compiles once.
    frame_timestamps: `(frames + 1,)` frame boundaries in seconds within one clip; a uniform
      grid starting at 0 (e.g. `FrameLabelEncoder.timestamps()`).
    postprocess: `(time, classes)` -> same shape; applied to the stitched whole-file scores.
    threshold: one value, or one per class, for events (score > threshold).
    """

    predict_batch: Callable[[np.ndarray], dict]
    batch_size: int
    sample_rate: int
    clip_samples: int
    frame_timestamps: np.ndarray
    class_names: tuple[str, ...]
    postprocess: Callable[[np.ndarray], np.ndarray]
    threshold: float | Sequence[float] = 0.5

    def __post_init__(self):
        for name in ("batch_size", "sample_rate", "clip_samples"):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise ValueError(f"SEDPredictor.{name} must be a positive integer, got {value!r}")
        ts = np.asarray(self.frame_timestamps, dtype=np.float64)
        if ts.ndim != 1 or len(ts) < 2:
            raise ValueError(
                f"SEDPredictor.frame_timestamps must be (frames + 1,) boundaries, got shape {ts.shape}"
            )
        hop = (ts[-1] - ts[0]) / (len(ts) - 1)
        if abs(ts[0]) > 1e-9 or hop <= 0 or not np.allclose(np.diff(ts), hop, rtol=1e-6, atol=1e-9):
            raise ValueError(
                "SEDPredictor.frame_timestamps must be a uniform grid starting at 0, got "
                f"{ts[:3].tolist()} ... {ts[-2:].tolist()}"
            )
        names = tuple(str(c) for c in self.class_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"SEDPredictor.class_names must be non-empty and unique, got {names}")
        for c in names:
            if not c or any(ch in c for ch in "\t\n\r"):
                raise ValueError(f"class name {c!r} is empty or holds a tab/newline (breaks the tsv)")
        thr = np.asarray(self.threshold, dtype=np.float64)
        if thr.ndim > 1 or (thr.ndim == 1 and len(thr) != len(names)):
            raise ValueError(
                f"SEDPredictor.threshold must be one value or {len(names)} (one per class), "
                f"got {self.threshold!r}"
            )
        object.__setattr__(self, "frame_timestamps", ts)
        object.__setattr__(self, "class_names", names)

    @property
    def frames(self) -> int:
        return len(self.frame_timestamps) - 1

    @property
    def frame_seconds(self) -> float:
        return float(self.frame_timestamps[-1] / self.frames)

    @property
    def thresholds(self) -> np.ndarray:
        """`(classes,)` float64."""
        return np.broadcast_to(
            np.asarray(self.threshold, dtype=np.float64), (len(self.class_names),)
        ).copy()


# ----------------------------------------------------------------------------- the frame grid


def window_hop_frames(frames: int, overlap: float) -> int:
    """Window hop in output frames: `frames * (1 - overlap)` rounded, at least 1."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    return max(1, min(frames, int(round(frames * (1.0 - overlap)))))


def output_frames(duration: float, frame_seconds: float) -> int:
    """Frames covering [0, duration]: whole frames plus a final partial one (at least one)."""
    return max(1, math.ceil(duration / frame_seconds - _PARTIAL_FRAME_TOLERANCE))


def window_count(n_frames: int, frames: int, hop_frames: int) -> int:
    """Windows of `frames` frames, `hop_frames` apart, needed to cover `n_frames` frames."""
    return 1 + max(0, math.ceil((n_frames - frames) / hop_frames))


def file_timestamps(n_frames: int, frame_seconds: float, duration: float) -> np.ndarray:
    """`(n_frames + 1,)` boundaries of the whole-file grid; the last one is the duration."""
    ts = np.arange(n_frames + 1, dtype=np.float64) * frame_seconds
    ts[-1] = duration
    return np.round(ts, outputs.TIME_DECIMALS)


def stitch(window_scores: np.ndarray, hop_frames: int, n_frames: int) -> np.ndarray:
    """Average of overlapping windows' scores on the whole-file grid.

    window_scores: `(windows, frames, classes)`, window k starting at frame `k * hop_frames`.
    Returns `(n_frames, classes)` float32; frames past `n_frames` are dropped.
    """
    st = _Stitcher(window_scores.shape[1], window_scores.shape[2], hop_frames, n_frames)
    for k, s in enumerate(window_scores):
        st.add(k, s)
    return st.result()


class _Stitcher:
    def __init__(self, frames: int, classes: int, hop_frames: int, n_frames: int):
        self.frames, self.hop, self.n = frames, hop_frames, n_frames
        self.sums = np.zeros((n_frames, classes), np.float64)
        self.counts = np.zeros((n_frames,), np.int64)

    def add(self, k: int, scores: np.ndarray) -> None:
        start = k * self.hop
        stop = min(start + self.frames, self.n)
        if stop > start:
            self.sums[start:stop] += scores[: stop - start]
            self.counts[start:stop] += 1

    def result(self) -> np.ndarray:
        if np.any(self.counts == 0):
            raise AssertionError("a frame is covered by no window")  # window_count guarantees it
        return (self.sums / self.counts[:, None]).astype(np.float32)


# ------------------------------------------------------------------------------ the file jobs


class _FileJob:
    """One readable file on its way through the model: its windows and the stitcher."""

    def __init__(self, item: InputFile, audio: np.ndarray, duration: float,
                 predictor: SEDPredictor, hop_frames: int):
        self.item, self.duration = item, duration
        self.n_frames = output_frames(duration, predictor.frame_seconds)
        self.n_windows = window_count(self.n_frames, predictor.frames, hop_frames)
        hop_samples = hop_frames * predictor.frame_seconds * predictor.sample_rate
        self.starts = [int(round(k * hop_samples)) for k in range(self.n_windows)]
        self.clip_samples = predictor.clip_samples
        needed = self.starts[-1] + self.clip_samples
        self.audio = np.pad(audio, (0, needed - len(audio))) if len(audio) < needed else audio
        self.stitcher = _Stitcher(predictor.frames, len(predictor.class_names), hop_frames, self.n_frames)
        self.received = 0

    def window(self, k: int) -> np.ndarray:
        return self.audio[self.starts[k]: self.starts[k] + self.clip_samples]

    def add(self, k: int, scores: np.ndarray) -> None:
        self.stitcher.add(k, scores)
        self.received += 1

    @property
    def complete(self) -> bool:
        return self.received == self.n_windows


def _call_model(predictor: SEDPredictor, windows: list[np.ndarray]) -> np.ndarray:
    """Scores `(len(windows), frames, classes)` from one full batch (zero rows pad it)."""
    batch = np.zeros((predictor.batch_size, predictor.clip_samples), np.float32)
    for i, w in enumerate(windows):
        batch[i] = w
    out = predictor.predict_batch(batch)
    if not hasattr(out, "keys") or "strong" not in out:
        keys = list(out.keys()) if hasattr(out, "keys") else type(out).__name__
        raise ValueError(f"predict_batch must return a dict with 'strong' (and 'weak'); got {keys}")
    strong = np.asarray(out["strong"], dtype=np.float32)
    expected = (predictor.batch_size, predictor.frames, len(predictor.class_names))
    if strong.shape != expected:
        raise ValueError(
            f"predict_batch returned 'strong' of shape {strong.shape}; expected {expected} "
            "(batch_size, frames = len(frame_timestamps) - 1, classes = len(class_names))"
        )
    return strong[: len(windows)]


# ---------------------------------------------------------------------------------- the driver


def predict_files(
    predictor: SEDPredictor,
    inputs: Sequence[str],
    out_dir: str,
    *,
    overlap: float = 0.5,
    plots: int = 5,
    progress: bool | None = None,
) -> dict:
    """Scores, events and timelines for every audio file in `inputs` (files and/or folders).

    Folders are searched recursively for .wav/.flac/.ogg/.mp3 (sorted). `overlap` is the
    fraction of a clip that consecutive windows share (0.5: hop of half a clip, rounded to a
    whole number of output frames). `plots`: timelines for the first that many files written.
    `progress`: None = a bar on a terminal and a log line every few files elsewhere, True = a
    bar always, False = neither.

    Returns (and writes to out_dir/summary.json) a dict with `files` (audio files found plus
    inputs that do not exist), `written`,
    `failed` ([{"path", "error"}]), `events` (count), the output paths (`scores_dir`,
    `events_tsv`, `timelines`, `summary_json`) and `clips` (per written file: path, clip,
    filename, duration, frames, windows, events, scores).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    hop_frames = window_hop_frames(predictor.frames, overlap)
    found, failed = gather_inputs(inputs, logger)
    items = assign_clip_ids(found)
    total = len(items) + len(failed)

    scores_dir = paths.join(out_dir, "scores")
    timelines_dir = paths.join(out_dir, "timelines")
    paths.makedirs(scores_dir)
    if plots > 0:
        paths.makedirs(timelines_dir)

    event_rows, clips, timelines = [], [], []
    bar = FileProgress(total, logger, progress)
    for _ in failed:
        bar.update(failed=True)

    def finish(job: _FileJob) -> None:
        scores = job.stitcher.result()
        post = np.asarray(predictor.postprocess(scores))
        if post.shape != scores.shape:
            raise ValueError(
                f"postprocess returned shape {post.shape} for scores of shape {scores.shape}; "
                "it must keep (time, classes)"
            )
        post = post.astype(np.float32)
        if not np.all(np.isfinite(post)):
            err = "the model produced non-finite scores (NaN or Inf)"
            logger.error("skipping %s: %s", job.item.path, err)
            failed.append({"path": str(job.item.path), "error": err})
            bar.update(failed=True)
            return
        ts = file_timestamps(job.n_frames, predictor.frame_seconds, job.duration)
        tsv = paths.join(scores_dir, job.item.clip_id + ".tsv")
        paths.write_text_atomic(tsv, outputs.scores_tsv(ts, post, predictor.class_names))
        events = outputs.detect_events(ts, post, predictor.class_names, predictor.thresholds)
        event_rows.extend((job.item.filename, on, off, label) for on, off, label in events)
        if len(timelines) < plots:
            png = paths.join(timelines_dir, job.item.clip_id + ".png")
            try:
                from jaxaudio.predict.plots import plot_timeline

                plot_timeline(png, job.audio, predictor.sample_rate, job.duration, ts, post,
                              predictor.class_names, predictor.thresholds, events,
                              title=str(job.item.path))
                timelines.append(png)
            except Exception as err:  # a figure must not cost the user the scores
                logger.warning("timeline for %s not drawn: %s: %s", job.item.path,
                               type(err).__name__, err)
        clips.append({
            "path": str(job.item.path), "clip": job.item.clip_id, "filename": job.item.filename,
            "duration": job.duration, "frames": job.n_frames, "windows": job.n_windows,
            "events": len(events), "scores": tsv,
        })
        bar.update()

    jobs: collections.deque[_FileJob] = collections.deque()
    pending: list[tuple[_FileJob, int]] = []

    def run_pending() -> None:
        scores = _call_model(predictor, [job.window(k) for job, k in pending])
        for (job, k), s in zip(pending, scores):
            job.add(k, s)
        pending.clear()
        while jobs and jobs[0].complete:
            finish(jobs.popleft())

    try:
        for item in items:
            try:
                audio, duration = read_for_model(item.path, predictor.sample_rate)
            except AudioFileError as err:
                logger.error("skipping %s", err)
                failed.append({"path": str(item.path), "error": err.problem})
                bar.update(failed=True)
                continue
            job = _FileJob(item, audio, duration, predictor, hop_frames)
            jobs.append(job)
            for k in range(job.n_windows):
                pending.append((job, k))
                if len(pending) == predictor.batch_size:
                    run_pending()
        if pending:
            run_pending()
    finally:
        bar.close()

    stale = _stale_tsvs(scores_dir, {c["clip"] for c in clips})
    events_path = paths.join(out_dir, "events.tsv")
    paths.write_text_atomic(events_path, outputs.events_tsv(event_rows))
    summary_path = paths.join(out_dir, "summary.json")
    summary = {
        "files": total,
        "written": len(clips),
        "failed": failed,
        "events": len(event_rows),
        "out_dir": os.fspath(out_dir),
        "scores_dir": scores_dir,
        "events_tsv": events_path,
        "timelines": timelines,
        "summary_json": summary_path,
        "stale_scores": stale,
        "settings": {
            "sample_rate": predictor.sample_rate, "clip_samples": predictor.clip_samples,
            "frames_per_clip": predictor.frames, "frame_seconds": predictor.frame_seconds,
            "overlap": overlap, "hop_frames": hop_frames,
            "threshold": predictor.thresholds.tolist(), "class_names": list(predictor.class_names),
        },
        "clips": clips,
    }
    outputs.write_json(summary_path, summary)
    log = logger.warning if failed else logger.info
    log("predict: %d of %d files written to %s, %d events, %d failed", len(clips), total,
        out_dir, len(event_rows), len(failed))
    return summary


def _stale_tsvs(scores_dir: str, clip_ids: set[str]) -> list[str]:
    """Score files in scores_dir this run did not write (an earlier run's, or a file that failed
    now): they would join an evaluation of the folder, so they are named in a warning."""
    if paths.is_remote(scores_dir) or not os.path.isdir(scores_dir):
        return []
    stale = sorted(
        str(Path(scores_dir) / name) for name in os.listdir(scores_dir)
        if name.endswith(".tsv") and name[: -len(".tsv")] not in clip_ids
    )
    if stale:
        logger.warning(
            "%s holds %d score files this run does not write (e.g. %s); they are left there, "
            "remove them before evaluating the folder as a whole", scores_dir, len(stale),
            os.path.basename(stale[0]),
        )
    return stale
