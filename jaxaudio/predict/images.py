"""Run a trained scene classifier on a user's own images.

Every image is read as the evaluation reads a test image (the reader's mode rules, resized to the
model's square size, normalised with the run's mean and std) and gets its predicted class, its
probability and the next best classes. An unreadable or truncated image fails with its reason,
naming the file; the other images are still classified.

  out_dir/predictions.csv   path, predicted, probability, then top-k "class:probability" pairs
  out_dir/summary.json      counts per predicted class, failures with their reasons, settings
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from jaxaudio.data.images import IMAGE_EXTENSIONS, load_image, normalise
from jaxaudio.errors import JaxAudioError
from jaxaudio.predict.outputs import write_json
from jaxaudio.predict.progress import FileProgress
from jaxaudio.io import paths

logger = logging.getLogger("jaxaudio.predict")


@dataclasses.dataclass(frozen=True)
class ImagePredictor:
    """logits_batch: ``(batch, H, W, C) float32 -> (batch, classes)``, called with full batches of
    ``batch_size`` rows (padding rows are zeros); the rest is how the run read its images."""

    logits_batch: Callable[[np.ndarray], np.ndarray]
    batch_size: int
    size: int
    channels: int
    mean: np.ndarray
    std: np.ndarray
    class_names: Sequence[str]


def find_images(inputs: Sequence[os.PathLike | str]) -> tuple[list[Path], list[dict]]:
    """Images named by ``inputs`` (files, or folders searched recursively, sorted), each once;
    and ``{"path", "error"}`` for inputs that do not exist. A file named explicitly is taken
    whatever its extension (PIL decides)."""
    files, missing, seen = [], [], set()
    for item in inputs:
        path = Path(item)
        found = ([Path(root) / n for root, _, names in os.walk(path) for n in names
                  if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".")] if path.is_dir()
                 else [path] if path.exists() else None)
        if found is None:
            missing.append({"path": str(path), "error": "no such file or folder"})
            continue
        for f in sorted(found):
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    return files, missing


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def predictions_csv(rows: Sequence[dict], top_k: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "predicted", "probability", *(f"top{i + 1}" for i in range(top_k))])
    for r in rows:
        writer.writerow([r["path"], r["predicted"], f"{r['probability']:.6f}",
                         *(f"{name}:{p:.6f}" for name, p in r["top"])])
    return buffer.getvalue()


def predict_files(predictor: ImagePredictor, inputs: Sequence[str], out_dir: str, *, top_k: int = 3,
                  progress: bool | None = None) -> dict:
    """A class for every image in ``inputs``; writes and returns the summary (see the module doc)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    names = list(predictor.class_names)
    top_k = max(1, min(top_k, len(names)))
    found, failed = find_images(inputs)
    total = len(found) + len(failed)
    for entry in failed:
        logger.error("skipping %s: %s", entry["path"], entry["error"])
    if not found:
        logger.warning("predict: no images (%s) found in %s", " ".join(IMAGE_EXTENSIONS), [str(i) for i in inputs])
    paths.makedirs(out_dir)
    bar = FileProgress(total, logger, progress)
    for _ in failed:
        bar.update(failed=True)
    rows: list[dict] = []
    pending: list[tuple[str, np.ndarray]] = []

    def run_pending() -> None:
        batch = np.zeros((predictor.batch_size, predictor.size, predictor.size, predictor.channels), np.float32)
        for i, (_, image) in enumerate(pending):
            batch[i] = image
        logits = np.asarray(predictor.logits_batch(batch), np.float64)
        if logits.shape != (predictor.batch_size, len(names)):
            raise ValueError(f"logits_batch returned shape {logits.shape}; expected "
                             f"({predictor.batch_size}, {len(names)})")
        probs = _softmax(logits[: len(pending)])
        for (path, _), p in zip(pending, probs):
            order = np.argsort(-p)[:top_k]
            rows.append({"path": path, "predicted": names[order[0]], "probability": float(p[order[0]]),
                         "top": [(names[k], float(p[k])) for k in order]})
            bar.update()
        pending.clear()

    for path in found:
        try:
            image = load_image(path, predictor.size, predictor.channels)
        except (JaxAudioError, OSError) as err:
            logger.error("skipping %s: %s", path, err)
            failed.append({"path": str(path), "error": str(err)})
            bar.update(failed=True)
            continue
        pending.append((str(path), normalise(image, predictor.mean, predictor.std)))
        if len(pending) == predictor.batch_size:
            run_pending()
    if pending:
        run_pending()
    bar.close()
    csv_path = os.path.join(out_dir, "predictions.csv")
    with open(csv_path, "w") as f:
        f.write(predictions_csv(rows, top_k))
    summary = {"files": total,
               "written": len(rows), "failed": failed,
               "per_class": dict(sorted(Counter(r["predicted"] for r in rows).items())),
               "predictions_csv": csv_path, "summary_json": os.path.join(out_dir, "summary.json"),
               "settings": {"size": predictor.size, "channels": predictor.channels, "top_k": top_k,
                            "mean": [float(v) for v in predictor.mean], "std": [float(v) for v in predictor.std]}}
    write_json(summary["summary_json"], summary)
    logger.info("predict: %d images classified, %d failed -> %s", len(rows), len(failed), csv_path)
    return summary
