"""The Evaluator protocol.

Why a protocol over a predict *function*: the trainer (validation, best checkpoint), the final
evaluation, export verification and predict mode must score outputs the same way, but only
the trainer knows about meshes and train states. So an evaluator is handed
``predict(host_batch) -> {output name: array for every row, "index": row ids}`` and owns
the rest: which data, how outputs become metrics, which metric is primary, and the plots.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import jax
import numpy as np

from jaxaudio.data.source import eval_batches

PredictFn = Callable[[dict], dict[str, np.ndarray]]


@runtime_checkable
class Evaluator(Protocol):
    primary_metric: str

    def run(self, predict: PredictFn, *, plot_dir: Optional[str] = None, plot_prefix: str = "",
            title: str = "") -> dict[str, float]:
        """Metrics of ``predict`` over the evaluator's data; plots into ``plot_dir`` if given."""
        ...


def collect_rows(source, predict: PredictFn, batch_size: int, output: str) -> np.ndarray:
    """``predict``'s ``output`` for every item of ``source``, in its order: ``(len(source), ...)``
    float64, padding rows (index -1) dropped. ``predict(host_batch)`` returns every row of the
    global batch, so all processes see all."""
    rows = None
    for batch in eval_batches(source, batch_size, shard_index=jax.process_index(), shard_count=jax.process_count()):
        out = predict(batch)
        values, index = np.asarray(out[output], np.float64), np.asarray(out["index"])
        if rows is None:
            rows = np.full((len(source), *values.shape[1:]), np.nan)
        keep = index >= 0
        rows[index[keep]] = values[keep]
    return rows if rows is not None else np.full((len(source),), np.nan)
