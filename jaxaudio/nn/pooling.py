"""Pooling of frame-level outputs into clip-level ones, and a learned-query attention pool.

* ``attention_pooling``: the DCASE CRNN baseline's weak head. Weights ``w`` come from a second
  dense layer; the clip probability is the ``w``-weighted mean over time of the strong
  probabilities, ``sum_t w p / sum_t w`` with ``w`` clamped to [1e-7, 1]. Note: DESED_task
  normalises ``w`` with a softmax over *classes* (``nn.Softmax(dim=-1)``), not over time;
  ``softmax_over='class'`` (default) reproduces that, ``'time'`` gives the textbook variant.
* ``linear_softmax_pooling``: ``sum_t p^2 / sum_t p``, clamped to [1e-7, 1] (MAT-SED / AST-SED).
* ``AttentionPool``: one learned query attends over a set (frequency patches, frames) with
  multi-head attention, as ``AttentionPooling`` in Transformer4SED (PMAM's frequency pooling,
  MAT-SED/PMAM's AT branch): ``(..., n, dim) -> (..., dim)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn import attention
from jaxaudio.nn.cnn import torch_uniform

CLAMP_MIN = 1e-7
# The clip pooling runs under this name scope, so an integer export can keep it in float: its
# 1e-7 clamp rounds to 0 in int8, and a clip whose frames all quantize to 0 then divides 0 by 0.
POOLING_SCOPE = "clip_pooling"


def _clamp(x: jax.Array) -> jax.Array:
    """To [CLAMP_MIN, 1] with plain max/min: ``jnp.clip`` is a nested jit, whose ops the export
    graph names outside ``POOLING_SCOPE`` (and so would quantize); the values are the same."""
    return jnp.minimum(jnp.maximum(x, CLAMP_MIN), 1.0)


def attention_pooling(strong: jax.Array, att_logits: jax.Array, *, softmax_over: str = "class",
                      time_axis: int = 1) -> jax.Array:
    """Weak probabilities from strong ones ``(batch, time, classes) -> (batch, classes)``.

    att_logits: output of the attention dense layer, same shape as ``strong``.
    """
    if softmax_over not in ("class", "time"):
        raise ConfigError(f"attention_softmax={softmax_over!r}; expected 'class' or 'time'")
    with jax.named_scope(POOLING_SCOPE):
        w = jax.nn.softmax(att_logits, axis=-1 if softmax_over == "class" else time_axis)
        w = _clamp(w)
        return jnp.sum(strong * w, axis=time_axis) / jnp.sum(w, axis=time_axis)


def linear_softmax_pooling(strong: jax.Array, *, time_axis: int = 1) -> jax.Array:
    """``sum p^2 / sum p`` over time, clamped to [1e-7, 1]; an all-zero input gives 1e-7, not NaN."""
    with jax.named_scope(POOLING_SCOPE):
        num = jnp.sum(strong * strong, axis=time_axis)
        den = jnp.maximum(jnp.sum(strong, axis=time_axis), CLAMP_MIN)
        return _clamp(num / den)


class AttentionPool(nnx.Module):
    """Multi-head attention of one learned query over ``n`` items: ``(..., n, dim) -> (..., dim)``.

    Layout follows ``torch.nn.MultiheadAttention``: q/k/v projections with bias, softmax of
    ``q.k / sqrt(head_dim)`` (float32) over the items per head through ``attention.attend``,
    heads concatenated, output projection.
    Query initialised N(0, 0.02) like Transformer4SED's ``f_att_token``.
    """

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ConfigError(f"AttentionPool dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.query = nnx.Param(0.02 * jax.random.normal(rngs.params(), (dim,)))
        init = torch_uniform(dim)

        def dense():
            return nnx.Linear(dim, dim, kernel_init=init, bias_init=nnx.initializers.zeros, rngs=rngs)

        self.q_proj, self.k_proj, self.v_proj, self.out_proj = dense(), dense(), dense(), dense()

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """``train`` / ``rngs`` are the common call convention; the pool has no dropout."""
        *lead, n, dim = x.shape
        heads, hd = self.num_heads, dim // self.num_heads
        q = self.q_proj(self.query[...]).reshape(heads, hd)
        k = self.k_proj(x).reshape(*lead, n, heads, hd)
        v = self.v_proj(x).reshape(*lead, n, heads, hd)
        pooled = attention.attend(q, k, v, train=train, rngs=rngs, single_query=True)  # (..., heads, hd)
        return self.out_proj(pooled.reshape(*lead, dim))
