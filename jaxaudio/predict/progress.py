"""Progress over files: a tqdm bar on a terminal, a log line every few files elsewhere."""
from __future__ import annotations

import logging
import math
import sys

from tqdm.auto import tqdm


def log_every(total: int) -> int:
    """Files between two log lines off a terminal: about 20 lines per run, at least every 100."""
    return max(1, min(100, math.ceil(total / 20)))


class FileProgress:
    """`show=None`: bar on a terminal (stderr is a tty), else log lines. True: always a bar.
    False: neither (the caller still logs its summary)."""

    def __init__(self, total: int, logger: logging.Logger, show: bool | None = None):
        tty = sys.stderr.isatty()
        self.total, self.done, self.failed = total, 0, 0
        self.logger = logger
        self.every = log_every(total)
        self.lines = show is None and not tty
        self.bar = tqdm(
            total=total, desc="predict", unit="file", file=sys.stderr, dynamic_ncols=True,
            disable=not (show if show is not None else tty), mininterval=0.1 if tty else 30.0,
        )

    def update(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        self.bar.update(1)
        if self.failed:
            self.bar.set_postfix(failed=self.failed, refresh=False)
        if self.lines and (self.done % self.every == 0 or self.done == self.total):
            self.logger.info("predict: %d/%d files done (%d failed)", self.done, self.total, self.failed)

    def close(self) -> None:
        self.bar.close()
