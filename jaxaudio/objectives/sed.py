"""Sound-event-detection losses: pure functions of (outputs, targets, masks).

Predictions are probabilities (the models end in a sigmoid). A boolean mask of shape
``(batch,)`` selects which examples a term averages over, so one mixed batch (strong, weak,
unlabeled clips) can go through one jit step with fixed shapes. Every term is the mean over
the selected examples of the per-example mean over frames/classes, i.e. PyTorch's
``BCELoss()(pred[mask], target[mask])``; an all-False mask gives 0 (and zero gradients), not NaN.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from jaxaudio.errors import ConfigError

# Probabilities are clipped before the log; PyTorch's BCELoss clamps log at -100 instead.
# The two agree for p in [1e-7, 1 - 1e-7] and clipping keeps gradients finite.
PROB_EPS = 1e-7


def binary_cross_entropy(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Element-wise BCE of probabilities ``pred`` against (soft) targets."""
    p = jnp.clip(pred, PROB_EPS, 1.0 - PROB_EPS)
    return -(target * jnp.log(p) + (1.0 - target) * jnp.log1p(-p))


def masked_example_mean(per_element: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """Mean over the examples picked by ``mask`` of each example's mean over its other axes."""
    per_example = jnp.mean(per_element.reshape(per_element.shape[0], -1), axis=1)
    if mask is None:
        return jnp.mean(per_example)
    if mask.shape != per_example.shape:
        raise ConfigError(f"loss mask has shape {mask.shape}; expected (batch,) = {per_example.shape}")
    # where, not multiply: a non-finite value in an unselected example must not leak in.
    picked = jnp.where(mask, per_example, 0.0)
    count = jnp.sum(mask.astype(per_example.dtype))
    return jnp.sum(picked) / jnp.maximum(count, 1.0)


def _check_same(name: str, pred: jax.Array, target: jax.Array) -> None:
    if pred.shape != target.shape:
        raise ConfigError(
            f"{name}: prediction shape {pred.shape} != target shape {target.shape}; "
            "label frames must match the model's output frame rate"
        )


def strong_bce(pred: jax.Array, target: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Frame-level BCE, pred/target (batch, frames, classes), mask (batch,) bool."""
    _check_same("strong_bce", pred, target)
    return masked_example_mean(binary_cross_entropy(pred, target), mask)


def weak_bce(pred: jax.Array, target: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Clip-level BCE, pred/target (batch, classes), mask (batch,) bool."""
    _check_same("weak_bce", pred, target)
    return masked_example_mean(binary_cross_entropy(pred, target), mask)


def consistency_mse(student: jax.Array, teacher: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """MSE from student to the teacher; no gradient reaches the teacher (stop_gradient)."""
    _check_same("consistency_mse", student, teacher)
    diff = student - jax.lax.stop_gradient(teacher)
    return masked_example_mean(diff * diff, mask)


def mean_teacher_loss(student_out: Mapping[str, jax.Array], teacher_out: Mapping[str, jax.Array],
                      batch: Mapping[str, Any], w_cons) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DCASE-baseline mean-teacher objective.

    loss = strong BCE (has_strong examples) + weak BCE (has_weak examples)
           + w_cons * (MSE(strong) + MSE(weak)) between student and teacher over all examples.
    student_out/teacher_out: {'strong': (B, T, K), 'weak': (B, K)}; batch: 'strong' (B, T, K),
    'weak' (B, K), 'has_strong' (B,), 'has_weak' (B,). Returns (loss, aux of scalar terms).
    """
    sup_strong = strong_bce(student_out["strong"], batch["strong"], batch["has_strong"])
    sup_weak = weak_bce(student_out["weak"], batch["weak"], batch["has_weak"])
    cons_strong = consistency_mse(student_out["strong"], teacher_out["strong"])
    cons_weak = consistency_mse(student_out["weak"], teacher_out["weak"])
    w_cons = jnp.asarray(w_cons, sup_strong.dtype)
    loss = sup_strong + sup_weak + w_cons * (cons_strong + cons_weak)
    aux = {
        "loss": loss,
        "strong_bce": sup_strong,
        "weak_bce": sup_weak,
        "cons_strong_mse": cons_strong,
        "cons_weak_mse": cons_weak,
        "w_cons": w_cons,
    }
    return loss, aux


def mean_teacher_at_loss(student_out: Mapping[str, jax.Array], teacher_out: Mapping[str, jax.Array],
                         batch: Mapping[str, Any], w_cons, *, weak_weight: float = 0.5,
                         at_weight: float = 2.0, weak_subset_only: bool = False
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MAT-SED / PMAM fine-tuning objective, with an audio-tagging (AT) branch beside the pooled clip.

    loss = BCE(strong) + weak_weight * BCE(pooled clip; weak) + at_weight * BCE(AT; weak)
           + w_cons * (MSE(strong) + weak_weight * MSE(student clip, teacher AT)
                       + at_weight * MSE(student AT, teacher AT))
    (Transformer4SED ``recipes/desed/finetune/train.py``: the teacher's AT output is the clip
    target of both student clip outputs). Outputs carry 'strong', 'weak' and 'weak_at'.

    weak_subset_only: the two clip BCEs average over weakly labelled clips alone, not over the
    strongly labelled ones too (whose clip labels follow from their events), as the reference
    does (``recipes/desed/finetune/train.py:157,163``).
    """
    sup_strong = strong_bce(student_out["strong"], batch["strong"], batch["has_strong"])
    weak_rows = batch["has_weak"] & ~batch["has_strong"] if weak_subset_only else batch["has_weak"]
    sup_weak = weak_bce(student_out["weak"], batch["weak"], weak_rows)
    sup_at = weak_bce(student_out["weak_at"], batch["weak"], weak_rows)
    cons_strong = consistency_mse(student_out["strong"], teacher_out["strong"])
    cons_weak = consistency_mse(student_out["weak"], teacher_out["weak_at"])
    cons_at = consistency_mse(student_out["weak_at"], teacher_out["weak_at"])
    w_cons = jnp.asarray(w_cons, sup_strong.dtype)
    loss = (sup_strong + weak_weight * sup_weak + at_weight * sup_at
            + w_cons * (cons_strong + weak_weight * cons_weak + at_weight * cons_at))
    aux = {"loss": loss, "strong_bce": sup_strong, "weak_bce": sup_weak, "at_bce": sup_at,
           "cons_strong_mse": cons_strong, "cons_weak_mse": cons_weak, "cons_at_mse": cons_at, "w_cons": w_cons}
    return loss, aux
