"""The one attention core, the one MLP block, and the pre-norm Transformer built from them.

``attend(q, k, v, ...)`` is the scaled dot-product attention every attention layer of the
package goes through: the self-attention here and in the ViT (``nn/vit.py``), the
Transformer-XL relative-position attention (``nn/relpos.py``, whose position scores enter as
``bias``) and the learned-query ``AttentionPool`` (``nn/pooling.py``). Callers reach it as
``attention.attend`` (module attribute), so a test can watch it. Layout, per head ``h``::

    q (..., q_len, heads, head_dim), k and v (..., k_len, heads, head_dim)
    logits  = (q . k + bias) / sqrt(head_dim)   in ``softmax_dtype`` (float32), (..., heads, q_len, k_len)
    weights = softmax over k_len; keys where ``mask`` is False get weight exactly 0, and a
              query that may see no key at all gets all-zero weights (its output is 0)
    out     = dropout(weights) . v               (..., q_len, heads, head_dim)

``mask`` is bool, True where query i may attend to key j, broadcastable to
``(..., heads, q_len, k_len)``: a padding mask ``(batch, time)`` enters as
``mask[:, None, None, :]`` (``key_padding_mask``). With ``single_query=True`` (attention
pooling) ``q`` is ``(..., heads, head_dim)``, one query with no ``q_len`` axis, and the
logits / output drop that axis too; a ``q_len`` of 1 would compute the same numbers, but
XLA picks other dot kernels for it, so they would differ from the pool's in the last bit.

Parameter names are chosen for the sharding rules in ``jaxaudio.train.sharding``:
``attention/{query,key,value}`` are column-parallel, ``attention/out`` row-parallel,
``mlp/fc_in`` column-parallel and ``mlp/fc_out`` row-parallel. Separate q/k/v layers
(rather than one fused kernel) keep each tensor-parallel shard a whole set of heads.
``MultiHeadSelfAttention`` and ``MLP`` take a ``dense(name, fan_in, fan_out, *, use_bias)``
factory so the ViT can put LoRA layers with its own init under the same names.

Call convention (every module): ``__call__(x, ..., *, train: bool, rngs=None)``. ``train``
switches dropout on; its randomness comes from ``rngs`` (an ``nnx.Rngs`` with a ``dropout``
stream, or a key) passed at call time, so the model holds no RNG state and stays a pure
function of (params, inputs, key) inside the train step.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.nn.activations import exact_gelu

# dense(name, fan_in, fan_out, *, use_bias) -> an nnx.Linear (or a subclass such as LoRALinear).
DenseFactory = Callable[..., nnx.Linear]


def key_padding_mask(mask: jax.Array) -> jax.Array:
    """``(batch, k_len)`` True on real frames -> ``(batch, 1, 1, k_len)``, the ``attend`` mask layout."""
    return mask[:, None, None, :]


# (logits, value product) einsums: with a q_len axis, and for a single query.
_EINSUMS = {False: ("...qhd,...khd->...hqk", "...hqk,...khd->...qhd"),
            True: ("...hd,...khd->...hk", "...hk,...khd->...hd")}


def attention_logits(q: jax.Array, k: jax.Array, *, bias: jax.Array | None = None,
                     dtype=jnp.float32, single_query: bool = False) -> jax.Array:
    """``(q . k + bias) / sqrt(head_dim)`` in ``dtype``: ``(..., heads, q_len, k_len)``.

    The sum is taken in the product's dtype and cast before the scaling, as every caller
    did before this core existed (so the numbers are unchanged to the bit).
    """
    logits = jnp.einsum(_EINSUMS[single_query][0], q, k)
    if bias is not None:
        logits = logits + bias
    return logits.astype(dtype) / math.sqrt(q.shape[-1])


def attention_weights(q: jax.Array, k: jax.Array, *, bias: jax.Array | None = None,
                      mask: jax.Array | None = None, softmax_dtype=jnp.float32,
                      single_query: bool = False) -> jax.Array:
    """Softmax weights ``(..., heads, q_len, k_len)`` in ``softmax_dtype``; masked keys get exactly 0.

    Masked logits are set to the dtype's lowest finite value (not ``-inf``, so no NaN appears
    even in intermediate values); the weights are then zeroed where masked, which also makes
    a fully masked query row all zeros instead of uniform.
    """
    logits = attention_logits(q, k, bias=bias, dtype=softmax_dtype, single_query=single_query)
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    mask = mask.astype(bool)
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)


def dropout(x: jax.Array, rate: float, *, train: bool, rngs=None) -> jax.Array:
    """``nnx.Dropout(rate)`` applied with an explicit ``train``; ``rngs``: ``nnx.Rngs`` or a key."""
    return nnx.Dropout(rate)(x, deterministic=not train, rngs=rngs)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
           mask: jax.Array | None = None, dropout_rate: float = 0.0, train: bool, rngs=None,
           softmax_dtype=jnp.float32, weights_dtype=None, single_query: bool = False) -> jax.Array:
    """Scaled dot-product attention (module docstring): ``(..., q_len, heads, head_dim)``.

    bias: added to ``q . k`` before the scaling (relative-position scores), broadcastable to
      ``(..., heads, q_len, k_len)``. mask: bool, True where a query may see a key.
    dropout_rate / train / rngs: dropout on the weights (only when ``train``).
    weights_dtype: dtype of the weights for dropout and the value product (None: keep
      ``softmax_dtype``); self-attention layers pass their input's dtype.
    single_query: ``q`` is ``(..., heads, head_dim)``, the output ``(..., heads, head_dim)``.
    """
    weights = attention_weights(q, k, bias=bias, mask=mask, softmax_dtype=softmax_dtype,
                                single_query=single_query)
    if weights_dtype is not None:
        weights = weights.astype(weights_dtype)
    weights = dropout(weights, dropout_rate, train=train, rngs=rngs)
    return jnp.einsum(_EINSUMS[single_query][1], weights, v)


def _linear_factory(rngs: nnx.Rngs) -> DenseFactory:
    def dense(name: str, fan_in: int, fan_out: int, *, use_bias: bool = True) -> nnx.Linear:
        return nnx.Linear(fan_in, fan_out, use_bias=use_bias, rngs=rngs)

    return dense


class MultiHeadSelfAttention(nnx.Module):
    """Self-attention over ``(batch, time, dim)`` through ``attend``; softmax in float32.

    qkv_bias / out_bias: biases of the query/key/value and of the output projection.
    dense: factory for the four projections (default ``nnx.Linear``), built in the order
    query, key, value, out.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, qkv_bias: bool = True,
                 out_bias: bool = True, dense: DenseFactory | None = None, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        dense = dense or _linear_factory(rngs)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout_rate = float(dropout)
        self.query = dense("query", dim, dim, use_bias=qkv_bias)
        self.key = dense("key", dim, dim, use_bias=qkv_bias)
        self.value = dense("value", dim, dim, use_bias=qkv_bias)
        self.out = dense("out", dim, dim, use_bias=out_bias)

    def _heads(self, y: jax.Array) -> jax.Array:
        return y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)

    def attention_weights(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``(batch, heads, query_time, key_time)`` float32 weights; padded keys get weight 0."""
        return attention_weights(self._heads(self.query(x)), self._heads(self.key(x)),
                                 mask=None if mask is None else key_padding_mask(mask))

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None) -> jax.Array:
        """x: ``(batch, time, dim)``; mask: ``(batch, time)`` bool, True on real (non-padded) frames."""
        batch, time, dim = x.shape
        y = attend(self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x)),
                   mask=None if mask is None else key_padding_mask(mask), dropout_rate=self.dropout_rate,
                   train=train, rngs=rngs, weights_dtype=x.dtype)
        return self.out(y.reshape(batch, time, dim))


class MLP(nnx.Module):
    """fc_in -> exact GELU (PyTorch's default) -> dropout -> fc_out [-> dropout] (timm ``Mlp``).

    out_dropout: also drop after fc_out (timm's ``Mlp`` does; blocks that drop the branch
    output themselves leave it off). dense: factory for fc_in and fc_out (default ``nnx.Linear``).
    """

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0, out_dropout: bool = False,
                 dense: DenseFactory | None = None, rngs: nnx.Rngs):
        dense = dense or _linear_factory(rngs)
        self.fc_in = dense("fc_in", dim, hidden_dim, use_bias=True)
        self.fc_out = dense("fc_out", hidden_dim, dim, use_bias=True)
        self.dropout = nnx.Dropout(dropout)
        self.out_dropout = out_dropout

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        h = self.dropout(exact_gelu(self.fc_in(x)), deterministic=not train, rngs=rngs)
        y = self.fc_out(h)
        if self.out_dropout:
            y = self.dropout(y, deterministic=not train, rngs=rngs)
        return y


class TransformerBlock(nnx.Module):
    """Pre-norm block: ``x + drop(attn(norm1 x))``, then ``x + drop(mlp(norm2 x))``.

    dense: projection factory handed to the attention and the MLP (the ViT's LoRA layers).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm_eps: float = 1e-5,
        qkv_bias: bool = True,
        dense: DenseFactory | None = None,
        rngs: nnx.Rngs,
    ):
        self.norm1 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.attention = MultiHeadSelfAttention(dim, num_heads, dropout=attention_dropout, qkv_bias=qkv_bias,
                                                dense=dense, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.mlp = MLP(dim, mlp_dim, dropout=dropout, dense=dense, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None) -> jax.Array:
        deterministic = not train
        x = x + self.dropout(self.attention(self.norm1(x), mask, train=train, rngs=rngs),
                             deterministic=deterministic, rngs=rngs)
        return x + self.dropout(self.mlp(self.norm2(x), train=train, rngs=rngs),
                                deterministic=deterministic, rngs=rngs)


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

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None) -> jax.Array:
        for layer in self.layers:
            x = layer(x, mask, train=train, rngs=rngs)
        return self.norm(x)
