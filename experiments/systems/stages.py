"""Multi-stage runs: each stage owns ``workdir/<stage>/``; a finished stage leaves ``done.json``.

A restarted run skips finished stages, and the train loop resumes an unfinished one from its
own checkpoints, so a run interrupted anywhere continues from the stage and step it reached.
A stage that trains hands its weights to the next through its last checkpoint.
"""
from __future__ import annotations

import json
import os
from typing import Callable


import jax
import jax.numpy as jnp

from experiments.systems import sed_eval
from jaxaudio.errors import CheckpointError
from jaxaudio.train.checkpoint import WEIGHTS, Checkpointer
from jaxaudio.train.state import TrainState

DONE = "done.json"


def stage_dir(workdir: str, name: str) -> str:
    from jaxaudio.io import paths  # local folder or gs:// workdir

    path = paths.join(workdir, name)
    paths.makedirs(path)
    return path


def is_done(path: str) -> bool:
    from jaxaudio.io import paths

    return paths.exists(paths.join(path, DONE))


def read_done(path: str) -> dict:
    from jaxaudio.io import paths

    return json.loads(paths.read_text(paths.join(path, DONE)))


def mark_done(path: str, summary: dict) -> None:
    sed_eval.write_json(os.path.join(path, DONE), summary)


def restore_last(path: str, abstract_state: TrainState) -> TrainState:
    """Weights (params, model_state, teacher, step) of the last checkpoint a finished training
    stage wrote in ``path/checkpoints``; its optimizer state is not read."""
    directory = os.path.join(path, "checkpoints")
    with Checkpointer(directory, async_save=False) as ckpt:
        step = ckpt.latest_step()
        if step is None:
            raise CheckpointError(f"{directory}: the stage is marked done but holds no checkpoint; "
                                  f"delete {os.path.join(path, DONE)} to rerun it")
        state, _ = ckpt.restore(abstract_state, step, only=WEIGHTS)
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
    return fresh.replace(params=previous.params, model_state=previous.model_state, teacher=teacher)


def run_once(path: str, work: Callable[[], dict]) -> dict:
    """``work()`` unless ``path`` is already done; its summary either way."""
    if is_done(path):
        return read_done(path)
    summary = work()
    mark_done(path, summary)
    return summary
