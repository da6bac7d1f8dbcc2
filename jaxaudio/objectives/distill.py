"""Knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv 1503.02531), as the remote-sensing
paper trains its compact student (``spec/papers.md`` §5):

    loss = alpha * CE(y, softmax(s)) + (1 - alpha) * T^2 * KL(p_T || softmax(s / T))

with ``p_T`` the teacher's softened distribution ``softmax(t / T)``. The T^2 factor keeps the soft
term's gradient on the scale of the hard one as T changes (Hinton et al. §2). With several
teachers ``p_T`` is the mean of their softened distributions (an ensemble's prediction: the mean of
probabilities, not of logits, so one confident teacher cannot outvote the others by its logit
scale). ``y`` may be soft (mixup), so the hard term is a cross-entropy against a distribution.

The paper states neither alpha nor T: the experiment's config marks its values as our choice.
Every function is a mean over the batch rows whose ``weights`` are 1 (padding rows carry 0).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxaudio.errors import ConfigError, ShapeError


def _mean(per_row: jax.Array, weights: Optional[jax.Array]) -> jax.Array:
    if weights is None:
        return jnp.mean(per_row)
    w = weights.astype(per_row.dtype)
    return jnp.sum(per_row * w) / jnp.maximum(jnp.sum(w), 1.0)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
    """``-sum_c targets_c log softmax(logits)_c`` averaged over rows; ``targets`` sum to 1 per row."""
    if logits.shape != targets.shape:
        raise ShapeError(f"soft_cross_entropy: logits {logits.shape} and targets {targets.shape} differ")
    return _mean(-jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1), weights)


def teacher_distribution(teacher_logits: Sequence[jax.Array] | jax.Array, temperature: float) -> jax.Array:
    """``softmax(t / T)`` of one teacher, or the mean of several teachers' (a list, or a stacked
    ``(teachers, batch, classes)`` array)."""
    if temperature <= 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    if isinstance(teacher_logits, (list, tuple)):
        stacked = jnp.stack([jnp.asarray(t) for t in teacher_logits])
    else:
        stacked = jnp.asarray(teacher_logits)
    if stacked.ndim == 2:
        stacked = stacked[None]
    return jnp.mean(jax.nn.softmax(stacked / temperature, axis=-1), axis=0)


def kl_to_teacher(student_logits: jax.Array, teacher_probs: jax.Array, temperature: float,
                  weights: Optional[jax.Array] = None) -> jax.Array:
    """``T^2 * KL(p_T || softmax(s / T))`` averaged over rows (``torch.nn.KLDivLoss(reduction=
    'batchmean')`` on ``log_softmax(s / T)`` and ``p_T``, times T^2). Terms with ``p_T = 0`` are 0."""
    if student_logits.shape != teacher_probs.shape:
        raise ShapeError(f"kl_to_teacher: student {student_logits.shape} and teacher {teacher_probs.shape} differ")
    log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_p = jnp.log(jnp.where(teacher_probs > 0, teacher_probs, 1.0))
    per_row = jnp.sum(jnp.where(teacher_probs > 0, teacher_probs * (log_p - log_q), 0.0), axis=-1)
    return temperature ** 2 * _mean(per_row, weights)


def distillation_loss(student_logits: jax.Array, targets: jax.Array, teacher_logits, *, alpha: float,
                      temperature: float, weights: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """Hinton's loss and its parts: ``(loss, {"ce", "kd"})``. ``targets``: one-hot or soft labels.
    ``teacher_logits`` are held fixed (their gradient is stopped here too)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation alpha must be in [0, 1], got {alpha}")
    teacher = jax.lax.stop_gradient(teacher_distribution(teacher_logits, temperature))
    ce = soft_cross_entropy(student_logits, targets, weights)
    kd = kl_to_teacher(student_logits, teacher, temperature, weights)
    return alpha * ce + (1.0 - alpha) * kd, {"ce": ce, "kd": kd}
