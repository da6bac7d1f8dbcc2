"""One submodule's weights from a finished stage of another run.

Why: a recipe built around a published pretrained encoder (MAT-SED on AudioSet PaSST) has no such
encoder at toy sizes; another run's encoder of the same shape (PMAM's label-free pre-training on
the same audio) stands in for it, and a user can start from an encoder of their own the same way.
"""
from __future__ import annotations

import functools
import os

import numpy as np
from flax import nnx, traverse_util

from jaxaudio.errors import CheckpointError, ConfigError
from jaxaudio.train import stages as stage_files
from jaxaudio.train.checkpoint import Checkpointer


def selected_step(stage_path: str) -> int:
    """The step a finished stage hands on: the checkpoint its validation ranked best, else its last."""
    if not stage_files.is_done(stage_path):
        raise CheckpointError(f"{stage_path}: not a finished training stage (no {stage_files.DONE}); pass the "
                              "folder of a stage that has finished, e.g. WORKDIR/round2/pretrain of a PMAM run")
    done = stage_files.read_done(stage_path)
    step = done.get("best_checkpoint_step")          # null when the stage never validated
    if step is None:
        step = done.get("latest_checkpoint_step")
    if step is None:
        raise CheckpointError(f"{os.path.join(stage_path, stage_files.DONE)}: names no checkpoint step")
    return int(step)


@functools.lru_cache(maxsize=4)
def _saved(stage_path: str, prefix: tuple[str, ...]) -> dict[tuple[str, ...], np.ndarray]:
    """{path under ``prefix`` (its first name a TrainState field): array}; cached, as a model is
    built several times per run."""
    step = selected_step(stage_path)
    with Checkpointer(os.path.join(stage_path, "checkpoints"), async_save=False) as ckpt:
        saved = ckpt.read_saved(step, prefix)
    # saved names end in the Variable's 'value' field
    return {k[len(prefix):-1]: np.asarray(v) for k, v in saved.items()}


def _load(module: nnx.Module, stage_path: str, field: str, kind, prefix: tuple[str, ...]) -> None:
    stage_path = os.path.abspath(stage_path)
    saved = _saved(stage_path, (field,) + tuple(prefix))
    state = nnx.state(module, kind)
    flat = traverse_util.flatten_dict(state.to_pure_dict())
    names = {tuple(str(n) for n in k): k for k in flat}
    where = f"{stage_path}: {field}/{'/'.join(prefix)}"
    if not saved and names:
        raise ConfigError(f"{where}: no such parameters in the checkpoint")
    missing, extra = sorted(set(names) - set(saved)), sorted(set(saved) - set(names))
    if missing or extra:
        raise ConfigError(f"{where}: parameters differ from this model's: missing "
                          f"{['/'.join(m) for m in missing[:3]]}, unexpected {['/'.join(e) for e in extra[:3]]} "
                          "(a different architecture?)")
    wrong = [(n, saved[n].shape, flat[k].shape) for n, k in names.items() if saved[n].shape != flat[k].shape]
    if wrong:
        n, got, want = wrong[0]
        raise ConfigError(f"{where}/{'/'.join(n)}: shape {got} in the checkpoint, {want} in this model "
                          f"({len(wrong)} parameters differ; the sizes must match)")
    loaded = {k: saved[n].astype(flat[k].dtype) for n, k in names.items()}
    state.replace_by_pure_dict(traverse_util.unflatten_dict(loaded))
    nnx.update(module, state)


def load_submodule(module: nnx.Module, stage_path: str, prefix: tuple[str, ...]) -> None:
    """Overwrite every parameter of ``module`` with the same-named one under ``params/<prefix>``
    of ``stage_path``'s selected checkpoint; names and shapes must match exactly."""
    _load(module, stage_path, "params", nnx.Param, prefix)


def load_model(module: nnx.Module, stage_path: str) -> nnx.Module:
    """``module`` with a finished stage's whole selected weights: parameters and the other state
    (batch-norm statistics), as a frozen teacher needs them. Returns ``module``."""
    _load(module, stage_path, "params", nnx.Param, ())
    _load(module, stage_path, "model_state", nnx.Not(nnx.Param), ())
    return module
