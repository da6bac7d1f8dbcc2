"""Run a trained anomalous sound detection model on a user's own recordings.

Every file gets one anomaly score, scored as the model's evaluation scores a test clip: mixed to
mono, resampled to the model's rate, then **cropped at the end** to the model's clip length when
longer (the first ``clip_samples`` are scored, as ``ASDClipSource`` crops a ToyCar clip of 11 s
to 10 s) and **zero-padded at the end** when shorter (a note in the summary: the padding is
silence the model never heard at this length). A silent file (peak below the reader's
``SILENCE_PEAK``) is refused, as the evaluation refuses it.

The score needs the file's machine class "<type>/<id>" (an ID classifier's score is -log p(ID)):
``--machine TYPE/id_XX`` names it for every file, or the path does, as the DCASE2020 task-2
layout names it: the nearest parent folder named a machine type, and ``id_XX`` in the file name
(``.../fan/test/anomaly_id_02_00000012.wav``, ``.../fan/id_02_recording.wav``). A file whose class
cannot be decided, or whose class the model was not trained on, fails with an error naming the
file and the known classes; the other files are still scored.

  out_dir/scores.csv     file, machine_type, machine_id, score, threshold, decision (anomaly when
                         score > its class's threshold, strictly, as the DCASE baselines decide)
  out_dir/summary.json   counts, failures with their reasons, the thresholds file, per-file notes

A model whose outputs do not have the declared shape raises at once: that is a wiring error.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from jaxaudio.audio.io import pad_or_crop
from jaxaudio.data.asd import MACHINE_TYPES, SILENCE_PEAK
from jaxaudio.errors import AudioFileError, ConfigError, DataFormatError
from jaxaudio.io import paths
from jaxaudio.predict import outputs
from jaxaudio.predict.files import gather_inputs, read_for_model
from jaxaudio.predict.progress import FileProgress

logger = logging.getLogger("jaxaudio.predict")

SCORES_HEADER = ("file", "machine_type", "machine_id", "score", "threshold", "decision")
# "id_" and two digits, not inside a longer word or number ("valid_02", "id_123" do not count).
_ID_IN_NAME = re.compile(r"(?<![a-z0-9])id_(\d{2})(?![0-9])", re.IGNORECASE)
_MACHINE_ARG = re.compile(r"^([^/\s]+)/(id_\d{2})$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ASDPredictor:
    """A trained ASD model as prediction needs it.

    score_batch: ``(batch_size, clip_samples)`` float32 waveforms and ``(batch_size,)`` int32 class
      indices into ``class_names`` -> ``(batch_size,)`` anomaly scores (higher: more anomalous).
      Always called with exactly ``batch_size`` rows (rows of zeros with class -1 pad the last
      batch, as the evaluator pads), so a jitted function compiles once.
    class_names: the model's "<type>/<id>" classes (``fan/id_00``), in its class-index order.
    thresholds: ``{class name: decision threshold}`` for every class.
    thresholds_file: where they came from (named in the summary).
    """

    score_batch: Callable[[np.ndarray, np.ndarray], np.ndarray]
    batch_size: int
    sample_rate: int
    clip_samples: int
    class_names: tuple[str, ...]
    thresholds: Mapping[str, float]
    thresholds_file: str = ""

    def __post_init__(self):
        for name in ("batch_size", "sample_rate", "clip_samples"):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise ValueError(f"ASDPredictor.{name} must be a positive integer, got {value!r}")
        names = tuple(str(c) for c in self.class_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"ASDPredictor.class_names must be non-empty and unique, got {names}")
        bad = [c for c in names if c.count("/") != 1 or not all(c.split("/"))]
        if bad:
            raise ValueError(f"ASDPredictor.class_names must be '<machine_type>/<machine_id>', got {bad}")
        missing = [c for c in names if c not in self.thresholds]
        if missing:
            raise ValueError(f"ASDPredictor.thresholds has no threshold for {missing}")
        table = {c: float(self.thresholds[c]) for c in names}
        odd = {c: t for c, t in table.items() if not math.isfinite(t)}
        if odd:
            raise ValueError(f"ASDPredictor.thresholds must be finite, got {odd}")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "thresholds", table)

    @property
    def machine_types(self) -> tuple[str, ...]:
        return tuple(sorted({c.split("/")[0] for c in self.class_names}))


# ----------------------------------------------------------------------- the machine class


def _known(class_names: Sequence[str]) -> str:
    return ", ".join(class_names)


def parse_machine(machine: str, class_names: Sequence[str]) -> str:
    """The class named by ``--machine TYPE/id_XX``: one of ``class_names`` (the machine type's
    case as the model spells it); anything else is a ConfigError listing the known classes."""
    match = _MACHINE_ARG.match(str(machine).strip())
    if not match:
        raise ConfigError(f"--machine {machine!r}: expected TYPE/id_XX, e.g. {class_names[0]}; known classes: "
                          f"{_known(class_names)}")
    by_lower = {c.lower(): c for c in class_names}
    name = by_lower.get(f"{match.group(1)}/{match.group(2)}".lower())
    if name is None:
        raise ConfigError(f"--machine {machine!r}: the model was not trained on this machine; known classes: "
                          f"{_known(class_names)}")
    return name


def machine_class(path: os.PathLike | str, class_names: Sequence[str], machine: Optional[str] = None) -> str:
    """The "<type>/<id>" class of the file at ``path``: ``machine`` (``--machine``) when given,
    else the nearest parent folder named a machine type (the model's or DCASE2020's six, any
    case) and the one ``id_XX`` in the file name. Raises DataFormatError naming the file when
    that cannot be decided or names a class the model was not trained on."""
    if machine is not None:
        return parse_machine(machine, class_names)
    path = Path(path)
    types = {t.lower(): t for t in MACHINE_TYPES}
    types.update({c.split("/")[0].lower(): c.split("/")[0] for c in class_names})
    machine_type = next((types[p.name.lower()] for p in Path(os.path.abspath(path)).parents
                         if p.name.lower() in types), None)
    ids = sorted({f"id_{m}" for m in _ID_IN_NAME.findall(path.stem)})
    problems = []
    if machine_type is None:
        problems.append(f"no parent folder is named a machine type ({', '.join(sorted(types.values()))})")
    if not ids:
        problems.append("the file name holds no machine ID (id_XX, e.g. anomaly_id_02_00000012.wav)")
    elif len(ids) > 1:
        problems.append(f"the file name holds more than one machine ID ({', '.join(ids)})")
    if problems:
        raise DataFormatError(path, f"cannot tell which machine this is: {'; '.join(problems)}. Put it under a "
                                    "folder named its machine type with id_XX in its name, or pass --machine "
                                    f"TYPE/id_XX; known classes: {_known(class_names)}")
    name = f"{machine_type}/{ids[0]}"
    by_lower = {c.lower(): c for c in class_names}
    if name.lower() not in by_lower:
        raise DataFormatError(path, f"machine {name} (from its path) is not one the model was trained on; known "
                                    f"classes: {_known(class_names)}")
    return by_lower[name.lower()]


# ------------------------------------------------------------------------------- the driver


def _call_model(predictor: ASDPredictor, rows: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Scores ``(len(rows),)`` float64 from one full batch."""
    audio = np.zeros((predictor.batch_size, predictor.clip_samples), np.float32)
    class_id = np.full((predictor.batch_size,), -1, np.int32)
    for i, (clip, k) in enumerate(rows):
        audio[i], class_id[i] = clip, k
    scores = np.asarray(predictor.score_batch(audio, class_id), np.float64)
    if scores.shape not in ((predictor.batch_size,), (predictor.batch_size, 1)):
        raise ValueError(f"score_batch returned shape {scores.shape}; expected ({predictor.batch_size},): one "
                         "score per row")
    return scores.reshape(-1)[: len(rows)]


def _fmt(value: float) -> str:
    return outputs.SCORE_FORMAT % value


def scores_csv(rows: Sequence[dict]) -> str:
    """``SCORES_HEADER`` then one line per scored file (scores in nine significant digits)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCORES_HEADER)
    for r in rows:
        writer.writerow([r["path"], r["machine_type"], r["machine_id"], _fmt(r["score"]), _fmt(r["threshold"]),
                         r["decision"]])
    return buffer.getvalue()


def predict_files(
    predictor: ASDPredictor,
    inputs: Sequence[str],
    out_dir: str,
    *,
    machine: Optional[str] = None,
    progress: bool | None = None,
) -> dict:
    """An anomaly score and a decision for every audio file in ``inputs`` (files and/or folders,
    searched recursively, sorted). ``machine``: "TYPE/id_XX" for every file (else from each path).
    ``progress``: None = a bar on a terminal and a log line every few files elsewhere, True = a bar
    always, False = neither.

    Returns (and writes to out_dir/summary.json) a dict with ``files`` (audio files found plus
    inputs that do not exist), ``written``, ``anomalies``, ``normals``, ``failed`` ([{"path",
    "error"}]), ``per_class`` ({class: {"files", "anomalies"}}), ``scores_csv``, ``summary_json``,
    ``thresholds_file``, ``settings`` and ``clips`` (per scored file: path, class, score, threshold,
    decision, duration and a note when it was cropped or padded).
    """
    names = predictor.class_names
    if machine is not None:
        machine = parse_machine(machine, names)   # a wrong --machine fails every file: say so once
    found, failed = gather_inputs(inputs, logger)
    total = len(found) + len(failed)
    paths.makedirs(out_dir)
    index = {c: i for i, c in enumerate(names)}
    clip_seconds = predictor.clip_samples / predictor.sample_rate
    clips: list[dict] = []
    pending: list[tuple[dict, np.ndarray]] = []
    bar = FileProgress(total, logger, progress)
    for _ in failed:
        bar.update(failed=True)

    def run_pending() -> None:
        scores = _call_model(predictor, [(clip, index[row["class"]]) for row, clip in pending])
        for (row, _), score in zip(pending, scores):
            if not math.isfinite(score):
                err = "the model produced a non-finite score (NaN or Inf)"
                logger.error("skipping %s: %s", row["path"], err)
                failed.append({"path": row["path"], "error": err})
                bar.update(failed=True)
                continue
            row["score"] = float(score)
            row["decision"] = "anomaly" if score > row["threshold"] else "normal"
            clips.append(row)
            bar.update()
        pending.clear()

    try:
        for path in found:
            try:
                name = machine_class(path, names, machine)
                audio, duration = read_for_model(path, predictor.sample_rate)
                peak = float(np.max(np.abs(audio)))
                if peak < SILENCE_PEAK:
                    raise AudioFileError(path, f"clip is silent (peak amplitude {peak:.3g} < {SILENCE_PEAK:g})")
            except (AudioFileError, DataFormatError) as err:
                logger.error("skipping %s", err)
                failed.append({"path": str(path), "error": err.problem})
                bar.update(failed=True)
                continue
            note = None
            if len(audio) > predictor.clip_samples:
                note = (f"longer than the model's {clip_seconds:g}-s clip: its first {clip_seconds:g} s were scored "
                        "(the end is cropped, as in evaluation)")
            elif len(audio) < predictor.clip_samples:
                note = f"shorter than the model's {clip_seconds:g}-s clip: zero-padded at the end"
            machine_type, machine_id = name.split("/")
            row = {"path": str(path), "class": name, "machine_type": machine_type, "machine_id": machine_id,
                   "threshold": predictor.thresholds[name], "duration": duration, "note": note}
            pending.append((row, np.ascontiguousarray(pad_or_crop(audio, predictor.clip_samples), np.float32)))
            if len(pending) == predictor.batch_size:
                run_pending()
        if pending:
            run_pending()
    finally:
        bar.close()

    order = {str(p): i for i, p in enumerate(found)}
    clips.sort(key=lambda r: order[r["path"]])
    failed.sort(key=lambda r: order.get(r["path"], -1))
    csv_path = paths.join(out_dir, "scores.csv")
    paths.write_text_atomic(csv_path, scores_csv(clips))
    per_class: dict[str, Counter] = {}
    for r in clips:
        per_class.setdefault(r["class"], Counter())["files"] += 1
        per_class[r["class"]]["anomalies"] += r["decision"] == "anomaly"
    notes = Counter("cropped" if r["note"].startswith("longer") else "padded" for r in clips if r["note"])
    if notes:
        logger.warning("predict: %d file(s) longer than the model's %g-s clip were cropped to it, %d shorter were "
                       "zero-padded (see summary.json)", notes["cropped"], clip_seconds, notes["padded"])
    anomalies = sum(r["decision"] == "anomaly" for r in clips)
    summary_path = paths.join(out_dir, "summary.json")
    summary = {
        "files": total,
        "written": len(clips),
        "anomalies": anomalies,
        "normals": len(clips) - anomalies,
        "failed": failed,
        "per_class": {c: dict(v) for c, v in sorted(per_class.items())},
        "cropped": notes["cropped"],
        "padded": notes["padded"],
        "out_dir": os.fspath(out_dir),
        "scores_csv": csv_path,
        "summary_json": summary_path,
        "thresholds_file": predictor.thresholds_file,
        "settings": {"sample_rate": predictor.sample_rate, "clip_samples": predictor.clip_samples,
                     "clip_seconds": clip_seconds, "batch_size": predictor.batch_size, "machine": machine,
                     "class_names": list(names), "thresholds": dict(predictor.thresholds)},
        "clips": clips,
    }
    outputs.write_json(summary_path, summary)
    log = logger.warning if failed else logger.info
    log("predict: %d of %d files scored into %s, %d anomalous, %d failed", len(clips), total, csv_path, anomalies,
        len(failed))
    return summary
