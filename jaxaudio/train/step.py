"""The jit-compiled train and eval steps.

The step is one pure function ``(TrainState, batch) -> (TrainState, metrics)`` compiled
once with the state's and batch's shardings; the old state's buffers are donated. Nothing
inside talks to the host: metrics come back as device scalars and the loop decides when
to fetch them (then ``check_finite`` runs on the fetched values).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxaudio.errors import NonFiniteLossError
from jaxaudio.train.state import TrainState
from jaxaudio.train.teachers import EmaDecay, FrozenModel, apply_masks, ema_alpha, ema_update, merge_frozen

__all__ = ["make_train_step", "make_eval_step", "check_finite", "ema_alpha", "LossFn"]

Batch = Mapping[str, jax.Array]
# loss_fn(model, batch, rng, teacher, step) -> (scalar loss, {name: scalar}).
# ``model`` is in train mode; ``teacher`` is the merged EMA model (train mode as well, so
# that its own batch-norm statistics follow its inputs as in the reference mean-teacher
# recipes; call ``teacher.eval()`` inside the loss for the other behaviour) or None.
# With frozen models declared, the loss also gets ``frozen={name: model in eval mode}``.
LossFn = Callable[[nnx.Module, Batch, jax.Array, Optional[nnx.Module], jax.Array],
                  tuple[jax.Array, dict[str, jax.Array]]]


def make_train_step(
    graphdef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    state_shardings: TrainState,
    batch_sharding: NamedSharding,
    ema_decay: Optional[EmaDecay] = None,
    learning_rate: optax.Schedule | None = None,
    frozen: Optional[Mapping[str, FrozenModel]] = None,
    frozen_sharding=None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Compile ``(state, batch) -> (state, metrics)``.

    Gradients are taken with respect to ``state.params`` only; ``state.model_state``
    (batch-norm statistics, ...) is whatever the training forward pass left in the model.
    With a teacher in the state, its params follow the EMA of the student (``ema_decay``,
    a float or a function of the step) and its model_state what its own forward pass left.
    ``learning_rate``, if given, is reported as ``metrics['lr']``. The RNG of step ``s`` is
    ``fold_in(state.rng, s)``: the same run resumed from a checkpoint draws the same keys.
    """
    has_teacher = state_shardings.teacher is not None
    if has_teacher and ema_decay is None:
        raise ValueError("the state has a teacher, so make_train_step needs ema_decay")

    frozen = dict(frozen or {})

    def step_fn(state: TrainState, batch: Batch, frozen_variables):
        rng = jax.random.fold_in(state.rng, state.step)
        extra = {"frozen": merge_frozen(frozen, frozen_variables)} if frozen else {}

        def loss_of(params):
            model = nnx.merge(graphdef, params, state.model_state, copy=True)
            model.train()
            teacher = None
            if state.teacher is not None:
                teacher = nnx.merge(graphdef, state.teacher["params"], state.teacher["model_state"], copy=True)
                teacher.train()
            loss, aux = loss_fn(model, batch, rng, teacher, state.step, **extra)
            new_model_state = nnx.state(model, nnx.Not(nnx.Param))
            new_teacher_state = None if teacher is None else nnx.state(teacher, nnx.Not(nnx.Param))
            return loss, (aux, new_model_state, new_teacher_state)

        (loss, (aux, model_state, teacher_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = apply_masks(optax.apply_updates(state.params, updates), state.masks)

        teacher = None
        if state.teacher is not None:
            teacher = {"params": ema_update(state.teacher["params"], params, state.step, ema_decay),
                       "model_state": teacher_state}

        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        if learning_rate is not None:
            metrics["lr"] = jnp.asarray(learning_rate(state.step), jnp.float32)
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            rng=state.rng,
            teacher=teacher,
            masks=state.masks,
        )
        return new_state, metrics

    replicated = NamedSharding(batch_sharding.mesh, P())
    frozen_variables = {name: spec.variables for name, spec in frozen.items()}
    compiled = jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding, replicated if frozen_sharding is None else frozen_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )

    def train_step(state: TrainState, batch: Batch):
        return compiled(state, batch, frozen_variables)

    # ahead-of-time lowering (scaling studies, benchmarks) with the same two arguments; the
    # compiled program is called as ``(state, batch)`` too
    train_step.lower = lambda state, batch: _BoundLowered(compiled.lower(state, batch, frozen_variables),
                                                          frozen_variables)
    return train_step


class _BoundLowered:
    """A ``jax.stages.Lowered`` whose last argument (the frozen variables) stays bound."""

    def __init__(self, lowered, bound):
        self._lowered, self._bound = lowered, bound

    def compile(self, *args, **kwargs):
        return _BoundCompiled(self._lowered.compile(*args, **kwargs), self._bound)

    def __getattr__(self, name):  # as_text, cost_analysis, ...
        return getattr(self._lowered, name)


class _BoundCompiled:
    """A ``jax.stages.Compiled`` called as ``(state, batch)``; the rest as jax's (as_text, ...)."""

    def __init__(self, compiled, bound):
        self._compiled, self._bound = compiled, bound

    def __call__(self, state, batch):
        return self._compiled(state, batch, self._bound)

    def __getattr__(self, name):
        return getattr(self._compiled, name)


def make_eval_step(
    graphdef,
    predict_fn: Callable[[nnx.Module, Batch], Any],
    *,
    params_sharding,
    model_state_sharding,
    batch_sharding: NamedSharding,
    out_sharding=None,
) -> Callable[[Any, Any, Batch], Any]:
    """Compile ``(params, model_state, batch) -> predict_fn(model in eval mode, batch)``.

    Pass the teacher's params/model_state to evaluate the teacher. Outputs default to the
    batch sharding (row-split like the inputs).
    """

    def eval_fn(params, model_state, batch):
        model = nnx.merge(graphdef, params, model_state)
        model.eval()
        return predict_fn(model, batch)

    return jax.jit(
        eval_fn,
        in_shardings=(params_sharding, model_state_sharding, batch_sharding),
        out_shardings=batch_sharding if out_sharding is None else out_sharding,
    )


def check_finite(metrics: Mapping[str, Any], step: int) -> None:
    """Raise ``NonFiniteLossError(step, value)`` if the fetched loss is NaN or infinite.

    Host-side on purpose: the loop calls it on metrics it has already fetched for logging,
    so checking costs no extra device sync.
    """
    value = float(np.asarray(metrics["loss"]))
    if not math.isfinite(value):
        raise NonFiniteLossError(int(step), value)
