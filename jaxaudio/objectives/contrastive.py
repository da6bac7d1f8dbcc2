"""Supervised contrastive loss (Khosla et al., NeurIPS 2020, arXiv 2004.11362) and GeCo's labels for it.

``supcon_loss`` is Khosla et al.'s L^sup_out (their eq. 2), the variant they recommend: with
``z = e / ||e||`` and, for an anchor i, A(i) every other (valid) sample and P(i) those of A(i)
with i's label,

    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i . z_p / tau) / sum_{a in A(i)} exp(z_i . z_a / tau) )

and the loss is the mean of l_i over the valid anchors that have a positive (an anchor with
none has no term: the reference code would divide by zero there). Everything is one batched
computation (an N x N similarity matrix, a masked log-sum-exp), jit-able with no loop over the
batch. The reference implementation's extra factor tau / base_temperature is 1 at the default.

Temperature 0.07: the default of the authors' reference implementation (HobbitLong/SupContrast
``SupConLoss(temperature=0.07, base_temperature=0.07)`` and ``main_supcon.py --temp``, also MoCo's);
their README's CIFAR recipe runs ``--temp 0.1``. GeCo does not state its value (spec/papers.md §3),
so 0.07 is our choice of the two.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxaudio.errors import ConfigError, ShapeError


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along the last axis, with a finite gradient at x = 0."""
    squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def supcon_terms(embeddings: jax.Array, labels: jax.Array, *, temperature: float = 0.07,
                 valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-anchor losses ``l_i (N,)`` and whether each anchor counts ``(N,)`` bool (valid, >= 1 positive).

    ``l_i`` is 0 where the anchor does not count. See ``supcon_loss`` for the arguments.
    """
    if embeddings.ndim != 2:
        raise ShapeError(f"supcon_loss: embeddings have shape {tuple(embeddings.shape)}; expected (batch, dim)")
    n = embeddings.shape[0]
    if labels.shape != (n,):
        raise ShapeError(f"supcon_loss: labels have shape {tuple(labels.shape)}; expected (batch,) = ({n},)")
    if valid is not None and valid.shape != (n,):
        raise ShapeError(f"supcon_loss: valid has shape {tuple(valid.shape)}; expected (batch,) = ({n},)")
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ConfigError(f"supcon_loss: temperature={temperature}; expected > 0")
    valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)

    z = l2_normalize(embeddings.astype(jnp.float32))
    logits = jnp.matmul(z, z.T, precision="highest") / temperature  # (N, N)
    others = ~jnp.eye(n, dtype=bool)
    denominator = others & valid[None, :] & valid[:, None]  # A(i); rows of invalid anchors are empty
    positive = denominator & (labels[:, None] == labels[None, :])  # P(i)

    # log sum_{a in A(i)} exp(logits[i, a]), stable; an empty row gets a safe dummy (it never counts).
    row_max = jax.lax.stop_gradient(jnp.max(jnp.where(denominator, logits, -jnp.inf), axis=1, keepdims=True))
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    summed = jnp.sum(jnp.exp(jnp.where(denominator, logits - row_max, -jnp.inf)), axis=1, keepdims=True)
    has_denominator = jnp.any(denominator, axis=1, keepdims=True)
    log_denominator = row_max + jnp.log(jnp.where(has_denominator, summed, 1.0))

    log_prob = logits - log_denominator
    n_positive = jnp.sum(positive, axis=1)
    counts = n_positive > 0
    mean_log_prob = jnp.sum(jnp.where(positive, log_prob, 0.0), axis=1) / jnp.maximum(n_positive, 1)
    return jnp.where(counts, -mean_log_prob, 0.0), counts


def supcon_loss(embeddings: jax.Array, labels: jax.Array, *, temperature: float = 0.07,
                valid: jax.Array | None = None) -> jax.Array:
    """Khosla et al.'s L^sup_out, a scalar (module docstring).

    embeddings: ``(batch, dim)``, any scale (L2-normalised here). labels: ``(batch,)`` integers,
    equal label = positive pair. temperature: tau. valid: ``(batch,)`` bool, False on padded rows,
    which are neither anchors nor in any denominator. 0 when no anchor has a positive.
    """
    terms, counts = supcon_terms(embeddings, labels, temperature=temperature, valid=valid)
    return jnp.sum(terms) / jnp.maximum(jnp.sum(counts), 1).astype(terms.dtype)


def geco_contrastive_labels(class_id: jax.Array, is_reconstruction: jax.Array, n_classes: int) -> jax.Array:
    """SupCon labels for GeCo's originals and PAE reconstructions: ``class_id + n_classes * is_reconstruction``.

    GeCo's contrastive term separates "reconstructions from originals within each class"; the paper
    gives no formula, so this is **our reading**: the originals of a machine ID are positives of each
    other, the reconstructions of that ID are positives of each other, and everything else (other IDs,
    and the other kind of the same ID) is a negative -- 2 * n_classes SupCon classes.

    class_id: ``(batch,)`` integers in ``[0, n_classes)``; is_reconstruction: ``(batch,)`` bool.
    """
    if int(n_classes) < 1:
        raise ConfigError(f"geco_contrastive_labels: n_classes={n_classes}; expected a positive integer")
    class_id = jnp.asarray(class_id)
    is_reconstruction = jnp.asarray(is_reconstruction)
    if class_id.shape != is_reconstruction.shape:
        raise ShapeError(f"geco_contrastive_labels: class_id {tuple(class_id.shape)} and is_reconstruction "
                         f"{tuple(is_reconstruction.shape)} must have the same shape")
    return class_id.astype(jnp.int32) + int(n_classes) * is_reconstruction.astype(jnp.int32)


__all__ = ["l2_normalize", "supcon_terms", "supcon_loss", "geco_contrastive_labels"]
