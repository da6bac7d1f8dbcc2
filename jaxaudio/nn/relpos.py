"""Transformer-XL relative-position self-attention and the MAT-SED / PMAM context network.

Follows the ESPnet/icefall ``RelPositionMultiheadAttention`` used by Transformer4SED
(``src/models/transformer/transformerXL.py``):

* Relative offset ``r = i - j`` (query ``i``, key ``j``): positive when the key is to the
  left. ``sinusoidal_relative_table(T, d)`` has ``2T-1`` rows for ``r = T-1, T-2, ..., 0, -1,
  ..., -(T-1)`` (row ``m`` <-> ``r = T-1-m``: the "new"-style ESPnet table, positive offsets
  first, then negative), each row ``[sin(r w_0), cos(r w_0), sin(r w_1), cos(r w_1), ...]``
  with ``w_k = 10000^(-2k/d)``. The reference builds it for ``max_len`` and slices the
  centre ``2T-1`` rows; the values depend only on ``r``, so building it for ``T`` is equal.
* ``score[i, j] = ((q_i + u) . k_j + (q_i + v) . R_{i-j}) / sqrt(d_head)`` with
  ``R = linear_pos(table)`` (no bias) split into heads, and ``u = pos_bias_u``,
  ``v = pos_bias_v`` learned per head; ``rel_shift`` realigns the ``(T, 2T-1)`` position
  scores to ``(T, T)``. The scores go through the package's one attention core,
  ``attention.attend(q + u, k, v, bias=position_scores)``; the MLP is ``attention.MLP``.
* ``ContextNetwork`` multiplies its input by ``sqrt(dim)`` before the first block, as the
  reference's ``RelPositionalEncoding.forward`` does (``x * xscale``) — the position
  information itself enters only through the attention scores, never added to ``x``.
* ``TransformerXLBlock`` keeps the reference's normalisation order
  ``x = norm1(x); x = x + attn(x); x = x + mlp(norm2(x))`` (the first residual is taken
  from the *normalised* x). There is no final LayerNorm after the stack.

Parameter names (converter from the PyTorch ``TransformerXL`` blocks; torch Linear weights
are ``(out, in)``, ours ``(in, out)``)::

    encoder_blocks.N.norm1.{weight,bias}            blocks/N/norm1/{scale,bias}
    encoder_blocks.N.attn.in_proj.weight[0:d]       blocks/N/attention/query/kernel (.T)
    encoder_blocks.N.attn.in_proj.weight[d:2d]      blocks/N/attention/key/kernel   (.T)
    encoder_blocks.N.attn.in_proj.weight[2d:3d]     blocks/N/attention/value/kernel (.T)
    encoder_blocks.N.attn.in_proj.bias[...]         blocks/N/attention/{query,key,value}/bias
    encoder_blocks.N.attn.out_proj.{weight,bias}    blocks/N/attention/out/{kernel (.T),bias}
    encoder_blocks.N.attn.linear_pos.weight         blocks/N/attention/linear_pos/kernel (.T)
    encoder_blocks.N.attn.pos_bias_{u,v}            blocks/N/attention/pos_bias_{u,v}
    encoder_blocks.N.norm2.{weight,bias}            blocks/N/norm2/{scale,bias}
    encoder_blocks.N.mlp.fc1.{weight,bias}          blocks/N/mlp/fc_in/{kernel (.T),bias}
    encoder_blocks.N.mlp.fc2.{weight,bias}          blocks/N/mlp/fc_out/{kernel (.T),bias}
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn import attention
from jaxaudio.nn.cnn import as_rngs


def sinusoidal_relative_table(length: int, dim: int, dtype=jnp.float32) -> jax.Array:
    """``(2*length-1, dim)`` sinusoids for offsets ``length-1 ... -(length-1)`` (see module doc).

    Computed with jnp in float32 like the PyTorch reference (``position * div_term``), so no
    large constant is baked into the compiled program.
    """
    if dim % 2:
        raise ConfigError(f"relative position dim={dim} must be even (sin/cos pairs)")
    offsets = jnp.arange(length - 1, -length, -1, dtype=jnp.float32)[:, None]
    freqs = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * -(math.log(10000.0) / dim))
    angles = offsets * freqs  # (2T-1, dim/2)
    table = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(2 * length - 1, dim)
    return table.astype(dtype)


def rel_shift(x: jax.Array) -> jax.Array:
    """``(..., T, 2T-1) -> (..., T, T)`` with ``out[..., i, j] = x[..., i, T-1-i+j]``.

    Column ``T-1-i+j`` of the table is offset ``i-j``. Flattening each ``(T, 2T-1)`` matrix,
    the wanted element sits at ``(T-1) + i*(2T-2) + j``: drop the first ``T-1`` entries,
    view the next ``T*(2T-2)`` as rows of ``2T-2`` and keep the first ``T`` columns.
    Static shapes only, so it traces once under jit.
    """
    *lead, time, width = x.shape
    if width != 2 * time - 1:
        raise ConfigError(f"rel_shift input has shape {x.shape}; expected (..., T, 2T-1)")
    if time == 1:
        return x
    flat = x.reshape(*lead, time * width)
    flat = flat[..., time - 1: time - 1 + time * (2 * time - 2)]
    return flat.reshape(*lead, time, 2 * time - 2)[..., :time]


def _xavier_uniform_heads(key, shape, dtype=jnp.float32):
    """``torch.nn.init.xavier_uniform_`` on a ``(heads, head_dim)`` tensor (fan_in=head_dim, fan_out=heads)."""
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class RelPositionMultiHeadAttention(nnx.Module):
    """Self-attention over ``(batch, time, dim)`` with Transformer-XL relative positions."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ConfigError(f"context dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        xavier = nnx.initializers.xavier_uniform()
        zeros = nnx.initializers.zeros
        # The reference initialises its fused in_proj with xavier over (3d, d); per-part xavier
        # is close enough for from-scratch runs, and pretrained weights are converted anyway.
        self.query = nnx.Linear(dim, dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
        self.key = nnx.Linear(dim, dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
        self.value = nnx.Linear(dim, dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
        self.out = nnx.Linear(dim, dim, bias_init=zeros, rngs=rngs)
        self.linear_pos = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
        self.pos_bias_u = nnx.Param(_xavier_uniform_heads(rngs.params(), (num_heads, self.head_dim)))
        self.pos_bias_v = nnx.Param(_xavier_uniform_heads(rngs.params(), (num_heads, self.head_dim)))
        self.dropout_rate = float(dropout)

    def _scores(self, x: jax.Array, pos_table: jax.Array):
        """``(q + u, k, position scores (batch, heads, T, T))``: what ``attention.attend`` takes."""
        batch, time, _ = x.shape
        heads, hd = self.num_heads, self.head_dim
        q = self.query(x).reshape(batch, time, heads, hd)
        k = self.key(x).reshape(batch, time, heads, hd)
        p = self.linear_pos(pos_table.astype(x.dtype)).reshape(2 * time - 1, heads, hd)
        position = rel_shift(jnp.einsum("bihd,rhd->bhir", q + self.pos_bias_v[...], p))
        return q + self.pos_bias_u[...], k, position

    def attention_logits(self, x: jax.Array, pos_table: jax.Array) -> jax.Array:
        """``(batch, heads, T, T)`` float32 scores before masking; ``pos_table`` is ``(2T-1, dim)``."""
        q_u, k, position = self._scores(x, pos_table)
        return attention.attention_logits(q_u, k, bias=position)

    def __call__(self, x: jax.Array, pos_table: jax.Array, mask: jax.Array | None = None,
                 attn_mask: jax.Array | None = None, *, train: bool, rngs=None) -> jax.Array:
        """x ``(batch, time, dim)``; pos_table ``(2*time-1, dim)`` from ``sinusoidal_relative_table``.

        mask: ``(batch, time)`` bool, True on real frames (padded keys get weight 0).
        attn_mask: ``(time, time)`` or ``(heads, time, time)`` bool, True where query i may see key j.
        A query that can see no key at all gets all-zero weights, so its output is the ``out``
        bias (the reference zeroes such rows only when both masks are given, else gives NaN).
        """
        batch, time, dim = x.shape
        allowed = None
        if mask is not None or attn_mask is not None:
            allowed = jnp.ones((1, 1, time, time), bool)
            if mask is not None:
                allowed = allowed & attention.key_padding_mask(mask.astype(bool))
            if attn_mask is not None:
                am = attn_mask.astype(bool)
                allowed = allowed & (am[None, None] if am.ndim == 2 else am[None])
        q_u, k, position = self._scores(x, pos_table)
        v = self.value(x).reshape(batch, time, self.num_heads, self.head_dim)
        y = attention.attend(q_u, k, v, bias=position, mask=allowed, dropout_rate=self.dropout_rate, train=train,
                             rngs=as_rngs(rngs), weights_dtype=x.dtype)
        return self.out(y.reshape(batch, time, dim))


class TransformerXLBlock(nnx.Module):
    """``x = norm1(x); x = x + attn(x); x = x + mlp(norm2(x))`` (Transformer4SED's order)."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 1.0, dropout: float = 0.0,
                 attention_dropout: float = 0.0, norm_eps: float = 1e-5, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.attention = RelPositionMultiHeadAttention(dim, num_heads, dropout=attention_dropout, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        # timm ``Mlp``: fc_in -> exact GELU -> dropout -> fc_out -> dropout
        self.mlp = attention.MLP(dim, int(dim * mlp_ratio), dropout=dropout, out_dropout=True, rngs=rngs)

    def __call__(self, x: jax.Array, pos_table: jax.Array, mask: jax.Array | None = None,
                 attn_mask: jax.Array | None = None, *, train: bool, rngs=None) -> jax.Array:
        rngs = as_rngs(rngs)
        x = self.norm1(x)
        x = x + self.attention(x, pos_table, mask, attn_mask, train=train, rngs=rngs)
        return x + self.mlp(self.norm2(x), train=train, rngs=rngs)


class ContextNetwork(nnx.Module):
    """MAT-SED / PMAM context net: ``x * sqrt(dim)`` then ``n_layers`` Transformer-XL blocks.

    ``(batch, time, dim) -> (batch, time, dim)``; MAT-SED: 3 layers, 768-d, 12 heads,
    mlp_ratio 1; PMAM: 3 layers, 384-d, 12 heads, mlp_ratio 1.
    """

    def __init__(self, n_layers: int = 3, dim: int = 768, num_heads: int = 12, *, mlp_ratio: float = 1.0,
                 dropout: float = 0.0, attention_dropout: float = 0.0, norm_eps: float = 1e-5,
                 rngs: nnx.Rngs):
        self.dim = dim
        self.blocks = nnx.List([
            TransformerXLBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                               attention_dropout=attention_dropout, norm_eps=norm_eps, rngs=rngs)
            for _ in range(n_layers)
        ])

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, attn_mask: jax.Array | None = None,
                 *, train: bool, rngs=None, stop_after: int | None = None) -> jax.Array:
        """``stop_after=i`` returns the output of block ``i`` (0-based): features of an
        intermediate layer, e.g. for fitting prototypes on ``transformer_i``."""
        rngs = as_rngs(rngs)
        table = sinusoidal_relative_table(x.shape[1], self.dim, x.dtype)
        x = x * math.sqrt(self.dim)
        blocks = list(self.blocks) if stop_after is None else list(self.blocks)[: stop_after + 1]
        for block in blocks:
            x = block(x, table, mask, attn_mask, train=train, rngs=rngs)
        return x
