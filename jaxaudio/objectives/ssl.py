"""Self-supervised objectives of the masked audio models: PMAM's prototype BCE, MAT-SED's masked MSE.

Both score only the hidden frames. As PyTorch's ``BCELoss()(p[mask], y[mask])`` in
Transformer4SED, the frame terms are the mean over every selected (frame, prototype) element
of the whole batch (not a mean of per-example means; with ``block_mask`` every example hides
the same number of frames, so the two agree). Selection uses ``where``, so a non-finite value
in an unselected frame cannot leak into the loss or its gradient; no hidden frame gives 0.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jaxaudio.errors import ConfigError
from jaxaudio.objectives.sed import binary_cross_entropy


def _masked_element_mean(per_element: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``per_element (batch, time, k)`` over the frames where ``mask (batch, time)``."""
    if mask.shape != per_element.shape[:2]:
        raise ConfigError(f"frame mask has shape {mask.shape}; expected (batch, time) = {per_element.shape[:2]}")
    picked = jnp.where(mask.astype(bool)[..., None], per_element, 0.0)
    count = jnp.sum(mask.astype(per_element.dtype)) * per_element.shape[-1]
    return jnp.sum(picked) / jnp.maximum(count, 1.0)


def prototype_bce(probs: jax.Array, gamma: jax.Array, mask: jax.Array) -> jax.Array:
    """BCE of prototype probabilities ``probs (batch, time, K)`` against soft GMM posteriors
    ``gamma (batch, time, K)`` on the hidden frames ``mask (batch, time)`` only."""
    if probs.shape != gamma.shape:
        raise ConfigError(
            f"prototype_bce: prediction shape {probs.shape} != target shape {gamma.shape}; "
            "pseudo labels must have the model's frame rate and the GMM's number of prototypes"
        )
    return _masked_element_mean(binary_cross_entropy(probs, gamma), mask)


def clip_targets(gamma: jax.Array) -> jax.Array:
    """Clip-level prototype targets ``[sum_t gamma_{t,k} >= 1]``: ``(batch, time, K) -> (batch, K)`` floats."""
    return (jnp.sum(gamma, axis=1) >= 1.0).astype(gamma.dtype)


def pmam_loss(outputs: Mapping[str, jax.Array], gamma: jax.Array, mask: jax.Array,
              aux_weight: float = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PMAM pre-training loss: prototype BCE on hidden frames + ``aux_weight`` x clip BCE of the AT branch.

    outputs: ``'prototype_probs' (batch, time, K)`` and ``'at_probs' (batch, K)``
    (``PMAM.mam_forward`` plus ``PMAM.prototype_probs``). gamma: soft frame targets; mask: hidden frames.
    Returns ``(loss, aux)`` with the scalar terms.
    """
    for name in ("prototype_probs", "at_probs"):
        if name not in outputs:
            raise ConfigError(f"pmam_loss: outputs lack {name!r}; got keys {sorted(outputs)}")
    frame_term = prototype_bce(outputs["prototype_probs"], gamma, mask)
    clip = clip_targets(gamma)
    if outputs["at_probs"].shape != clip.shape:
        raise ConfigError(f"pmam_loss: at_probs shape {outputs['at_probs'].shape} != clip target shape {clip.shape}")
    clip_term = jnp.mean(binary_cross_entropy(outputs["at_probs"], clip))
    loss = frame_term + jnp.asarray(aux_weight, frame_term.dtype) * clip_term
    return loss, {"loss": loss, "prototype_bce": frame_term, "at_bce": clip_term}


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array, *, stop_target_gradient: bool = True) -> jax.Array:
    """MAT-SED's reconstruction loss: MSE over hidden frames ``mask (batch, time)`` between the
    head output and the pre-mask features ``(batch, time, dim)``; mean over every selected element.

    stop_target_gradient: the target is the encoder's own output; MAT-SED keeps the encoder
    frozen, so no gradient should flow through it by default.
    """
    if pred.shape != target.shape:
        raise ConfigError(f"masked_mse: prediction shape {pred.shape} != target shape {target.shape}")
    if stop_target_gradient:
        target = jax.lax.stop_gradient(target)
    diff = pred - target
    return _masked_element_mean(diff * diff, mask)
