"""The train state: one pytree holding everything a step reads and writes.

NNX is used functionally: a model is split once into a static ``graphdef`` and
variable states; jit functions take and return this pytree and call ``nnx.merge``
inside. Keeping the teacher (EMA) and the RNG in the same pytree means one
checkpoint restores a run exactly.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


@struct.dataclass
class TrainState:
    """Everything that changes during training.

    step: int32 scalar, number of optimizer updates applied.
    params: ``nnx.State`` of the model's ``nnx.Param`` variables (trained).
    model_state: ``nnx.State`` of every other variable (batch-norm statistics, ...).
    opt_state: optax state of ``params``.
    teacher: ``{'params': ..., 'model_state': ...}`` EMA copy for mean teacher, or None.
    rng: PRNG key for dropout/augmentation inside the step.
    masks: a tree like ``params`` of 0/1 arrays (pruning), multiplied into the params after
      every update, or None. Checkpointed with the state, since gradual pruning changes them.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array
    teacher: Optional[Any] = None
    masks: Optional[Any] = None


FIELDS = ("step", "params", "model_state", "opt_state", "rng", "teacher", "masks")


def split_model(model: nnx.Module):
    """Split a model into (graphdef, params, model_state); done once per run."""
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    return graphdef, params, model_state


def merge_model(graphdef, params, model_state) -> nnx.Module:
    """Rebuild the module inside a jit function."""
    return nnx.merge(graphdef, params, model_state)


def create_train_state(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    with_teacher: bool = False,
):
    """Return (graphdef, TrainState) for ``model`` with optimizer ``tx``."""
    graphdef, params, model_state = split_model(model)
    teacher = None
    if with_teacher:
        teacher = {
            "params": jax.tree.map(jnp.copy, params),
            "model_state": jax.tree.map(jnp.copy, model_state),
        }
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
        rng=rng,
        teacher=teacher,
    )
    return graphdef, state
