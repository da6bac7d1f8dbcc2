"""The Conformer's legacy relative positions (``ConformerConfig.rel_pos = "legacy"``, FunASR's default
``rel_pos_type``): float64 numpy references of FunASR's ``LegacyRelPositionalEncoding`` table and
``LegacyRelPositionMultiHeadedAttention.rel_shift`` (the torch pad/view trick and its closed form),
the attention formula, the encoder's wiring, its dependence on the padded length (FunASR's own), and
the config checks. The default stays "latest" (``tests/nn/test_conformer.py``); FunASR itself is the
reference in ``tests/convert/test_funasr_paraformer_vs_funasr.py``."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.conformer import (
    LEGACY_MAX_LEN,
    PAPER,
    TINY,
    ConformerConfig,
    ConformerEncoder,
    Conv2dSubsampling4,
    LegacyRelPositionAttention,
    RelPositionAttention,
    legacy_rel_shift,
    legacy_relative_table,
    subsampled_length,
)
from tests.nn.test_conformer import lengths_mask, np_rel_attention

TOL = dict(rtol=1e-5, atol=1e-5)
LEGACY = dataclasses.replace(TINY, rel_pos="legacy")


def np_legacy_table(time, dim, max_len=LEGACY_MAX_LEN):
    """``PositionalEncoding(reverse=True, max_len)``'s first ``time`` rows: positions ``P-1, ..., P-time``."""
    top = max(max_len, time) - 1
    table = np.zeros((time, dim))
    for m in range(time):
        pos = top - m
        for k in range(0, dim, 2):
            w = 10000.0 ** (-k / dim)
            table[m, k], table[m, k + 1] = math.sin(pos * w), math.cos(pos * w)
    return table


def np_legacy_rel_shift_torch(x):
    """FunASR's code: ``cat([zero_pad, x], -1).view(*x.size()[:2], T+1, T)[:, :, 1:].view_as(x)``."""
    *lead, time, width = x.shape
    padded = np.concatenate([np.zeros((*lead, time, 1)), x], axis=-1)
    return padded.reshape(*lead, width + 1, time)[..., 1:, :].reshape(x.shape)


def np_legacy_rel_shift_closed_form(x):
    time = x.shape[-1]
    out = np.zeros_like(x)
    for i in range(time):
        for j in range(time):
            if j <= i:
                out[..., i, j] = x[..., i, time - 1 - (i - j)]
            elif j > i + 1:
                out[..., i, j] = x[..., i + 1, j - i - 2]
    return out


def np_legacy_attention(attn, x, table, mask):
    return np_rel_attention(attn, x, table, mask, shift=np_legacy_rel_shift_torch)


@pytest.mark.parametrize("time", [1, 2, 5])
def test_legacy_rel_shift_is_funasr_trick_and_closed_form(time):
    x = np.random.default_rng(time).normal(size=(2, 3, time, time))
    torch_way = np_legacy_rel_shift_torch(x)
    np.testing.assert_array_equal(torch_way, np_legacy_rel_shift_closed_form(x))
    np.testing.assert_allclose(np.asarray(legacy_rel_shift(jnp.asarray(x, jnp.float32))), torch_way, atol=1e-6)
    with pytest.raises(ConfigError, match=r"\(\.\.\., T, T\)"):
        legacy_rel_shift(jnp.zeros((1, 3, 5)))


@pytest.mark.parametrize("time,max_len", [(6, LEGACY_MAX_LEN), (6, 10), (12, 10)])
def test_legacy_table_positions(time, max_len):
    got = np.asarray(legacy_relative_table(time, 16, max_len))
    # float32 arguments up to 5000 rad: a few float32 ulps of the angle
    np.testing.assert_allclose(got, np_legacy_table(time, 16, max_len), atol=2e-3 if max_len > 100 else 1e-6)
    assert got.shape == (time, 16)
    with pytest.raises(ConfigError, match="even"):
        legacy_relative_table(4, 15)


def test_legacy_table_matches_float32_arithmetic():
    """As torch computes it: float32 exponents, ``div_term = exp`` rounded to float32 (correctly, here),
    float32 ``position * div_term``, then sin / cos of those float32 angles (float64 here)."""
    time, dim = 9, 256
    pos = np.arange(LEGACY_MAX_LEN - 1, LEGACY_MAX_LEN - 1 - time, -1, dtype=np.float32)[:, None]
    exponents = np.arange(0, dim, 2, dtype=np.float32) * np.float32(-(math.log(10000.0) / dim))
    div = np.exp(exponents.astype(np.float64)).astype(np.float32)
    angles = (pos * div).astype(np.float64)  # float32 products, exactly
    ref = np.stack([np.sin(angles), np.cos(angles)], -1).reshape(time, dim)
    np.testing.assert_allclose(np.asarray(legacy_relative_table(time, dim)), ref, atol=1e-6)


def test_legacy_attention_matches_numpy_formula():
    batch, time, dim, heads = 2, 6, 8, 2
    attn = LegacyRelPositionAttention(dim, heads, rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).normal(size=(batch, time, dim)).astype(np.float32)
    mask = lengths_mask([6, 4], time)
    table = np.asarray(legacy_relative_table(time, dim))
    got = attn(jnp.asarray(x), jnp.asarray(table), jnp.asarray(mask), train=False)
    np.testing.assert_allclose(np.asarray(got), np_legacy_attention(attn, x, table, mask), **TOL)
    with pytest.raises(ConfigError, match="pos_emb"):
        attn(jnp.asarray(x), jnp.zeros((2 * time - 1, dim)), train=False)
    # the same parameters as the "latest" attention
    latest = RelPositionAttention(dim, heads, rngs=nnx.Rngs(0))
    shapes = {k: v.shape for k, v in nnx.to_flat_state(nnx.state(latest, nnx.Param))}
    assert {k: v.shape for k, v in nnx.to_flat_state(nnx.state(attn, nnx.Param))} == shapes


def test_subsampling_gives_the_legacy_table():
    sub = Conv2dSubsampling4(20, 8, rel_pos="legacy", rngs=nnx.Rngs(0))
    _, table, _ = sub(jnp.zeros((1, 23, 20)), train=False)
    np.testing.assert_array_equal(np.asarray(table), np.asarray(legacy_relative_table(subsampled_length(23), 8)))
    with pytest.raises(ConfigError, match="rel_pos"):
        Conv2dSubsampling4(20, 8, rel_pos="new", rngs=nnx.Rngs(0))


def test_legacy_encoder_wiring_names_and_jit():
    legacy = ConformerEncoder(LEGACY, rngs=nnx.Rngs(0))
    latest = ConformerEncoder(TINY, rngs=nnx.Rngs(0))
    assert all(isinstance(b.attention, LegacyRelPositionAttention) for b in legacy.encoders)
    assert not any(isinstance(b.attention, LegacyRelPositionAttention) for b in latest.encoders)
    paths = lambda m: {k: v.shape for k, v in nnx.to_flat_state(nnx.state(m))}  # noqa: E731
    assert paths(legacy) == paths(latest)  # same FunASR names: one converter for both
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 41, TINY.input_dim)), jnp.float32)
    mask = jnp.asarray(lengths_mask([41, 29], 41))
    nnx.update(legacy, nnx.state(latest))
    a, a_mask = legacy(x, mask, train=False)
    b, _ = latest(x, mask, train=False)
    assert a.shape == b.shape == (2, subsampled_length(41), TINY.d_model)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3  # the position scores differ
    jitted, _ = nnx.jit(lambda m, x, mask: m(x, mask, train=False))(legacy, x, mask)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(a), **TOL)
    # dropout on the table and the input in train mode, as for "latest"
    drop = ConformerEncoder(dataclasses.replace(LEGACY, pos_dropout=0.5, dropout=0.0), rngs=nnx.Rngs(0))
    t1, _ = drop(x, mask, train=True, rngs=jax.random.key(0))
    t2, _ = drop(x, mask, train=True, rngs=jax.random.key(1))
    assert np.abs(np.asarray(t1) - np.asarray(t2)).max() > 1e-3


def test_legacy_output_depends_on_the_padded_length():
    """FunASR's legacy table holds positions 4999 ... 5000-T, T the padded length: the same
    utterance padded further gives other outputs (reproduced on purpose; module docstring)."""
    model = ConformerEncoder(LEGACY, rngs=nnx.Rngs(0))
    x = np.random.default_rng(3).normal(size=(1, 41, TINY.input_dim)).astype(np.float32)
    alone, _ = model(jnp.asarray(x), None, train=False)
    padded = np.concatenate([x, np.zeros((1, 16, TINY.input_dim), np.float32)], 1)
    out, out_mask = model(jnp.asarray(padded), jnp.asarray(lengths_mask([41], 57)), train=False)
    n = subsampled_length(41)
    assert int(out_mask.sum()) == n
    assert np.abs(np.asarray(out[0, :n]) - np.asarray(alone[0])).max() > 1e-4
    # with a table as long as the input (pos_max_len <= T) the positions start at T-1: still T-dependent
    short = ConformerEncoder(dataclasses.replace(LEGACY, pos_max_len=1), rngs=nnx.Rngs(0))
    assert np.abs(np.asarray(short(jnp.asarray(x), None, train=False)[0]) - np.asarray(alone)).max() > 1e-4


def test_config_rel_pos_checks_and_default():
    assert PAPER.rel_pos == TINY.rel_pos == "latest" and PAPER.pos_max_len == LEGACY_MAX_LEN == 5000
    assert ConformerConfig(rel_pos="legacy").rel_pos == "legacy"
    with pytest.raises(ConfigError, match="rel_pos"):
        ConformerConfig(rel_pos="Legacy")
    with pytest.raises(ConfigError, match="pos_max_len"):
        ConformerConfig(pos_max_len=0)
