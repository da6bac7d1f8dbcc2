"""The jit-compiled train and eval steps.

The step is one pure function ``(TrainState, batch) -> (TrainState, metrics)`` compiled
once with the state's and batch's shardings; the old state's buffers are donated. Nothing
inside talks to the host: metrics come back as device scalars and the loop decides when
to fetch them (then ``check_finite`` runs on the fetched values).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxaudio.errors import NonFiniteLossError
from jaxaudio.train.state import TrainState

Batch = Mapping[str, jax.Array]
# loss_fn(model, batch, rng, teacher, step) -> (scalar loss, {name: scalar}).
# ``model`` is in train mode; ``teacher`` is the merged EMA model (train mode as well, so
# that its own batch-norm statistics follow its inputs as in the reference mean-teacher
# recipes; call ``teacher.eval()`` inside the loss for the other behaviour) or None.
LossFn = Callable[[nnx.Module, Batch, jax.Array, Optional[nnx.Module], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
EmaDecay = Union[float, Callable[[jax.Array], jax.Array], None]


def ema_alpha(step: jax.Array, ema_decay: EmaDecay) -> jax.Array:
    """Teacher keep-rate for the update that brings the count to ``step + 1``.

    Mean-teacher convention: alpha = min(1 - 1/(step + 1), decay), so the first update copies
    the student and the teacher averages uniformly until the decay caps it.
    """
    decay = ema_decay(step) if callable(ema_decay) else ema_decay
    warm = 1.0 - 1.0 / (step.astype(jnp.float32) + 1.0)
    return jnp.minimum(warm, jnp.asarray(decay, jnp.float32))


def _ema(teacher_tree, student_tree, alpha):
    def one(t, s):
        if not jnp.issubdtype(t.dtype, jnp.floating):
            return t
        return (alpha * t.astype(jnp.float32) + (1.0 - alpha) * s.astype(jnp.float32)).astype(t.dtype)

    return jax.tree.map(one, teacher_tree, student_tree)


def make_train_step(
    graphdef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    state_shardings: TrainState,
    batch_sharding: NamedSharding,
    ema_decay: EmaDecay = None,
    learning_rate: optax.Schedule | None = None,
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

    def step_fn(state: TrainState, batch: Batch):
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_of(params):
            model = nnx.merge(graphdef, params, state.model_state, copy=True)
            model.train()
            teacher = None
            if state.teacher is not None:
                teacher = nnx.merge(graphdef, state.teacher["params"], state.teacher["model_state"], copy=True)
                teacher.train()
            loss, aux = loss_fn(model, batch, rng, teacher, state.step)
            new_model_state = nnx.state(model, nnx.Not(nnx.Param))
            new_teacher_state = None if teacher is None else nnx.state(teacher, nnx.Not(nnx.Param))
            return loss, (aux, new_model_state, new_teacher_state)

        (loss, (aux, model_state, teacher_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        teacher = None
        if state.teacher is not None:
            alpha = ema_alpha(state.step, ema_decay)
            teacher = {"params": _ema(state.teacher["params"], params, alpha), "model_state": teacher_state}

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
        )
        return new_state, metrics

    replicated = NamedSharding(batch_sharding.mesh, P())
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )


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
