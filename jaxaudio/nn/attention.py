"""A plain pre-norm Transformer encoder: self-attention with a padding mask, MLP, LayerNorm.

Parameter names are chosen for the sharding rules in ``jaxaudio.train.sharding``:
``attention/{query,key,value}`` are column-parallel, ``attention/out`` row-parallel,
``mlp/fc_in`` column-parallel and ``mlp/fc_out`` row-parallel. Separate q/k/v layers
(rather than one fused kernel) keep each tensor-parallel shard a whole set of heads.

Dropout randomness comes from ``rngs`` passed at call time (an ``nnx.Rngs`` with a
``dropout`` stream), so the model itself holds no RNG state and stays a pure function
of (params, inputs, key) inside the train step.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.nn.activations import exact_gelu


class MultiHeadSelfAttention(nnx.Module):
    """Scaled dot-product self-attention over ``(batch, time, dim)``; softmax in float32."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, use_bias: bool = True, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nnx.Linear(dim, dim, use_bias=use_bias, rngs=rngs)
        self.key = nnx.Linear(dim, dim, use_bias=use_bias, rngs=rngs)
        self.value = nnx.Linear(dim, dim, use_bias=use_bias, rngs=rngs)
        self.out = nnx.Linear(dim, dim, use_bias=use_bias, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def attention_weights(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``(batch, heads, query_time, key_time)`` weights; padded keys get weight 0."""
        batch, time, _ = x.shape
        q = self.query(x).reshape(batch, time, self.num_heads, self.head_dim)
        k = self.key(x).reshape(batch, time, self.num_heads, self.head_dim)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(self.head_dim)
        if mask is not None:
            logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        return jax.nn.softmax(logits, axis=-1)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x: ``(batch, time, dim)``; mask: ``(batch, time)`` bool, True on real (non-padded) frames."""
        batch, time, dim = x.shape
        weights = self.attention_weights(x, mask).astype(x.dtype)
        weights = self.dropout(weights, rngs=rngs)
        v = self.value(x).reshape(batch, time, self.num_heads, self.head_dim)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, time, dim)
        return self.out(y)


class MLP(nnx.Module):
    """Linear -> GELU (exact, as PyTorch's default) -> dropout -> Linear."""

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        self.fc_in = nnx.Linear(dim, hidden_dim, rngs=rngs)
        self.fc_out = nnx.Linear(hidden_dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        h = exact_gelu(self.fc_in(x))
        return self.fc_out(self.dropout(h, rngs=rngs))


class TransformerBlock(nnx.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm_eps: float = 1e-5,
        rngs: nnx.Rngs,
    ):
        self.norm1 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.attention = MultiHeadSelfAttention(dim, num_heads, dropout=attention_dropout, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.mlp = MLP(dim, mlp_dim, dropout=dropout, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = x + self.dropout(self.attention(self.norm1(x), mask, rngs=rngs), rngs=rngs)
        return x + self.dropout(self.mlp(self.norm2(x), rngs=rngs), rngs=rngs)


class TransformerEncoder(nnx.Module):
    """A stack of ``TransformerBlock`` with a final LayerNorm; ``(batch, time, dim)`` in and out.

    Padded frames (mask False) are never attended to; their own outputs are computed but
    meaningless, and losses should mask them.
    """

    def __init__(
        self,
        num_layers: int,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm_eps: float = 1e-5,
        rngs: nnx.Rngs,
    ):
        self.layers = nnx.List(
            [
                TransformerBlock(
                    dim,
                    num_heads,
                    mlp_dim,
                    dropout=dropout,
                    attention_dropout=attention_dropout,
                    norm_eps=norm_eps,
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )
        self.norm = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        for layer in self.layers:
            x = layer(x, mask, rngs=rngs)
        return self.norm(x)
