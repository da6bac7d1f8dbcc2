"""Transcribe a user's recordings with a trained speech recogniser.

Every file is read as evaluation reads an utterance (mixed to mono, resampled to the model's rate
with the same polyphase filter as ``jaxaudio.audio.io.read_audio``) and transcribed **whole, in
one pass**: nothing is cut, so no word is split at a window edge. For the compiled model to see a
few shapes only, a file is zero-padded at the end to the next multiple of ``bucket_seconds``
(default 2 s: a 4.3-s file runs in the 6-s bucket) and its true length goes with it (the model's
mask), so the padding changes nothing. Files longer than ``max_seconds`` (default 30 s, the
``--max_seconds`` option) are refused, each with an error naming it: the models train on short
utterances (the built-in corpus 1-3 s, AISHELL-1 about 5 s), a one-pass transcript of minutes
would be poor and costly, and cutting a file needs a voice activity detector this module does not
have; split such a file at its pauses first. A file longer than the model's longest training
bucket but within the cap is transcribed with a note (the summary's ``notes``).

Text: the ids each file decodes to, turned into text by the run's tokenizer exactly as the
evaluator turns them (``ASREvaluator``'s ``decode``): specials (``<blank> <s> </s> <unk>``) are
dropped. ``tokens``: the non-special tokens of the same ids, one per text character for the
character tokenizer, each with its time.

Token times (``token_times``, seconds; only for models that say where each token fired, as
Paraformer's CIF does, else null). Token k fired at encoder frame ``f_k`` (``fire_frames``; one
frame is ``frame_seconds``, 40 ms for a 10-ms hop subsampled 4x). The rule:

    end_k   = (f_k + 1) * frame_seconds            the end of the frame that fired it
    start_k = end_{k-1} (the frame after the previous fire), start_0 = 0

so the tokens tile ``[0, last end]`` without gaps or overlaps, as CIF integrates every frame into
the token it fires next (the first token's span holds any leading silence). Both ends are clipped
to the file's duration (the tail frame CIF adds at the end of an utterance may fire a token past
it). A token without a fire frame (-1: CIF's token count, ``floor(sum(alpha))``, one above its
fires by float rounding) ends at the file's end. Specials are dropped after the times are
computed, so a dropped token's span is not given to its neighbours. Times are rounded to the
nanosecond (``outputs.TIME_DECIMALS``).

  out_dir/transcripts.tsv    file, text, tokens (space-separated); one row per transcribed file
  out_dir/transcripts.jsonl  one object per transcribed file: file, text, tokens, token_times
                             ([[start_s, end_s], ...]), duration_s
  out_dir/summary.json       counts, failures with their reasons, per-file notes, settings

A file that cannot be read, is empty, shorter than the model's shortest input
(``ASRPredictor.min_seconds``: one encoder frame, 85 ms for Paraformer) or longer than the cap is
listed in ``failed`` with its reason; the other files are still transcribed. A model whose outputs
do not have the declared shapes raises at once: that is a wiring error.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from jaxaudio.errors import AudioFileError, ConfigError
from jaxaudio.io import paths
from jaxaudio.predict import outputs
from jaxaudio.predict.files import gather_inputs, read_for_model
from jaxaudio.predict.progress import FileProgress

logger = logging.getLogger("jaxaudio.predict")

TSV_HEADER = ("file", "text", "tokens")
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_BUCKET_SECONDS = 2.0
TOKENS, TOKEN_LEN, FIRE_FRAMES = "tokens", "token_len", "fire_frames"


@dataclasses.dataclass(frozen=True)
class ASRPredictor:
    """A trained speech recogniser as prediction needs it.

    transcribe: ``(audio (batch_size, samples) float32, audio_len (batch_size,) int32) ->
      {"tokens": (batch_size, L) int ids, "token_len": (batch_size,), "fire_frames": (batch_size,
      L) int (optional: the encoder frame that emitted each token, -1 for none)}``. Always called
      with exactly ``batch_size`` rows (rows of zeros with length 0 pad the last batch, as the
      evaluator pads) and ``samples`` one of a few bucket lengths, so a jitted function compiles
      once per bucket.
    sample_rate: the model's rate; frame_seconds: the duration of one ``fire_frames`` frame.
    tokens: id -> token string (the tokenizer's list). special_ids: ids that are no text.
    decode: ids -> text (the evaluator's; default: the non-special tokens joined).
    trained_seconds: the longest utterance training used (longer files get a note); 0: unknown.
    min_seconds: shorter files fail (the model's shortest input: one encoder frame); 0: none.
    """

    transcribe: Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]
    batch_size: int
    sample_rate: int
    frame_seconds: float
    tokens: tuple[str, ...]
    special_ids: frozenset = frozenset()
    decode: Optional[Callable[[Sequence[int]], str]] = None
    trained_seconds: float = 0.0
    min_seconds: float = 0.0

    def __post_init__(self):
        for name in ("batch_size", "sample_rate"):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise ValueError(f"ASRPredictor.{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.frame_seconds) and self.frame_seconds > 0):
            raise ValueError(f"ASRPredictor.frame_seconds must be positive, got {self.frame_seconds!r}")
        for name in ("trained_seconds", "min_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ASRPredictor.{name} must be >= 0, got {value!r}")
        tokens = tuple(str(t) for t in self.tokens)
        if not tokens:
            raise ValueError("ASRPredictor.tokens must not be empty")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "special_ids", frozenset(int(i) for i in self.special_ids))

    def text(self, ids: Sequence[int]) -> str:
        if self.decode is not None:
            return self.decode(list(ids))
        return "".join(self.tokens[i] for i in ids if i not in self.special_ids)


# ------------------------------------------------------------------------------ token times


def token_times(fire_frames: Sequence[int], frame_seconds: float, duration: float) -> list[list[float]]:
    """``[start_s, end_s]`` of each token from the encoder frames that fired them (the rule in
    the module docstring): token k ends at ``(fire_frames[k] + 1) * frame_seconds`` and starts
    where token k-1 ended (the first at 0); -1 (no fire frame) ends at ``duration``; both ends
    clipped to ``duration``. Ends never decrease, even for out-of-order frames."""
    times, start = [], 0.0
    for frame in (int(f) for f in fire_frames):
        end = duration if frame < 0 else min((frame + 1) * frame_seconds, duration)
        end = max(end, start)
        times.append([round(start, outputs.TIME_DECIMALS), round(end, outputs.TIME_DECIMALS)])
        start = end
    return times


# --------------------------------------------------------------------------------- buckets


def bucket_samples(samples: int, sample_rate: int, bucket_seconds: float) -> int:
    """The padded length of a ``samples``-long file: the next multiple of ``bucket_seconds``."""
    step = max(1, int(round(bucket_seconds * sample_rate)))
    return max(1, math.ceil(samples / step)) * step


def _check_options(max_seconds: float, bucket_seconds: float) -> None:
    if not (math.isfinite(bucket_seconds) and bucket_seconds > 0):
        raise ConfigError(f"bucket_seconds must be positive, got {bucket_seconds!r}")
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ConfigError(f"--max_seconds must be positive, got {max_seconds!r}")


# ------------------------------------------------------------------------------- the driver


def _call_model(predictor: ASRPredictor, rows: list[np.ndarray], samples: int) -> list[dict]:
    """Per row: ids (its ``token_len`` first tokens) and fire frames (or None)."""
    audio = np.zeros((predictor.batch_size, samples), np.float32)
    audio_len = np.zeros((predictor.batch_size,), np.int32)
    for i, clip in enumerate(rows):
        audio[i, :len(clip)], audio_len[i] = clip, len(clip)
    out = predictor.transcribe(audio, audio_len)
    tokens = np.asarray(out[TOKENS])
    lengths = np.asarray(out[TOKEN_LEN]).reshape(-1)
    if tokens.ndim != 2 or tokens.shape[0] != predictor.batch_size or lengths.shape != (predictor.batch_size,):
        raise ValueError(f"transcribe returned tokens {tokens.shape} and token_len {lengths.shape}; expected "
                         f"({predictor.batch_size}, L) and ({predictor.batch_size},)")
    fire = out.get(FIRE_FRAMES)
    if fire is not None:
        fire = np.asarray(fire)
        if fire.shape != tokens.shape:
            raise ValueError(f"transcribe returned fire_frames {fire.shape}; expected {tokens.shape}, like tokens")
    width, vocab = tokens.shape[1], len(predictor.tokens)
    results = []
    for i in range(len(rows)):
        n = int(lengths[i])
        if not 0 <= n <= width:
            raise ValueError(f"transcribe returned token_len {n} for a row of {width} tokens")
        ids = tokens[i, :n].astype(np.int64).tolist()
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"transcribe returned token ids {bad[:5]} outside the {vocab}-token vocabulary")
        results.append({"ids": ids, "fire": None if fire is None else fire[i, :n].tolist(), "full": n == width})
    return results


def transcripts_tsv(rows: Sequence[dict]) -> str:
    """``TSV_HEADER`` then one line per transcribed file (tab-separated, csv quoting)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_HEADER)
    for r in rows:
        writer.writerow([r["file"], r["text"], " ".join(r["tokens"])])
    return buffer.getvalue()


def transcripts_jsonl(rows: Sequence[dict]) -> str:
    keys = ("file", "text", "tokens", "token_times", "duration_s")
    return "".join(json.dumps({k: r[k] for k in keys}, ensure_ascii=False) + "\n" for r in rows)


def predict_files(
    predictor: ASRPredictor,
    inputs: Sequence[str],
    out_dir: str,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    bucket_seconds: float = DEFAULT_BUCKET_SECONDS,
    progress: bool | None = None,
) -> dict:
    """A transcript, its tokens and their times for every audio file in ``inputs`` (files and/or
    folders, searched recursively, sorted). ``max_seconds``: longer files fail (module
    docstring); ``bucket_seconds``: the padding step.
    ``progress``: None = a bar on a terminal and a log line every few files elsewhere, True = a
    bar always, False = neither.

    Returns (and writes to out_dir/summary.json) a dict with ``files`` (audio files found plus
    inputs that do not exist), ``written``, ``failed`` ([{"path", "error"}]), ``notes``
    ([{"path", "note"}]), ``out_dir``, ``transcripts_tsv``, ``transcripts_jsonl``,
    ``summary_json`` and ``settings``.
    """
    max_seconds, bucket_seconds = float(max_seconds), float(bucket_seconds)
    _check_options(max_seconds, bucket_seconds)
    min_seconds = predictor.min_seconds
    sr = predictor.sample_rate
    found, failed = gather_inputs(inputs, logger)
    total = len(found) + len(failed)
    paths.makedirs(out_dir)
    max_samples = int(math.floor(max_seconds * sr))
    min_samples = int(math.ceil(min_seconds * sr - 1e-6))
    rows: list[dict] = []
    notes: list[dict] = []
    pending: dict[int, list[tuple[dict, np.ndarray]]] = {}   # bucket samples -> waiting files
    bar = FileProgress(total, logger, progress)
    for _ in failed:
        bar.update(failed=True)

    def run_bucket(samples: int) -> None:
        waiting = pending.pop(samples)
        results = _call_model(predictor, [clip for _, clip in waiting], samples)
        for (row, _), result in zip(waiting, results):
            ids, fire = result["ids"], result["fire"]
            times = None if fire is None else token_times(fire, predictor.frame_seconds, row["duration_s"])
            keep = [k for k, t in enumerate(ids) if t not in predictor.special_ids]
            row["text"] = predictor.text(ids)
            row["tokens"] = [predictor.tokens[ids[k]] for k in keep]
            row["token_times"] = None if times is None else [times[k] for k in keep]
            if result["full"]:
                note = (f"the transcript filled the decoder's {len(ids)}-token buffer: its end may be missing; "
                        "split the file at its pauses")
                notes.append({"path": row["file"], "note": note})
                logger.warning("%s: %s", row["file"], note)
            rows.append(row)
            bar.update()

    try:
        for path in found:
            try:
                audio, duration = read_for_model(path, sr)
                if len(audio) > max_samples:
                    raise AudioFileError(path, f"{duration:.2f} s, longer than the {max_seconds:g}-s cap "
                                               "(--max_seconds): split it at its pauses, or raise --max_seconds")
                if len(audio) < min_samples:
                    raise AudioFileError(path, f"{duration:.3f} s, shorter than the {min_seconds:.3f} s the model "
                                               "needs to transcribe anything")
            except AudioFileError as err:
                logger.error("skipping %s", err)
                failed.append({"path": str(path), "error": err.problem})
                bar.update(failed=True)
                continue
            if predictor.trained_seconds and duration > predictor.trained_seconds:
                notes.append({"path": str(path), "note": (
                    f"{duration:.2f} s, longer than the model's longest training utterances "
                    f"({predictor.trained_seconds:g} s): transcribed in one pass; accuracy may drop")})
            samples = bucket_samples(len(audio), sr, bucket_seconds)
            row = {"file": str(path), "duration_s": duration}
            pending.setdefault(samples, []).append((row, np.ascontiguousarray(audio, np.float32)))
            if len(pending[samples]) == predictor.batch_size:
                run_bucket(samples)
        for samples in sorted(pending):
            run_bucket(samples)
    finally:
        bar.close()

    order = {str(p): i for i, p in enumerate(found)}
    rows.sort(key=lambda r: order[r["file"]])
    failed.sort(key=lambda r: order.get(r["path"], -1))
    notes.sort(key=lambda r: order[r["path"]])
    tsv_path = paths.join(out_dir, "transcripts.tsv")
    jsonl_path = paths.join(out_dir, "transcripts.jsonl")
    paths.write_text_atomic(tsv_path, transcripts_tsv(rows))
    paths.write_text_atomic(jsonl_path, transcripts_jsonl(rows))
    if notes:
        logger.warning("predict: %d file(s) have notes (longer than training or a full token buffer; see "
                       "summary.json)", len(notes))
    summary_path = paths.join(out_dir, "summary.json")
    summary = {
        "files": total,
        "written": len(rows),
        "failed": failed,
        "notes": notes,
        "out_dir": os.fspath(out_dir),
        "transcripts_tsv": tsv_path,
        "transcripts_jsonl": jsonl_path,
        "summary_json": summary_path,
        "settings": {"sample_rate": sr, "batch_size": predictor.batch_size, "max_seconds": max_seconds,
                     "bucket_seconds": bucket_seconds, "min_seconds": min_seconds,
                     "frame_seconds": predictor.frame_seconds, "trained_seconds": predictor.trained_seconds,
                     "token_times": None if rows and all(r["token_times"] is None for r in rows) else
                     "end = (fire_frame + 1) * frame_seconds, start = the previous token's end "
                     "(0 for the first), clipped to the duration"},
    }
    outputs.write_json(summary_path, summary)
    log = logger.warning if failed else logger.info
    log("predict: %d of %d files transcribed into %s, %d failed", len(rows), total, tsv_path, len(failed))
    return summary
