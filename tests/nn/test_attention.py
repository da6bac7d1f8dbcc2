"""The Transformer encoder against a numpy re-implementation and jax.nn.dot_product_attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from jaxaudio.nn.attention import MultiHeadSelfAttention, TransformerEncoder

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
        out = np.asarray(encoder(jnp.asarray(x), jnp.asarray(mask)))
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
        ours = attn(jnp.asarray(x), jnp.asarray(mask))
        q, k, v = (layer(jnp.asarray(x)).reshape(B, T, H, D // H) for layer in (attn.query, attn.key, attn.value))
        ref = jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask)[:, None, None, :])
        ref = attn.out(ref.reshape(B, T, D))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_padded_frames_do_not_leak_into_real_frames():
    x, mask = _inputs()
    encoder = TransformerEncoder(1, D, H, MLP_DIM, rngs=nnx.Rngs(0))
    noisy = x.copy()
    noisy[1, 4:] = 100.0 * np.random.default_rng(1).normal(size=(T - 4, D))
    a = np.asarray(encoder(jnp.asarray(x), jnp.asarray(mask)))
    b = np.asarray(encoder(jnp.asarray(noisy), jnp.asarray(mask)))
    np.testing.assert_allclose(a[1, :4], b[1, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a[0], b[0])


def test_dropout_only_in_train_mode():
    x, mask = _inputs()
    encoder = TransformerEncoder(1, D, H, MLP_DIM, dropout=0.5, rngs=nnx.Rngs(0))
    encoder.eval()
    first = np.asarray(encoder(jnp.asarray(x), jnp.asarray(mask)))
    np.testing.assert_array_equal(first, np.asarray(encoder(jnp.asarray(x), jnp.asarray(mask))))
    encoder.train()
    dropped = np.asarray(encoder(jnp.asarray(x), jnp.asarray(mask), rngs=nnx.Rngs(dropout=3)))
    assert not np.allclose(dropped, first)
    with pytest.raises(ValueError):
        MultiHeadSelfAttention(10, 3, rngs=nnx.Rngs(0))
