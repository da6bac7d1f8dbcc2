"""Transformer-XL relative attention against a loop-by-loop numpy version of the formula."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.relpos import (
    ContextNetwork,
    RelPositionMultiHeadAttention,
    TransformerXLBlock,
    rel_shift,
    sinusoidal_relative_table,
)


def key(seed):
    return jax.random.key(seed, impl="rbg")


def np_params(linear):
    return np.asarray(linear.kernel[...], np.float64), (
        np.asarray(linear.bias[...], np.float64) if linear.bias is not None else 0.0)


def numpy_rel_attention(attn, x, mask=None):
    """Direct formula: score[i,j] = ((q_i+u).k_j + (q_i+v).R_{i-j}) / sqrt(dh), softmax over j."""
    x = np.asarray(x, np.float64)
    batch, time, dim = x.shape
    heads, dh = attn.num_heads, attn.head_dim
    wq, bq = np_params(attn.query)
    wk, bk = np_params(attn.key)
    wv, bv = np_params(attn.value)
    wo, bo = np_params(attn.out)
    wp = np.asarray(attn.linear_pos.kernel[...], np.float64)
    u = np.asarray(attn.pos_bias_u[...], np.float64)
    v = np.asarray(attn.pos_bias_v[...], np.float64)
    # Independent sinusoid for an offset r (ESPnet: sin at even, cos at odd dims).
    def sinusoid(r):
        e = np.zeros(dim)
        for k in range(0, dim, 2):
            w = 10000.0 ** (-k / dim)
            e[k], e[k + 1] = math.sin(r * w), math.cos(r * w)
        return e

    out = np.zeros_like(x)
    for b in range(batch):
        q = (x[b] @ wq + bq).reshape(time, heads, dh)
        k = (x[b] @ wk + bk).reshape(time, heads, dh)
        val = (x[b] @ wv + bv).reshape(time, heads, dh)
        ctx = np.zeros((time, heads, dh))
        for h in range(heads):
            for i in range(time):
                scores = np.full(time, -np.inf)
                for j in range(time):
                    if mask is not None and not mask[b, j]:
                        continue
                    rel = (sinusoid(i - j) @ wp).reshape(heads, dh)[h]
                    scores[j] = ((q[i, h] + u[h]) @ k[j, h] + (q[i, h] + v[h]) @ rel) / math.sqrt(dh)
                w = np.exp(scores - scores.max())
                w /= w.sum()
                ctx[i, h] = w @ val[:, h]
        out[b] = ctx.reshape(time, dim) @ wo + bo
    return out


def test_table_order_and_values():
    t, d = 4, 6
    table = np.asarray(sinusoidal_relative_table(t, d))
    assert table.shape == (2 * t - 1, d)
    for m in range(2 * t - 1):
        r = t - 1 - m  # positive offsets first: T-1 ... 0 ... -(T-1)
        for k in range(0, d, 2):
            w = 10000.0 ** (-k / d)
            np.testing.assert_allclose(table[m, k], math.sin(r * w), atol=1e-6)
            np.testing.assert_allclose(table[m, k + 1], math.cos(r * w), atol=1e-6)
    # The reference builds the table for max_len=1000 and slices the centre 2T-1 rows.
    big = np.asarray(sinusoidal_relative_table(1000, d))
    np.testing.assert_array_equal(big[999 - (t - 1): 999 + t], table)


@pytest.mark.parametrize("time", [1, 2, 5])
def test_rel_shift_matches_direct_indexing(time):
    x = jax.random.normal(key(1), (2, 3, time, 2 * time - 1))
    got = np.asarray(jax.jit(rel_shift)(x))
    xn = np.asarray(x)
    want = np.zeros((2, 3, time, time), np.float32)
    for i in range(time):
        for j in range(time):
            want[..., i, j] = xn[..., i, time - 1 - i + j]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError):
        rel_shift(jnp.zeros((time, 2 * time)))


def make_attention(dim=8, heads=2, seed=0):
    attn = RelPositionMultiHeadAttention(dim, heads, rngs=nnx.Rngs(key(seed)))
    # Non-zero biases everywhere, so each term of the formula is exercised.
    for lin in (attn.query, attn.key, attn.value, attn.out):
        lin.bias[...] = 0.1 * jax.random.normal(key(seed + 7), lin.bias.shape)
    return attn


def test_attention_matches_numpy_loops():
    attn = make_attention()
    x = jax.random.normal(key(2), (2, 5, 8))
    table = sinusoidal_relative_table(5, 8)
    got = np.asarray(attn(x, table, train=False))
    np.testing.assert_allclose(got, numpy_rel_attention(attn, x), atol=1e-5)


def test_padding_mask_respected():
    attn = make_attention(seed=3)
    x = jax.random.normal(key(4), (2, 6, 8))
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    table = sinusoidal_relative_table(6, 8)
    got = np.asarray(attn(x, table, jnp.asarray(mask), train=False))
    np.testing.assert_allclose(got, numpy_rel_attention(attn, x, mask), atol=1e-5)
    # Changing padded frames must not change the real frames' outputs.
    x2 = x.at[1, 4:].set(100.0)
    got2 = np.asarray(attn(x2, table, jnp.asarray(mask), train=False))
    np.testing.assert_allclose(got2[1, :4], got[1, :4], atol=1e-5)


def test_attn_mask_blocks_keys_and_empty_rows_give_zero():
    attn = make_attention(seed=5)
    x = jax.random.normal(key(6), (1, 4, 8))
    table = sinusoidal_relative_table(4, 8)
    band = jnp.abs(jnp.arange(4)[:, None] - jnp.arange(4)[None, :]) <= 1
    weights_full = jax.nn.softmax(attn.attention_logits(x, table), axis=-1)
    got = attn(x, table, attn_mask=band, train=False)
    # Recompute by hand from the same logits: masked softmax, then value/out projections.
    logits = jnp.where(band, attn.attention_logits(x, table), -jnp.inf)
    w = jax.nn.softmax(logits, axis=-1)
    v = attn.value(x).reshape(1, 4, 2, 4)
    want = attn.out(jnp.einsum("bhij,bjhd->bihd", w, v).reshape(1, 4, 8))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    assert not np.allclose(np.asarray(weights_full), np.asarray(w))
    nothing = attn(x, table, attn_mask=jnp.zeros((4, 4), bool), train=False)
    np.testing.assert_allclose(np.asarray(nothing), np.broadcast_to(np.asarray(attn.out.bias[...]), (1, 4, 8)),
                               atol=1e-6)


def test_block_normalisation_order():
    block = TransformerXLBlock(8, 2, mlp_ratio=1, rngs=nnx.Rngs(key(7)))
    x = jax.random.normal(key(8), (2, 5, 8)) * 3 + 1
    table = sinusoidal_relative_table(5, 8)
    got = block(x, table, train=False)
    h = block.norm1(x)
    h = h + block.attention(h, table, train=False)
    want = h + block.mlp(block.norm2(h), train=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    assert got.shape == (2, 5, 8)
    assert block.mlp.fc_in.kernel.shape == (8, 8)  # mlp_ratio 1


def test_context_network_scales_input_and_jits():
    net = ContextNetwork(n_layers=2, dim=8, num_heads=2, rngs=nnx.Rngs(key(9)))
    x = jax.random.normal(key(10), (2, 7, 8))
    got = nnx.jit(lambda m, x: m(x, train=False))(net, x)
    table = sinusoidal_relative_table(7, 8)
    h = x * math.sqrt(8)
    for block in net.blocks:
        h = block(h, table, train=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(h), atol=1e-5)
    assert got.shape == (2, 7, 8)


def test_context_network_stop_after_returns_that_block():
    net = ContextNetwork(n_layers=3, dim=8, num_heads=2, rngs=nnx.Rngs(key(14)))
    x = jax.random.normal(key(15), (2, 5, 8))
    table = sinusoidal_relative_table(5, 8)
    first = net.blocks[0](x * math.sqrt(8), table, train=False)
    np.testing.assert_allclose(np.asarray(net(x, train=False, stop_after=0)), np.asarray(first), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(net(x, train=False, stop_after=2)), np.asarray(net(x, train=False)))


def test_context_network_dropout_needs_key_only_in_training():
    net = ContextNetwork(n_layers=1, dim=8, num_heads=2, dropout=0.5, attention_dropout=0.5,
                         rngs=nnx.Rngs(key(11)))
    x = jax.random.normal(key(12), (1, 4, 8))
    a = net(x, train=False)
    np.testing.assert_allclose(np.asarray(a), np.asarray(net(x, train=False)))
    b = net(x, train=True, rngs=key(13))
    assert not np.allclose(np.asarray(a), np.asarray(b))
