"""The attention core and the Transformer encoder against numpy re-implementations and
jax.nn.dot_product_attention; the ViT, relative-position and pooling attention go through the core."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from jaxaudio.nn import attention
from jaxaudio.nn.attention import MLP, MultiHeadSelfAttention, TransformerEncoder, attend
from jaxaudio.nn.pooling import AttentionPool
from jaxaudio.nn.relpos import RelPositionMultiHeadAttention, TransformerXLBlock, sinusoidal_relative_table
from jaxaudio.nn.vit import TINY as VIT_TINY
from jaxaudio.nn.vit import ViT

B, T, D, H, MLP_DIM = 2, 7, 16, 4, 32


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    mask = np.array([[True] * T, [True] * 4 + [False] * (T - 4)])
    return x, mask


def _w(linear):
    return np.asarray(linear.kernel[...], np.float64), np.asarray(linear.bias[...], np.float64)


def _layer_norm(x, norm, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(norm.scale[...]) + np.asarray(norm.bias[...])


def _np_attention(x, mask, attn):
    def proj(linear):
        w, b = _w(linear)
        return (x @ w + b).reshape(B, T, H, D // H)

    q, k, v = proj(attn.query), proj(attn.key), proj(attn.value)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D // H)
    logits = np.where(mask[:, None, None, :], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(B, T, D)
    w, b = _w(attn.out)
    return y @ w + b


def test_encoder_matches_numpy_pre_norm_blocks():
    x, mask = _inputs()
    encoder = TransformerEncoder(2, D, H, MLP_DIM, rngs=nnx.Rngs(0))
    with jax.default_matmul_precision("highest"):
        out = np.asarray(encoder(jnp.asarray(x), jnp.asarray(mask), train=False))
    h = x.astype(np.float64)
    for layer in encoder.layers:
        h = h + _np_attention(_layer_norm(h, layer.norm1), mask, layer.attention)
        w_in, b_in = _w(layer.mlp.fc_in)
        w_out, b_out = _w(layer.mlp.fc_out)
        z = _layer_norm(h, layer.norm2) @ w_in + b_in
        h = h + (0.5 * z * (1 + erf(z / np.sqrt(2)))) @ w_out + b_out
    expected = _layer_norm(h, encoder.norm)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_attention_matches_jax_reference_with_padding_mask():
    x, mask = _inputs()
    attn = MultiHeadSelfAttention(D, H, rngs=nnx.Rngs(1))
    with jax.default_matmul_precision("highest"):
        ours = attn(jnp.asarray(x), jnp.asarray(mask), train=False)
        q, k, v = (layer(jnp.asarray(x)).reshape(B, T, H, D // H) for layer in (attn.query, attn.key, attn.value))
        ref = jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask)[:, None, None, :])
        ref = attn.out(ref.reshape(B, T, D))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_padded_frames_do_not_leak_into_real_frames():
    x, mask = _inputs()
    encoder = TransformerEncoder(1, D, H, MLP_DIM, rngs=nnx.Rngs(0))
    noisy = x.copy()
    noisy[1, 4:] = 100.0 * np.random.default_rng(1).normal(size=(T - 4, D))
    a = np.asarray(encoder(jnp.asarray(x), jnp.asarray(mask), train=False))
    b = np.asarray(encoder(jnp.asarray(noisy), jnp.asarray(mask), train=False))
    np.testing.assert_allclose(a[1, :4], b[1, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a[0], b[0])


def test_dropout_only_with_train_true_whatever_the_nnx_mode():
    x, mask = _inputs()
    x, mask = jnp.asarray(x), jnp.asarray(mask)
    encoder = TransformerEncoder(1, D, H, MLP_DIM, dropout=0.5, attention_dropout=0.5, rngs=nnx.Rngs(0))
    first = np.asarray(encoder(x, mask, train=False))  # a fresh module is in NNX train mode: ignored
    np.testing.assert_array_equal(first, np.asarray(encoder(x, mask, train=False)))
    dropped = np.asarray(encoder(x, mask, train=True, rngs=nnx.Rngs(dropout=3)))
    assert not np.allclose(dropped, first)
    encoder.eval()  # NNX mode flags change nothing; only the explicit train does
    np.testing.assert_array_equal(np.asarray(encoder(x, mask, train=True, rngs=nnx.Rngs(dropout=3))), dropped)
    with pytest.raises(TypeError, match="train"):
        encoder(x, mask)  # train is required
    with pytest.raises(ValueError):
        MultiHeadSelfAttention(10, 3, rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------- the core


def numpy_attention(q, k, v, bias=None, mask=None):
    """float64 loops over (batch, head, query): softmax over the allowed keys; none allowed -> zeros."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    batch, tq, heads, dh = q.shape
    tk = k.shape[1]
    bias = np.zeros((batch, heads, tq, tk)) if bias is None else np.broadcast_to(bias, (batch, heads, tq, tk))
    mask = np.ones((batch, heads, tq, tk), bool) if mask is None else np.broadcast_to(mask, (batch, heads, tq, tk))
    out = np.zeros((batch, tq, heads, dh))
    for b in range(batch):
        for h in range(heads):
            for i in range(tq):
                allowed = mask[b, h, i]
                if not allowed.any():
                    continue
                scores = (k[b, :, h] @ q[b, i, h] + bias[b, h, i]) / np.sqrt(dh)
                w = np.exp(scores[allowed] - scores[allowed].max())
                out[b, i, h] = (w / w.sum()) @ v[b, allowed, h]
    return out


def test_attend_matches_numpy_softmax_attention_with_mask_and_bias():
    batch, tq, tk, heads, dh = 2, 5, 7, 3, 4
    ks = jax.random.split(jax.random.key(0), 5)
    q = jax.random.normal(ks[0], (batch, tq, heads, dh))
    k = jax.random.normal(ks[1], (batch, tk, heads, dh))
    v = jax.random.normal(ks[2], (batch, tk, heads, dh))
    bias = 2.0 * jax.random.normal(ks[3], (batch, heads, tq, tk))
    # padding (example 1 has 4 real keys), a per-head pattern, and one query that sees nothing
    padding = np.arange(tk)[None, :] < np.array([[tk], [4]])
    pattern = np.asarray(jax.random.bernoulli(ks[4], 0.7, (1, heads, tq, tk)))
    mask = padding[:, None, None, :] & pattern
    mask[0, 1, 2] = False
    with jax.default_matmul_precision("highest"):
        plain = attend(q, k, v, train=False)
        masked = attend(q, k, v, bias=bias, mask=jnp.asarray(mask), train=False)
        jitted = jax.jit(lambda q, b, m: attend(q, k, v, bias=b, mask=m, train=False))(q, bias, jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(plain), numpy_attention(q, k, v), rtol=1e-5, atol=1e-6)
    want = numpy_attention(q, k, v, bias, mask)
    np.testing.assert_allclose(np.asarray(masked), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jitted), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(masked)[0, 2, 1], np.zeros(dh))  # no visible key: zeros, no NaN
    weights = np.asarray(attention.attention_weights(q, k, bias=bias, mask=jnp.asarray(mask)))
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights[~mask], 0.0)  # masked keys get exactly 0
    # gradients stay finite with a fully masked row
    grad = jax.grad(lambda q: jnp.sum(attend(q, k, v, mask=jnp.asarray(mask), train=False) ** 2))(q)
    assert np.isfinite(np.asarray(grad)).all()


def test_attend_single_query_equals_a_query_axis_of_one():
    ks = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(ks[0], (3, 4))  # (heads, head_dim): one query broadcast over the batch
    k = jax.random.normal(ks[1], (2, 6, 3, 4))
    v = jax.random.normal(ks[2], (2, 6, 3, 4))
    one = attend(q, k, v, train=False, single_query=True)
    axis = attend(jnp.broadcast_to(q, (2, 1, 3, 4)), k, v, train=False)
    assert one.shape == (2, 3, 4)
    np.testing.assert_allclose(np.asarray(one), np.asarray(axis)[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(one), numpy_attention(np.broadcast_to(q, (2, 1, 3, 4)), k, v)[:, 0],
                               rtol=1e-5, atol=1e-6)


def test_attend_dropout_is_on_only_with_train_and_needs_rngs():
    ks = jax.random.split(jax.random.key(2), 3)
    q, k, v = (jax.random.normal(kk, (1, 5, 2, 4)) for kk in ks)
    base = attend(q, k, v, dropout_rate=0.5, train=False)
    np.testing.assert_array_equal(np.asarray(base), np.asarray(attend(q, k, v, train=False)))
    a = attend(q, k, v, dropout_rate=0.5, train=True, rngs=nnx.Rngs(dropout=0))
    b = attend(q, k, v, dropout_rate=0.5, train=True, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # a pure function of the key
    assert not np.allclose(np.asarray(a), np.asarray(base))
    with pytest.raises(ValueError, match="rngs"):
        attend(q, k, v, dropout_rate=0.5, train=True)


def test_vit_relpos_and_pooling_attention_go_through_the_core(monkeypatch):
    calls = []
    core = attention.attend

    def spy(q, k, v, **kwargs):
        calls.append((q.shape, kwargs.get("bias") is not None, kwargs.get("single_query", False)))
        return core(q, k, v, **kwargs)

    monkeypatch.setattr(attention, "attend", spy)
    key = jax.random.key(3)

    vit_cfg = dataclasses.replace(VIT_TINY, depth=2, out_layer=None)
    vit = ViT(vit_cfg, rngs=nnx.Rngs(0))
    vit(jax.random.normal(key, (1, 40, vit_cfg.n_mels)), train=False)
    assert len(calls) == vit_cfg.depth and not any(bias or single for _, bias, single in calls)

    calls.clear()
    rel = RelPositionMultiHeadAttention(8, 2, rngs=nnx.Rngs(1))
    rel(jax.random.normal(key, (2, 5, 8)), sinusoidal_relative_table(5, 8), train=False)
    assert calls == [((2, 5, 2, 4), True, False)]  # the position scores enter as the bias

    calls.clear()
    pool = AttentionPool(8, 2, rngs=nnx.Rngs(2))
    pool(jax.random.normal(key, (2, 3, 6, 8)), train=False)
    assert calls == [((2, 4), False, True)]

    # and the MLP blocks are the one MLP
    assert isinstance(vit.blocks[0].mlp, MLP)
    assert isinstance(TransformerXLBlock(8, 2, rngs=nnx.Rngs(3)).mlp, MLP)
