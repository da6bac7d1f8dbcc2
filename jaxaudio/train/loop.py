"""The training loop: resume, step, log, evaluate, checkpoint, survive preemption.

It takes any ``train_step(state, batch) -> (state, metrics)`` so that the sharded jit step,
the mesh and the optimizer live elsewhere. Step numbering: ``step`` is the number of updates
applied; the checkpoint written "at step s" holds the state after s updates and the data
iterator positioned at the (s+1)-th batch, so a resumed run sees exactly the batches an
uninterrupted one would.

Host/device traffic: metrics are summed on device every step (one tiny async jit call), and
copied to the host only at log steps, one step late, after the next step has been
dispatched, so the device queue never drains for logging. The same on-device tracker records
the first step whose loss was non-finite; it is fetched (one scalar) before every checkpoint,
so a NaN state is never saved, and ``NonFiniteLossError`` names the exact step even between
log steps. On a non-finite loss no new checkpoint is written (the state at hand is already
corrupt); the last periodic checkpoint stays the resume point.

Preemption: SIGTERM sets a flag; the loop finishes the step in flight, writes a checkpoint
at that step synchronously and raises ``Preempted`` (exit code ``PREEMPTED_EXIT_CODE`` for
CLIs; schedulers read 143 = 128 + SIGTERM as "terminated", not "failed"). On multi-host runs
the processes agree on the step through ``multihost_utils.reached_preemption_sync_point``.

Best checkpoint: with ``best_metric`` set, every eval step also writes a checkpoint carrying
the eval metrics, so the best one can be kept; those count toward the latest ``keep``.
Log windows: the mean over a window after a resume covers only the steps since the resume.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudio.errors import ConfigError, JaxAudioError, NonFiniteLossError
from jaxaudio.io import paths
from jaxaudio.train.checkpoint import Checkpointer, abstract_like
from jaxaudio.train.log import MetricWriter, get_logger, progress, read_metrics
from jaxaudio.train.state import TrainState

PREEMPTED_EXIT_CODE = 143


class Preempted(JaxAudioError):
    """The run received SIGTERM and saved a checkpoint at ``step``; restart it to resume."""

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, step: int, directory: str):
        self.step = step
        self.directory = directory
        super().__init__(f"preempted: checkpoint saved at step {step} in {directory}")


@dataclasses.dataclass
class LoopConfig:
    total_steps: int
    log_every: int = 50
    eval_every: Optional[int] = None
    checkpoint_every: int = 500
    keep: int = 3
    best_metric: Optional[str] = None
    best_mode: str = "max"

    def validate(self) -> None:
        for key in ("total_steps", "log_every", "checkpoint_every", "keep"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}: must be >= 1, got {getattr(self, key)}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"train.eval_every: must be >= 1 or None, got {self.eval_every}")
        if self.best_mode not in ("min", "max"):
            raise ConfigError(f"train.best_mode: must be 'min' or 'max', got {self.best_mode!r}")


# ---------------------------------------------------------------- device-side metric sums
def _watched(metrics: dict) -> jax.Array:
    """The value whose finiteness is checked: 'loss' if present, else the sum of all."""
    if "loss" in metrics:
        return jnp.asarray(metrics["loss"], jnp.float32)
    return sum(jnp.asarray(v, jnp.float32) for v in metrics.values())


@jax.jit
def _track_first(metrics, step, bad_step, bad_value):
    value = _watched(metrics)
    newly_bad = (bad_step < 0) & ~jnp.isfinite(value)
    sums = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    return sums, jnp.where(newly_bad, step, bad_step), jnp.where(newly_bad, value, bad_value)


@jax.jit
def _track_add(sums, metrics, step, bad_step, bad_value):
    value = _watched(metrics)
    newly_bad = (bad_step < 0) & ~jnp.isfinite(value)
    sums = {k: sums[k] + jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    return sums, jnp.where(newly_bad, step, bad_step), jnp.where(newly_bad, value, bad_value)


def _to_host(x) -> np.ndarray:
    """Fetch a (replicated) array; on multi-host only the local copy is readable."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(jax.device_get(x))


class _MetricTracker:
    """Sums scalar metrics per log window on device; remembers the first non-finite step."""

    def __init__(self):
        self.sums = None
        self.count = 0
        self.bad_step: Any = -1
        self.bad_value: Any = float("nan")

    def add(self, metrics: dict, step: int) -> None:
        scalars = {k: v for k, v in metrics.items() if np.ndim(v) == 0}
        if self.sums is None:
            out = _track_first(scalars, step, self.bad_step, self.bad_value)
        else:
            out = _track_add(self.sums, scalars, step, self.bad_step, self.bad_value)
        self.sums, self.bad_step, self.bad_value = out
        self.count += 1

    def take_window(self):
        """Hand over this window's (device) sums and count; start a new window."""
        window = (self.sums, self.count)
        self.sums, self.count = None, 0
        return window

    def raise_if_bad(self) -> None:
        """Blocks until the last dispatched step is done (one scalar fetch)."""
        bad_step = int(_to_host(self.bad_step))
        if bad_step >= 0:
            raise NonFiniteLossError(bad_step, float(_to_host(self.bad_value)))


# ----------------------------------------------------------------------------- preemption
class _PreemptionFlag:
    """SIGTERM -> stop at a step every process agrees on.

    One process: a Python SIGTERM handler sets a flag (installed only from the main thread).
    Several: JAX's preemption service (enabled by ``jax.distributed.initialize``) catches
    SIGTERM itself and ``reached_preemption_sync_point`` turns true on the same step
    everywhere, since a checkpoint save is collective; no Python handler is installed.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._multi = False

    def install(self) -> None:
        self._multi = jax.process_count() > 1
        if not self._multi and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def should_stop(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.requested

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _identity(batch):
    return batch


def _better(value: float, best: Optional[float], mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def train_loop(
    *,
    workdir: os.PathLike | str,
    state: TrainState,
    train_step: Callable[[TrainState, dict], tuple[TrainState, dict]],
    batches: Iterator[dict],
    to_device: Callable[[dict], dict] = _identity,
    config: LoopConfig,
    eval_fn: Optional[Callable[[TrainState, int], dict]] = None,
    abstract_state: Optional[TrainState] = None,
    progress_desc: str = "train",
) -> tuple[TrainState, dict]:
    """Train to ``config.total_steps``, resuming from ``workdir/checkpoints`` if it holds any.

    ``batches`` should offer ``get_state()``/``set_state()`` (grain iterators do); its state is
    checkpointed with the model. ``abstract_state`` (ShapeDtypeStructs with shardings) says
    where restored arrays go; by default the layout of ``state``.
    Returns ``(final state, summary)``; the summary is also written to ``workdir/metrics.json``.
    Raises ``NonFiniteLossError`` and ``Preempted`` (see the module docstring).
    """
    config.validate()
    workdir = os.fspath(workdir)
    logger = get_logger("jaxaudio.train")
    ckpt = Checkpointer(
        paths.join(workdir, "checkpoints"),
        keep=config.keep,
        best_metric=config.best_metric,
        best_mode=config.best_mode,
        async_save=True,
    )
    has_data_state = hasattr(batches, "get_state") and hasattr(batches, "set_state")
    if not has_data_state:
        logger.warning("the batch iterator has no get_state/set_state; a resumed run restarts its data")
    writer = None
    bar = None
    preempt = _PreemptionFlag()
    try:
        if ckpt.latest_step() is not None:
            abstract = abstract_state if abstract_state is not None else abstract_like(state)
            state, data_state = ckpt.restore(abstract)
            if data_state is not None and has_data_state:
                batches.set_state(data_state)
            logger.info("resumed from step %d (%s)", int(_to_host(state.step)), ckpt.directory)
        start = int(_to_host(state.step))
        writer = MetricWriter(workdir, resume_step=start)
        eval_last, eval_best = _previous_evals(writer.path, config)

        def data_state_now():
            return batches.get_state() if has_data_state else None

        tracker = _MetricTracker()
        pending = None  # (step, device sums, count): fetched after the next step is dispatched
        train_last: dict = {}

        def flush(item):
            nonlocal train_last
            logged_step, sums, count = item
            tracker.raise_if_bad()
            train_last = {k: float(_to_host(v)) / count for k, v in sums.items()}
            writer.write(logged_step, "train", train_last)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(train_last.items())[:3]}, refresh=False)
            logger.info("step %d: %s", logged_step, _fmt(train_last))

        preempt.install()
        bar = progress(config.total_steps, start, progress_desc)
        t_start = time.perf_counter()
        t_first = None
        step = start
        while step < config.total_steps:
            try:
                batch = next(batches)
            except StopIteration:
                logger.warning("batch iterator ran out at step %d of %d", step, config.total_steps)
                break
            state, metrics = train_step(state, to_device(batch))
            step += 1
            if t_first is None:
                t_first = time.perf_counter()
            tracker.add(metrics, step)
            if pending is not None:
                flush(pending)
                pending = None
            if step % config.log_every == 0 or step == config.total_steps:
                pending = (step, *tracker.take_window())

            eval_metrics = None
            if eval_fn is not None and config.eval_every and step % config.eval_every == 0:
                tracker.raise_if_bad()
                eval_metrics = {k: float(v) for k, v in eval_fn(state, step).items()}
                writer.write(step, "eval", eval_metrics)
                logger.info("eval at step %d: %s", step, _fmt(eval_metrics))
                eval_last = {"step": step, **eval_metrics}
                if config.best_metric in eval_metrics and _better(
                    eval_metrics[config.best_metric], (eval_best or {}).get(config.best_metric), config.best_mode
                ):
                    eval_best = dict(eval_last)

            ranked_eval = eval_metrics is not None and config.best_metric in eval_metrics
            if step % config.checkpoint_every == 0 or ranked_eval:
                # Log what this checkpoint covers first, so a crash right after it loses no line.
                if pending is not None:
                    flush(pending)
                    pending = None
                tracker.raise_if_bad()
                ckpt.save(step, state, data_state=data_state_now(), metrics=eval_metrics)
            bar.update(1)

            if step < config.total_steps and preempt.should_stop(step):
                tracker.raise_if_bad()
                ckpt.save(step, state, data_state=data_state_now(), metrics=eval_metrics, force=True)
                ckpt.wait()
                if pending is not None:
                    flush(pending)
                writer.flush()
                logger.warning("SIGTERM: saved step %d, stopping", step)
                raise Preempted(step, ckpt.directory)

        if pending is not None:
            flush(pending)
        tracker.raise_if_bad()
        ckpt.save(step, state, data_state=data_state_now())
        ckpt.wait()
        wall = time.perf_counter() - t_start
        timed_steps = step - start - 1
        summary = {
            "steps": step,
            "start_step": start,
            "total_steps": config.total_steps,
            "wall_time_s": wall,
            # First step excluded: it includes tracing and compilation.
            "steps_per_s": (timed_steps / (time.perf_counter() - t_first)) if t_first and timed_steps > 0 else None,
            "train": train_last,
            "eval_last": eval_last,
            "eval_best": eval_best,
            "best_metric": config.best_metric,
            "best_checkpoint_step": ckpt.best_step() if config.best_metric else None,
            "latest_checkpoint_step": ckpt.latest_step(),
        }
        if jax.process_index() == 0:
            paths.write_text_atomic(paths.join(workdir, "metrics.json"), json.dumps(_jsonable(summary), indent=2))
        logger.info("done: %d steps in %.1f s", step - start, wall)
        return state, summary
    finally:
        preempt.uninstall()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        ckpt.close()


def _previous_evals(path: str, config: LoopConfig):
    """Last and best eval records of earlier sessions of this run (metrics.jsonl)."""
    last = best = None
    if not paths.exists(path):
        return last, best
    for record in read_metrics(path, split="eval"):
        values = {k: v for k, v in record.items() if k != "split"}
        last = values
        metric = values.get(config.best_metric)
        if isinstance(metric, (int, float)) and _better(metric, (best or {}).get(config.best_metric), config.best_mode):
            best = values
    return last, best


def _fmt(values: dict) -> str:
    return " ".join(f"{k}={v:.5g}" for k, v in values.items())


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
