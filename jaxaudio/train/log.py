"""Logging for training runs: a metrics file, TensorBoard scalars, log lines, progress bars.

Only process 0 writes files and prints progress, so a multi-host run produces one record.
``jax.process_index`` is asked lazily (at the first write or log record), never at import,
because asking it starts the backend, which must wait for ``jax.distributed.initialize``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Mapping, Optional

import jax


def _process_index() -> int:
    return jax.process_index()


class MetricWriter:
    """Scalars to ``workdir/metrics.jsonl`` (one ``{"step", "split", **scalars}`` per line)
    and to TensorBoard under ``workdir/tb``.

    ``resume_step``: when a run restarts from a checkpoint at this step, lines written by the
    killed run after it are dropped (JSONL) or purged (TensorBoard ``purge_step``), so the
    files read as one history with no repeated steps. Without it, lines are appended.
    """

    def __init__(self, workdir: os.PathLike | str, *, resume_step: Optional[int] = None, tensorboard: bool = True):
        self.workdir = os.fspath(workdir)
        self.path = os.path.join(self.workdir, "metrics.jsonl")
        self._active = _process_index() == 0
        self._tb = None
        if not self._active:
            return
        os.makedirs(self.workdir, exist_ok=True)
        if resume_step is not None and os.path.exists(self.path):
            self._drop_after(resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(os.path.join(self.workdir, "tb"), purge_step=purge)

    def _drop_after(self, step: int) -> None:
        kept = [rec for rec in read_metrics(self.path) if rec.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for rec in kept:
                f.write(json.dumps(rec) + "\n")
        os.replace(tmp, self.path)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self._active:
            return
        values = {k: float(v) for k, v in scalars.items()}
        record = {"step": int(step), "split": split, **{k: _json_number(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{split}/{name}", value, int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_number(value: float):
    """JSON has no NaN/Inf; keep them readable as strings rather than invalid JSON."""
    return value if math.isfinite(value) else str(value)


def read_metrics(path: os.PathLike | str, split: Optional[str] = None) -> list[dict]:
    """Records of a metrics.jsonl file, optionally only one split; a torn last line is skipped."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if split is None or record.get("split") == split:
                records.append(record)
    return records


class _ProcessFilter(logging.Filter):
    """Adds ``record.process`` index lazily; drops INFO/DEBUG lines off process 0."""

    def filter(self, record: logging.LogRecord) -> bool:
        index = _process_index()
        record.process_index = index
        return index == 0 or record.levelno >= logging.WARNING


def get_logger(name: str) -> logging.Logger:
    """A logger whose lines carry a time stamp and ``[p<process>]``; INFO only on process 0."""
    logger = logging.getLogger(name)
    if not any(getattr(h, "_jaxaudio", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._jaxaudio = True  # type: ignore[attr-defined]
        handler.setFormatter(
            logging.Formatter("%(asctime)s [p%(process_index)s] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler.addFilter(_ProcessFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def progress(total: int, initial: int = 0, desc: str = "", *, force: Optional[bool] = None):
    """A tqdm bar on process 0 when stderr is a terminal.

    ``force=True`` (or env ``JAXAUDIO_PROGRESS=1``) shows it in non-terminal logs too, updated
    at most every 30 s so CI logs stay short; ``force=False`` hides it.
    """
    from tqdm.auto import tqdm

    if force is None and os.environ.get("JAXAUDIO_PROGRESS"):
        force = os.environ["JAXAUDIO_PROGRESS"] not in ("0", "false", "")
    tty = sys.stderr.isatty()
    show = _process_index() == 0 and (force if force is not None else tty)
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=not show,
        mininterval=0.1 if tty else 30.0,
        dynamic_ncols=True,
        file=sys.stderr,
    )
