"""Multi-stage runs: each stage owns ``workdir/<stage>/``; a finished stage leaves ``done.json``.

A restarted run skips finished stages, and the train loop resumes an unfinished one from its
own checkpoints, so a run interrupted anywhere continues from the stage and step it reached.
A stage that trains hands its weights to the next through its last checkpoint.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxaudio.errors import CheckpointError
from jaxaudio.io import paths
from jaxaudio.train.checkpoint import WEIGHTS, Checkpointer
from jaxaudio.train.state import TrainState

DONE = "done.json"


def stage_dir(workdir: str, name: str) -> str:
    path = paths.join(workdir, name)
    paths.makedirs(path)
    return path


def is_done(path: str) -> bool:
    return paths.exists(paths.join(path, DONE))


def read_done(path: str) -> dict:
    """The summary a finished stage left; a torn or hand-edited marker is named, not a traceback."""
    marker = paths.join(path, DONE)
    try:
        summary = json.loads(paths.read_text(marker))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{marker}: not valid JSON ({err.msg} at line {err.lineno}); delete it to rerun "
                              "the stage") from None
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{marker}: not UTF-8 text (byte {err.start}); delete it to rerun the stage") from None
    if not isinstance(summary, dict):
        raise CheckpointError(f"{marker}: expected a JSON object (the stage summary), got "
                              f"{type(summary).__name__}; delete it to rerun the stage")
    return summary


def write_json(path: str, values: dict) -> None:
    """Write atomically (local: tmp + rename; gs://: one upload) from process 0 only."""
    if jax.process_index() != 0:
        return
    paths.write_text_atomic(path, json.dumps(values, indent=2, sort_keys=True, default=float))


def mark_done(path: str, summary: dict) -> None:
    write_json(paths.join(path, DONE), summary)


def restore_last(path: str, abstract_state: TrainState, *, only: Optional[tuple[str, ...]] = WEIGHTS,
                 missing_hint: Optional[str] = None, step: Optional[int] = None) -> TrainState:
    """The last (or ``step``'s) checkpoint in ``path/checkpoints``: by default only its weights
    (params, model_state, teacher, masks, step), which is what a later stage or an exporter
    needs; ``only=None`` restores (and checks) the whole train state. ``missing_hint`` ends the
    error when there is no checkpoint (default: the hint for a stage marked done)."""
    directory = os.path.join(path, "checkpoints")
    hint = missing_hint or f"the stage is marked done; delete {os.path.join(path, DONE)} to rerun it"
    with Checkpointer(directory, async_save=False) as ckpt:
        if ckpt.latest_step() is None:
            raise CheckpointError(f"{directory}: holds no checkpoint; {hint}")
        state, _ = ckpt.restore(abstract_state, step, only=only)
    return state


def carry_weights(fresh: TrainState, previous: TrainState, teacher_from_student: bool) -> TrainState:
    """``fresh`` (new optimizer, step 0) holding ``previous``'s weights.

    teacher_from_student: the new teacher starts as a copy of the previous student (first
    stage with a teacher); otherwise the previous teacher carries over.
    """
    teacher = fresh.teacher
    if teacher is not None:
        if teacher_from_student or previous.teacher is None:
            # a copy: the step donates the state, and one buffer may not be donated twice
            teacher = jax.tree.map(jnp.copy, {"params": previous.params, "model_state": previous.model_state})
        else:
            teacher = previous.teacher
    masks = previous.masks if previous.masks is not None else fresh.masks
    return fresh.replace(params=previous.params, model_state=previous.model_state, teacher=teacher, masks=masks)


def run_once(path: str, work: Callable[[], dict]) -> dict:
    """``work()`` unless ``path`` is already done; its summary either way."""
    if is_done(path):
        return read_done(path)
    summary = work()
    mark_done(path, summary)
    return summary
