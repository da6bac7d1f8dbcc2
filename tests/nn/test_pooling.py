"""Pooling closed forms on hand-worked inputs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.pooling import AttentionPool, attention_pooling, linear_softmax_pooling


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


apply = nnx.jit(lambda pool, x: pool(x, train=False))


def test_linear_softmax_pooling_hand_values():
    p = jnp.array([[[0.2, 1.0, 0.0], [0.6, 1.0, 0.0], [0.2, 1.0, 0.0]]])  # (batch, time, classes)
    got = np.asarray(linear_softmax_pooling(p))
    # class 0: (0.04 + 0.36 + 0.04) / 1.0; class 1: 3/3; class 2: 0/0 -> clamped to 1e-7
    np.testing.assert_allclose(got, [[0.44, 1.0, 1e-7]], rtol=1e-6)


def test_attention_pooling_softmax_over_time():
    strong = jnp.array([[[0.2], [0.8]]])
    logits = jnp.array([[[0.0], [math.log(3.0)]]])  # softmax over time -> weights 0.25, 0.75
    got = attention_pooling(strong, logits, softmax_over="time")
    np.testing.assert_allclose(np.asarray(got), [[0.25 * 0.2 + 0.75 * 0.8]], rtol=1e-6)


def test_attention_pooling_softmax_over_classes_like_desed():
    strong = jnp.array([[[0.2, 0.4], [0.8, 0.6]]])
    # frame 0 logits equal -> weights (0.5, 0.5); frame 1 -> (0.75, 0.25)
    logits = jnp.array([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    got = attention_pooling(strong, logits)
    want = [(0.5 * 0.2 + 0.75 * 0.8) / 1.25, (0.5 * 0.4 + 0.25 * 0.6) / 0.75]
    np.testing.assert_allclose(np.asarray(got), [want], rtol=1e-6)
    with pytest.raises(ConfigError):
        attention_pooling(strong, logits, softmax_over="frames")


def identity_pool(dim, heads, query):
    pool = AttentionPool(dim, heads, rngs=nnx.Rngs(key(0)))
    for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.out_proj):
        proj.kernel[...] = jnp.eye(dim)
        proj.bias[...] = jnp.zeros((dim,))
    pool.query[...] = jnp.asarray(query, jnp.float32)
    return pool


def test_attention_pool_single_head_hand_case():
    # scores q.x / sqrt(2): ln 3 for x1, 0 for x2 -> weights 0.75, 0.25
    pool = identity_pool(2, 1, [math.sqrt(2.0) * math.log(3.0), 0.0])
    x = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(np.asarray(apply(pool, x)), [[0.75, 0.25]], rtol=1e-6)


def test_attention_pool_heads_attend_independently_over_leading_dims():
    # head 0 looks at dims (0, 1), head 1 at dims (2, 3); head_dim 2 -> scale 1/sqrt(2)
    s = math.sqrt(2.0)
    pool = identity_pool(4, 2, [s * math.log(3.0), 0.0, 0.0, 0.0])
    items = jnp.array([[1.0, 0.0, 2.0, 4.0], [0.0, 1.0, 6.0, 8.0]])
    x = jnp.broadcast_to(items, (3, 5, 2, 4))  # (batch, time, items, dim)
    got = np.asarray(apply(pool, x))
    # head 0 weights (0.75, 0.25); head 1 has query 0 -> uniform (0.5, 0.5)
    want = [0.75, 0.25, 4.0, 6.0]
    assert got.shape == (3, 5, 4)
    np.testing.assert_allclose(got, np.broadcast_to(want, (3, 5, 4)), rtol=1e-6)


def test_attention_pool_constant_items_give_projected_item():
    pool = AttentionPool(8, 4, rngs=nnx.Rngs(key(1)))
    item = np.random.default_rng(0).normal(size=8).astype(np.float32)
    x = jnp.broadcast_to(jnp.asarray(item), (2, 3, 8))
    want = pool.out_proj(pool.v_proj(jnp.asarray(item)))
    got = np.asarray(apply(pool, x))
    np.testing.assert_allclose(got, np.broadcast_to(want, (2, 8)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError):
        AttentionPool(6, 4, rngs=nnx.Rngs(key(0)))
