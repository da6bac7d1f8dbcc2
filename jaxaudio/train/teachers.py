"""The models a train step learns from besides its labels.

Two kinds, kept apart because they live differently:

- the **EMA teacher** (mean teacher) is an update rule over the student's own graph: its
  weights are part of the train state, change every step and are checkpointed with it;
- a **frozen model** (a distillation teacher, a fusion member) is its own ``(graphdef,
  variables)``: loaded before training, handed to the loss under ``stop_gradient`` in eval
  mode, never updated and never checkpointed with the student (its own file is its source).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Union

import jax
import jax.numpy as jnp
from flax import nnx

EmaDecay = Union[float, Callable[[jax.Array], jax.Array]]


def ema_alpha(step: jax.Array, ema_decay: EmaDecay) -> jax.Array:
    """Teacher keep-rate for the update that brings the count to ``step + 1``.

    Mean-teacher convention: alpha = min(1 - 1/(step + 1), decay), so the first update copies
    the student and the teacher averages uniformly until the decay caps it.
    """
    decay = ema_decay(step) if callable(ema_decay) else ema_decay
    warm = 1.0 - 1.0 / (step.astype(jnp.float32) + 1.0)
    return jnp.minimum(warm, jnp.asarray(decay, jnp.float32))


def ema_update(teacher_params, student_params, step: jax.Array, ema_decay: EmaDecay):
    """The EMA rule: floating leaves move towards the student; integer leaves stay."""
    alpha = ema_alpha(step, ema_decay)

    def one(t, s):
        if not jnp.issubdtype(t.dtype, jnp.floating):
            return t
        return (alpha * t.astype(jnp.float32) + (1.0 - alpha) * s.astype(jnp.float32)).astype(t.dtype)

    return jax.tree.map(one, teacher_params, student_params)


@dataclasses.dataclass(frozen=True)
class FrozenModel:
    """A model the loss reads but never trains: ``graphdef`` plus ``{params, model_state}``."""

    graphdef: Any
    variables: Mapping[str, Any]

    @classmethod
    def of(cls, model: nnx.Module) -> "FrozenModel":
        graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
        return cls(graphdef, {"params": params, "model_state": model_state})


def merge_frozen(frozen: Mapping[str, FrozenModel], variables: Mapping[str, Any]) -> dict[str, nnx.Module]:
    """Inside a jit: each frozen model rebuilt from its (traced) variables, gradients stopped."""
    out = {}
    for name, spec in frozen.items():
        held = jax.tree.map(jax.lax.stop_gradient, variables[name])
        model = nnx.merge(spec.graphdef, held["params"], held["model_state"])
        model.eval()
        out[name] = model
    return out


def apply_masks(params, masks):
    """``params * masks`` leaf by leaf (pruning keeps zeros at zero after every update)."""
    if masks is None:
        return params
    return jax.tree.map(lambda p, m: p * m.astype(p.dtype), params, masks)
