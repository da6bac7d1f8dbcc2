"""The Evaluator protocol.

Why a protocol over a predict *function*: the trainer (validation, best checkpoint), the final
evaluation, export verification and predict mode must score outputs the same way, but only
the trainer knows about meshes and train states. So an evaluator is handed
``predict(host_batch) -> {output name: array for every row, "index": row ids}`` and owns
the rest: which data, how outputs become metrics, which metric is primary, and the plots.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import numpy as np

PredictFn = Callable[[dict], dict[str, np.ndarray]]


@runtime_checkable
class Evaluator(Protocol):
    primary_metric: str

    def run(self, predict: PredictFn, *, plot_dir: Optional[str] = None, plot_prefix: str = "",
            title: str = "") -> dict[str, float]:
        """Metrics of ``predict`` over the evaluator's data; plots into ``plot_dir`` if given."""
        ...
