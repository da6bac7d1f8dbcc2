"""Progress of a long loop: a tqdm bar on a terminal, a few plain lines in a log file.

A carriage-return bar is right for a terminal and wrong for ``run.py ... > log 2>&1``: every
redraw lands in the file. So off a terminal the same object writes one plain line every
``every`` items (a tenth of ``total`` by default) and at the last one::

    crnn: 120/1200 (10%) 0.45 s/it, eta 8m06s, loss=0.31

Only the main process (JAX process 0) shows anything. This module sits below ``data`` and
``train`` (both use it) and imports JAX never: when the caller has imported it, the process
index is asked only once the backend is up or ``jax.distributed`` is initialized, because
asking earlier would start the backend before ``jax.distributed.initialize``.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Any, Mapping, Optional

ENV = "JAXAUDIO_PROGRESS"
LINES_PER_LOOP = 10  # default number of plain lines a loop writes off a terminal
EVERY_WITHOUT_TOTAL = 100


def progress(
    total: Optional[int],
    initial: int = 0,
    desc: str = "",
    *,
    force: Optional[bool] = None,
    every: Optional[int] = None,
    unit: str = "it",
    file: Optional[IO[str]] = None,
):
    """A progress reporter with tqdm's interface (``update(n)``, ``set_postfix``, ``close``,
    ``n``, ``total``, ``disable``; a context manager).

    - On a terminal: a tqdm bar.
    - Elsewhere (a log file, a pipe): a :class:`LineProgress`, one plain line every ``every``
      items (default: ``ceil(total / 10)``, so about ten lines; 100 without a total) and one
      at ``total``; ``close()`` adds one where the loop stopped early.
    - ``force=False`` (or env ``JAXAUDIO_PROGRESS=0``/``false``): nothing is shown.
      ``force=True`` (or ``JAXAUDIO_PROGRESS=1``) shows it, as does the default; the argument
      wins over the variable, which is read only when ``force`` is None.
    - On any process but JAX process 0 nothing is shown.

    ``file`` defaults to ``sys.stderr`` as it is at the call.
    """
    file = sys.stderr if file is None else file
    if force is None and os.environ.get(ENV):
        force = os.environ[ENV].strip().lower() not in ("0", "false", "no", "off", "")
    show = force is not False and _main_process()
    if show and _isatty(file):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file,
                    mininterval=0.1, dynamic_ncols=True)
    return LineProgress(total, initial, desc, every=every, unit=unit, file=file, disable=not show)


class LineProgress:
    """tqdm's interface, written as plain lines (no carriage returns, no redraws).

    A line is written when ``n`` crosses a multiple of ``every`` and when it reaches
    ``total``; ``close()`` writes one more if items were counted since the last line (a loop
    that stopped early says where). ``disable=True``: counts, writes nothing.
    """

    def __init__(self, total: Optional[int], initial: int = 0, desc: str = "", *, every: Optional[int] = None,
                 unit: str = "it", file: Optional[IO[str]] = None, disable: bool = False):
        if every is None:
            every = max(1, math.ceil(total / LINES_PER_LOOP)) if total else EVERY_WITHOUT_TOTAL
        if every < 1:
            raise ValueError(f"progress: every must be at least 1, got {every}")
        self.total = total
        self.n = initial
        self.desc = desc
        self.unit = unit
        self.every = int(every)
        self.disable = disable
        self._file = sys.stderr if file is None else file
        self._postfix = ""
        self._start_n = initial
        self._start_t = time.perf_counter()
        self._written_n = initial
        self._written_t = self._start_t
        self._closed = False

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        reached_total = bool(self.total) and before < self.total <= self.n
        if reached_total or self.n // self.every > before // self.every:
            self._write()

    def set_postfix(self, ordered_dict: Optional[Mapping[str, Any]] = None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={_fmt_value(v)}" for k, v in items.items())

    def set_description(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """tqdm redraws here; a log file gets lines only at the set points."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._written_n:
            self._write()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """The line as it would be written now. The rate is measured since the previous line
        (so a first step's compile time stops counting once it is a line behind)."""
        now = time.perf_counter()
        done, elapsed = self.n - self._written_n, now - self._written_t
        if done <= 0:
            done, elapsed = self.n - self._start_n, now - self._start_t
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{self.n}")
        if done > 0 and elapsed > 0:
            per = elapsed / done
            rate = f"{1 / per:.3g} {self.unit}/s" if per < 0.1 else f"{per:.3g} s/{self.unit}"
            parts.append(f" {rate}")
            if not self.total:
                parts.append(f", elapsed {_fmt_duration(now - self._start_t)}")
            elif self.n < self.total:
                parts.append(f", eta {_fmt_duration(per * (self.total - self.n))}")
            else:
                parts.append(f", took {_fmt_duration(now - self._start_t)}")
        if self._postfix:
            parts.append(f", {self._postfix}")
        return "".join(parts)

    def _write(self) -> None:
        if not self.disable:
            self._file.write(self.line() + "\n")
            self._file.flush()
        self._written_n, self._written_t = self.n, time.perf_counter()


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_duration(seconds: float) -> str:
    """``42s``, ``8m06s``, ``2h03m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _isatty(file: IO[str]) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _main_process() -> bool:
    """True unless JAX is up and says this is not process 0 (JAX is never started here)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return True
    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        started = False  # cannot tell: never risk starting the backend (see the module doc)
    try:
        distributed = jax.distributed.is_initialized()
    except AttributeError:
        distributed = False
    if not (started or distributed):
        return True
    return jax.process_index() == 0
