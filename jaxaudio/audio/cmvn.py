"""Global CMVN: per-bin mean and variance over the whole training set, computed once and saved.

Why: the FunASR / ESPnet AISHELL-1 recipes normalise every utterance with one set of statistics
(Kaldi ``compute-cmvn-stats`` over train, FunASR's ``am.mvn``), not per utterance, so that train,
dev and test frames are normalised identically. The statistics are Kaldi's: a frame count and
per-bin sums of x and x**2 in float64, accumulated over valid frames only (padding excluded); they
add up across chunks, so the result does not depend on how the data was batched.

mean = sum / count; var = sum_sq / count - mean**2, floored at VAR_FLOOR = 1e-20 (Kaldi's
``ApplyCmvn`` floor, which FunASR's stats-to-am.mvn conversion keeps); std = sqrt(var).
``apply`` is (x - mean) * istd, a pure jit-able function of the features.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from jaxaudio.errors import DataFormatError, ShapeError
from jaxaudio.io import paths
from jaxaudio.utils.progress import progress

VAR_FLOOR = 1e-20
FORMAT = "jaxaudio-global-cmvn-v1"


class CMVNStats:
    """Frame count and per-bin sum / sum of squares (float64), Kaldi's CMVN statistics."""

    def __init__(self, dim: Optional[int] = None, count: float = 0.0, sum: Optional[np.ndarray] = None,
                 sum_sq: Optional[np.ndarray] = None):
        self.dim = dim
        self.count = float(count)
        self.sum = np.zeros(dim) if sum is None and dim is not None else sum
        self.sum_sq = np.zeros(dim) if sum_sq is None and dim is not None else sum_sq

    def accumulate(self, feats, mask=None) -> "CMVNStats":
        """Add feats (T, F) or (B, T, F); mask (T,) / (B, T), True on valid frames (None: all valid)."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim not in (2, 3):
            raise ShapeError(f"CMVNStats.accumulate: feats must be (T, F) or (B, T, F), got shape {x.shape}")
        if self.dim is None:
            self.dim, self.sum, self.sum_sq = x.shape[-1], np.zeros(x.shape[-1]), np.zeros(x.shape[-1])
        if x.shape[-1] != self.dim:
            raise ShapeError(f"CMVNStats.accumulate: expected {self.dim} feature bins, got shape {x.shape}")
        x = x.reshape(-1, self.dim)
        if mask is not None:
            m = np.asarray(mask, dtype=bool)
            if m.size != x.shape[0]:
                raise ShapeError(f"CMVNStats.accumulate: mask {m.shape} does not match feats {np.shape(feats)}")
            x = x[m.reshape(-1)]
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_sq += np.square(x).sum(axis=0)
        return self

    @property
    def mean(self) -> np.ndarray:
        self._need_frames()
        return self.sum / self.count

    @property
    def var(self) -> np.ndarray:
        mean = self.mean
        return np.maximum(self.sum_sq / self.count - mean * mean, VAR_FLOOR)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    @property
    def istd(self) -> np.ndarray:
        return 1.0 / self.std

    def _need_frames(self) -> None:
        if not self.count:
            raise ValueError("CMVNStats: no frames accumulated")

    def save(self, path: os.PathLike | str) -> None:
        """Write the statistics (and, for reading, mean and std) as JSON, atomically."""
        self._need_frames()
        record = {"format": FORMAT, "dim": self.dim, "count": self.count, "sum": self.sum.tolist(),
                  "sum_sq": self.sum_sq.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}
        paths.write_text_atomic(path, json.dumps(record, indent=1) + "\n")

    @classmethod
    def load(cls, path: os.PathLike | str) -> "CMVNStats":
        """Read a file written by `save`; DataFormatError (naming the file) when it is not one."""
        try:
            record = json.loads(paths.read_text(path))
        except (OSError, ValueError) as e:  # missing / unreadable / not JSON (JSONDecodeError is a ValueError)
            raise DataFormatError(path, f"cannot read global CMVN statistics: {e}") from None
        if not isinstance(record, dict):
            raise DataFormatError(path, "expected a JSON object of global CMVN statistics")
        missing = [k for k in ("dim", "count", "sum", "sum_sq") if k not in record]
        if missing:
            raise DataFormatError(path, f"missing key(s) {missing} (expected dim, count, sum, sum_sq)")
        dim, count = record["dim"], record["count"]
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise DataFormatError(path, f"'dim' must be a positive integer, got {dim!r}")
        if not isinstance(count, (int, float)) or isinstance(count, bool) or not math.isfinite(count) or count <= 0:
            raise DataFormatError(path, f"'count' must be a positive number, got {count!r}")
        arrays = {}
        for key in ("sum", "sum_sq"):
            try:
                a = np.asarray(record[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise DataFormatError(path, f"'{key}' must be a list of {dim} numbers") from None
            if a.shape != (dim,) or not np.all(np.isfinite(a)):
                raise DataFormatError(path, f"'{key}' must be {dim} finite numbers, got shape {a.shape}")
            arrays[key] = a
        return cls(dim, count, arrays["sum"], arrays["sum_sq"])


def apply(feats, mean, istd, mask=None):
    """(feats - mean) * istd per bin, in feats' dtype; with mask (B, T) padding frames become 0."""
    dtype = feats.dtype
    out = ((feats - jnp.asarray(mean, dtype)) * jnp.asarray(istd, dtype)).astype(dtype)
    if mask is not None:
        out = jnp.where(jnp.asarray(mask)[..., None], out, jnp.zeros((), dtype))
    return out


def compute_global_cmvn(feature_batches: Iterable, total: Optional[int] = None, desc: str = "global cmvn",
                        show_progress: Optional[bool] = None) -> CMVNStats:
    """Accumulate CMVNStats over (feats, mask) pairs (mask may be None), with a progress bar
    (tqdm on a terminal, a few log lines elsewhere; see jaxaudio.utils.progress)."""
    stats = CMVNStats()
    with progress(total, desc=desc, unit="batch", force=show_progress) as bar:
        for feats, mask in feature_batches:
            stats.accumulate(feats, mask)
            bar.update(1)
    return stats


__all__: Sequence[str] = ["VAR_FLOOR", "CMVNStats", "apply", "compute_global_cmvn"]
