"""Logging for training runs: a metrics file, TensorBoard scalars, log lines, progress bars.

``progress`` is ``jaxaudio.utils.progress.progress`` (a tqdm bar on a terminal, a few plain lines
in a log file); it lives in ``utils`` so that ``data`` may use it too without importing ``train``.

Only process 0 writes files and prints progress, so a multi-host run produces one record.
The workdir may be a local folder or an object-store URL (``gs://``; ``jaxaudio.io.paths``).
``jax.process_index`` is asked lazily (at the first write or log record), never at import,
because asking it starts the backend, which must wait for ``jax.distributed.initialize``.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import warnings
from typing import Mapping, Optional

import jax

from jaxaudio.errors import DataFormatError
from jaxaudio.io import paths
from jaxaudio.utils.progress import progress  # noqa: F401  (re-exported: the train loop uses it)


def _process_index() -> int:
    return jax.process_index()


class MetricWriter:
    """Scalars to ``workdir/metrics.jsonl`` (one ``{"step", "split", **scalars}`` per line)
    and to TensorBoard under ``workdir/tb``.

    ``resume_step``: when a run restarts from a checkpoint at this step, lines written by the
    killed run after it are dropped (JSONL) or purged (TensorBoard ``purge_step``), so the
    files read as one history with no repeated steps. Without it, lines are appended.

    On an object store (``gs://`` workdir) nothing can be appended to an object, so the writer
    keeps the file's lines in memory and uploads the whole file after every record. Each
    upload replaces the object atomically, so a reader (or a restarted run) always sees a
    complete file that ends at some record, like the local file after a kill; and the file
    keeps its name and format, so every reader of ``metrics.jsonl`` works unchanged. The cost
    is one upload of the whole file per record: a few hundred lines of about 200 bytes for a
    run logging every 100 steps, so kilobytes per upload. (Numbered part files would upload
    less but would make every reader list and merge parts.) TensorBoard events go to
    ``gs://`` through ``google-cloud-storage`` (tensorboardX's own GCS writer); without that
    package TensorBoard is skipped with a warning.
    """

    def __init__(self, workdir: os.PathLike | str, *, resume_step: Optional[int] = None, tensorboard: bool = True):
        self.workdir = os.fspath(workdir)
        self.path = paths.join(self.workdir, "metrics.jsonl")
        self._remote = paths.is_remote(self.path)
        self._lines: list[str] = []  # the whole file, kept only for object stores
        self._active = _process_index() == 0
        self._tb = None
        if not self._active:
            return
        paths.makedirs(self.workdir)
        if paths.exists(self.path):
            records, torn = _read_records(self.path)
            if resume_step is not None:
                records = [rec for rec in records if rec.get("step", 0) <= resume_step]
            if resume_step is not None or torn:  # appending after a torn line would corrupt the next
                paths.write_text_atomic(self.path, "".join(json.dumps(rec) + "\n" for rec in records))
            if self._remote:
                self._lines = [json.dumps(rec) for rec in records]
        if tensorboard and _tensorboard_can_write(self.workdir):
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(paths.join(self.workdir, "tb"), purge_step=purge)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self._active:
            return
        values = {k: float(v) for k, v in scalars.items()}
        record = {"step": int(step), "split": split, **{k: _json_number(v) for k, v in values.items()}}
        if self._remote:
            self._lines.append(json.dumps(record))
            paths.write_text_atomic(self.path, "".join(line + "\n" for line in self._lines))
        else:
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


def _tensorboard_can_write(workdir: str) -> bool:
    """tensorboardX writes local folders, and ``gs://`` through ``google-cloud-storage``."""
    if not paths.is_remote(workdir):
        return True
    reason = "tensorboardX writes object stores only as gs://"
    if workdir.startswith("gs://"):
        try:
            if importlib.util.find_spec("google.cloud.storage") is not None:
                return True
        except ImportError:  # no google.cloud namespace at all
            pass
        reason = "google-cloud-storage is not installed (the 'tpu' extra)"
    get_logger("jaxaudio.train").warning("TensorBoard skipped for %s: %s; metrics.jsonl is still written",
                                         workdir, reason)
    return False


def _json_number(value: float):
    """JSON has no NaN/Inf; keep them readable as strings rather than invalid JSON."""
    return value if math.isfinite(value) else str(value)


def read_metrics(path: os.PathLike | str, split: Optional[str] = None) -> list[dict]:
    """Records of a metrics.jsonl file, optionally only one split.

    A last line that is not valid JSON was cut short by a kill mid-write: it is skipped with a
    warning naming the file and line. Any other invalid line raises ``DataFormatError``.
    """
    return _read_records(path, split)[0]


def _read_records(path, split: Optional[str] = None) -> tuple[list[dict], bool]:
    """(records, whether the file needs rewriting: a torn last line or no final newline)."""
    with paths.open_read(path, binary=True) as f:
        data = f.read()
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records, torn = [], False
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            reason = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            if i == last:
                warnings.warn(f"{path}: line {i + 1} is not valid JSON ({reason}), skipped: "
                              "a line cut short by a kill mid-write", stacklevel=3)
                torn = True
                continue
            raise DataFormatError(path, f"line {i + 1} is not valid JSON: {reason}", row=i + 1) from None
        if not isinstance(record, dict):
            raise DataFormatError(path, f"line {i + 1} is not a JSON object: {raw[:80]!r}", row=i + 1)
        if split is None or record.get("split") == split:
            records.append(record)
    return records, torn or (bool(data) and not data.endswith(b"\n"))


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
