"""Conformer encoder (FunASR / ESPnet Paraformer): float64 numpy references of the relative-position
attention and of the subsampling, ESPnet's mask slicing and lengths, padding invariance, the call
through ``attention.attend``, dropout, jit and the FunASR parameter names."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn import attention
from jaxaudio.nn.conformer import (
    PAPER,
    TINY,
    ConformerConfig,
    ConformerEncoder,
    Conv2dSubsampling4,
    RelPositionAttention,
    subsample_mask,
    subsampled_length,
)

TOL = dict(rtol=1e-5, atol=1e-5)


def key(seed):
    """RBG keys: XLA compiles their random ops faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


def f64(a):
    return np.asarray(a, np.float64)


def np_table(time, dim):
    """ESPnet ``RelPositionalEncoding`` rows for offsets ``r = T-1, ..., 0, ..., -(T-1)``:
    ``[sin(r w_0), cos(r w_0), sin(r w_1), ...]`` with ``w_k = 10000^(-2k/d)``."""
    table = np.zeros((2 * time - 1, dim))
    for m in range(2 * time - 1):
        r = time - 1 - m
        for k in range(0, dim, 2):
            w = 10000.0 ** (-k / dim)
            table[m, k], table[m, k + 1] = math.sin(r * w), math.cos(r * w)
    return table


def np_rel_shift_index(bd):
    """Definition: ``out[..., i, j] = bd[..., i, T-1-(i-j)]``, column m of bd being offset ``T-1-m``."""
    time = bd.shape[-2]
    i, j = np.meshgrid(np.arange(time), np.arange(time), indexing="ij")
    return bd[..., i, time - 1 - i + j]


def np_rel_shift_espnet(bd):
    """ESPnet's ``RelPositionMultiHeadedAttention.rel_shift`` (zero column, view, drop a row, keep T columns)."""
    *lead, time, width = bd.shape
    padded = np.concatenate([np.zeros((*lead, time, 1)), bd], axis=-1)
    padded = padded.reshape(*lead, width + 1, time)
    return padded[..., 1:, :].reshape(*lead, time, width)[..., : width // 2 + 1]


def np_rel_attention(attn, x, table, mask, shift=None):
    """scores = ((q+u) k^T + shift((q+v) p^T)) / sqrt(d_k); padded keys get weight 0. ``shift`` is
    the relative shift (ESPnet's by its definition unless given; the legacy test passes FunASR's)."""
    x = f64(x)
    batch, time, dim = x.shape
    heads, dk = attn.num_heads, attn.head_dim

    def proj(linear, y):
        out = y @ f64(linear.kernel[...])
        return out + f64(linear.bias[...]) if linear.bias is not None else out

    q = proj(attn.query, x).reshape(batch, time, heads, dk)
    k = proj(attn.key, x).reshape(batch, time, heads, dk)
    v = proj(attn.value, x).reshape(batch, time, heads, dk)
    p = proj(attn.linear_pos, f64(table)).reshape(-1, heads, dk)
    u, vb = f64(attn.pos_bias_u[...]), f64(attn.pos_bias_v[...])
    ac = np.einsum("bihd,bjhd->bhij", q + u, k)
    bd = (shift or np_rel_shift_index)(np.einsum("bihd,rhd->bhir", q + vb, p))
    scores = (ac + bd) / math.sqrt(dk)
    scores = np.where(mask[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    ctx = np.einsum("bhij,bjhd->bihd", weights, v).reshape(batch, time, dim)
    return proj(attn.out, ctx)


def lengths_mask(lengths, time):
    return np.arange(time)[None, :] < np.asarray(lengths)[:, None]


def test_espnet_rel_shift_trick_is_the_offset_definition():
    bd = np.random.default_rng(0).normal(size=(2, 3, 5, 9))
    np.testing.assert_array_equal(np_rel_shift_espnet(bd), np_rel_shift_index(bd))


def test_rel_position_attention_matches_numpy_formula():
    batch, time, dim, heads = 2, 6, 8, 2
    attn = RelPositionAttention(dim, heads, rngs=nnx.Rngs(0))
    # non-zero biases everywhere (the u/v terms and the projections' biases must all enter)
    x = np.random.default_rng(1).normal(size=(batch, time, dim)).astype(np.float32)
    mask = lengths_mask([6, 4], time)
    table = np_table(time, dim)
    got = attn(jnp.asarray(x), jnp.asarray(table, jnp.float32), jnp.asarray(mask), train=False)
    np.testing.assert_allclose(np.asarray(got), np_rel_attention(attn, x, table, mask), **TOL)
    # the package's table is ESPnet's
    from jaxaudio.nn.relpos import sinusoidal_relative_table
    np.testing.assert_allclose(np.asarray(sinusoidal_relative_table(time, dim)), table, atol=1e-6)


def np_conv2d_s2(x, kernel, bias):
    """torch ``Conv2d(k=3, stride=2)`` on NCHW with torch-layout weights (O, I, 3, 3)."""
    weight = f64(kernel).transpose(3, 2, 0, 1)
    _, _, height, width = x.shape
    ho, wo = (height - 3) // 2 + 1, (width - 3) // 2 + 1
    out = np.zeros((x.shape[0], weight.shape[0], ho, wo))
    for dt in range(3):
        for df in range(3):
            patch = x[:, :, dt:dt + 2 * ho - 1:2, df:df + 2 * wo - 1:2]
            out += np.einsum("bitf,oi->botf", patch, weight[:, :, dt, df])
    return out + f64(bias)[None, :, None, None]


def test_subsampling_matches_numpy_reference_with_torch_flatten_order():
    batch, time, feat, dim = 2, 15, 11, 4
    sub = Conv2dSubsampling4(feat, dim, pos_dropout=0.5, rngs=nnx.Rngs(2))
    x = np.random.default_rng(3).normal(size=(batch, time, feat)).astype(np.float32)
    h, table, mask = sub(jnp.asarray(x), None, train=False)
    ref = np.maximum(np_conv2d_s2(f64(x)[:, None], sub.conv1.kernel[...], sub.conv1.bias[...]), 0)
    ref = np.maximum(np_conv2d_s2(ref, sub.conv2.kernel[...], sub.conv2.bias[...]), 0)
    b, c, t, f = ref.shape
    flat = ref.transpose(0, 2, 1, 3).reshape(b, t, c * f)  # FunASR: x.transpose(1, 2).view(b, t, c * f)
    ref = (flat @ f64(sub.out.kernel[...]) + f64(sub.out.bias[...])) * math.sqrt(dim)
    assert h.shape == (batch, subsampled_length(time), dim) and mask is None
    np.testing.assert_allclose(np.asarray(h), ref, **TOL)
    np.testing.assert_allclose(np.asarray(table), np_table(t, dim), atol=1e-6)
    with pytest.raises(ConfigError, match="needs >= 7"):
        sub(jnp.zeros((1, 6, feat)), train=False)


@pytest.mark.parametrize("total", [7, 8, 9, 10, 11, 12, 15, 16, 23, 40])
def test_subsampling_lengths_and_masks(total):
    formula = ((total - 1) // 2 - 1) // 2
    assert subsampled_length(total) == formula
    full = np.ones((1, total), bool)
    reference = full[:, :-2:2][:, :-2:2]  # FunASR Conv2dSubsampling.forward
    for espnet in (False, True):
        got = np.asarray(subsample_mask(jnp.asarray(full), espnet_slicing=espnet))
        np.testing.assert_array_equal(got, reference)
        assert got.shape == (1, formula) and got.all()
    # padded rows: ESPnet slicing reproduced exactly; the default keeps each row's own conv length
    lengths = np.arange(1, total + 1)
    mask = lengths_mask(lengths, total)
    np.testing.assert_array_equal(np.asarray(subsample_mask(jnp.asarray(mask), espnet_slicing=True)),
                                  mask[:, :-2:2][:, :-2:2])
    exact = np.asarray(subsample_mask(jnp.asarray(mask)))
    np.testing.assert_array_equal(exact, lengths_mask(np.maximum(subsampled_length(lengths), 0), formula))


@pytest.fixture(scope="module")
def tiny():
    model = ConformerEncoder(TINY, rngs=nnx.Rngs(0))
    # non-trivial BatchNorm running statistics, so eval mode's normalisation is not the identity
    for i, block in enumerate(model.encoders):
        rng = np.random.default_rng(10 + i)
        block.conv_module.norm.mean[...] = jnp.asarray(rng.normal(size=TINY.d_model), jnp.float32)
        block.conv_module.norm.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=TINY.d_model), jnp.float32)
    return model


def batch_of_two(lengths=(41, 29), total=41):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, total, TINY.input_dim)).astype(np.float32)
    mask = lengths_mask(lengths, total)
    x[~mask] = 100.0 * rng.normal(size=(int((~mask).sum()), TINY.input_dim))  # loud garbage in the padding
    return x, mask


def test_padding_invariance(tiny):
    lengths = (41, 29)
    x, mask = batch_of_two(lengths)
    out, out_mask = tiny(jnp.asarray(x), jnp.asarray(mask), train=False)
    assert out.shape == (2, subsampled_length(41), TINY.d_model) and out_mask.shape == out.shape[:2]
    for b, length in enumerate(lengths):
        n = subsampled_length(length)
        assert int(out_mask[b].sum()) == n and bool(out_mask[b, :n].all())
        alone, alone_mask = tiny(jnp.asarray(x[b:b + 1, :length]), None, train=False)
        assert alone.shape[1] == n and bool(alone_mask.all())
        np.testing.assert_allclose(np.asarray(out[b, :n]), np.asarray(alone[0]), **TOL)


def test_funasr_padding_mode_reproduces_espnet_masks():
    cfg = dataclasses.replace(TINY, funasr_padding=True)
    model = ConformerEncoder(cfg, rngs=nnx.Rngs(0))
    x, mask = batch_of_two()
    out, out_mask = model(jnp.asarray(x), jnp.asarray(mask), train=False)
    np.testing.assert_array_equal(np.asarray(out_mask), mask[:, :-2:2][:, :-2:2])
    # ESPnet keeps ceil(T/2) frames per stage: (29+1)//2 = 15, then (15+1)//2 = 8; the convs' own length is 6,
    # so two "valid" frames reach into the padding
    assert int(out_mask[1].sum()) == 8 == subsampled_length(29) + 2
    alone, _ = model(jnp.asarray(x[1:, :29]), None, train=False)
    n = subsampled_length(29)
    assert np.abs(np.asarray(out[1, :n]) - np.asarray(alone[0])).max() > 1e-3
    # unpadded rows are unaffected by the mode
    default, _ = ConformerEncoder(TINY, rngs=nnx.Rngs(0))(jnp.asarray(x[:1]), None, train=False)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x[:1]), None, train=False)[0]), np.asarray(default),
                               **TOL)


def test_attention_goes_through_the_core(monkeypatch, tiny):
    calls = []
    core = attention.attend

    def spy(q, k, v, **kwargs):
        calls.append((q.shape, kwargs.get("bias") is not None, kwargs.get("mask") is not None))
        return core(q, k, v, **kwargs)

    monkeypatch.setattr(attention, "attend", spy)
    x, mask = batch_of_two()
    tiny(jnp.asarray(x), jnp.asarray(mask), train=False)
    heads, dk = TINY.heads, TINY.d_model // TINY.heads
    assert calls == [((2, subsampled_length(41), heads, dk), True, True)] * TINY.blocks


def test_dropout_only_in_train_and_jit():
    cfg = dataclasses.replace(TINY, dropout=0.3, attention_dropout=0.3, pos_dropout=0.3)
    model = ConformerEncoder(cfg, rngs=nnx.Rngs(1))
    x, mask = batch_of_two()
    x, mask = jnp.asarray(x), jnp.asarray(mask)

    @nnx.jit(static_argnames="train")
    def run(m, x, mask, rngs, train):
        return m(x, mask, train=train, rngs=rngs)

    eager, _ = model(x, mask, train=False)  # eval needs no rngs
    evaluated, out_mask = run(model, x, mask, key(0), False)
    np.testing.assert_allclose(np.asarray(evaluated), np.asarray(eager), **TOL)
    np.testing.assert_array_equal(np.asarray(run(model, x, mask, key(1), False)[0]), np.asarray(evaluated))
    assert evaluated.shape == (2, subsampled_length(41), cfg.d_model) and out_mask.dtype == jnp.bool_

    mean_before = np.asarray(model.encoders[0].conv_module.norm.mean[...])
    train_a, _ = run(model, x, mask, key(2), True)
    train_b, _ = run(model, x, mask, key(3), True)
    assert np.abs(np.asarray(train_a) - np.asarray(train_b)).max() > 1e-3  # the key drives dropout
    assert np.abs(np.asarray(model.encoders[0].conv_module.norm.mean[...]) - mean_before).max() > 0  # BN updated

    # with every rate at 0, train mode has no randomness (only BatchNorm's batch statistics)
    plain = ConformerEncoder(dataclasses.replace(TINY, dropout=0.0, pos_dropout=0.0), rngs=nnx.Rngs(1))
    first, _ = plain(x, mask, train=True, rngs=key(4))
    plain2 = ConformerEncoder(dataclasses.replace(TINY, dropout=0.0, pos_dropout=0.0), rngs=nnx.Rngs(1))
    second, _ = plain2(x, mask, train=True, rngs=key(5))
    np.testing.assert_allclose(np.asarray(first), np.asarray(second), **TOL)


def test_funasr_parameter_names_and_shapes(tiny):
    d, heads, ffn, k = TINY.d_model, TINY.heads, TINY.ffn_dim, TINY.kernel
    freq = subsampled_length(TINY.input_dim)
    shapes = {"/".join(map(str, path)): v.shape for path, v in nnx.to_flat_state(nnx.state(tiny))}
    expected = {
        "embed/conv1/kernel": (3, 3, 1, d),  # torch embed.conv.0.weight (d, 1, 3, 3)
        "embed/conv2/kernel": (3, 3, d, d),
        "embed/out/kernel": (d * freq, d),  # torch embed.out.0.weight (d, d * F')
        "encoders/1/attention/query/kernel": (d, d),
        "encoders/1/attention/linear_pos/kernel": (d, d),
        "encoders/1/attention/pos_bias_u": (heads, d // heads),
        "encoders/1/attention/pos_bias_v": (heads, d // heads),
        "encoders/1/feed_forward_macaron/fc_in/kernel": (d, ffn),
        "encoders/1/feed_forward/fc_out/kernel": (ffn, d),
        "encoders/1/conv_module/pointwise_conv1/kernel": (1, d, 2 * d),
        "encoders/1/conv_module/depthwise_conv/kernel": (k, 1, d),
        "encoders/1/conv_module/pointwise_conv2/kernel": (1, d, d),
        "encoders/1/conv_module/norm/mean": (d,),
        "encoders/1/norm_final/scale": (d,),
        "after_norm/scale": (d,),
    }
    for path, shape in expected.items():
        assert shapes[path] == shape, path
    assert "encoders/1/attention/linear_pos/bias" not in shapes
    per_block = {p.split("/", 2)[2] for p in shapes if p.startswith("encoders/0/")}
    assert len(per_block) == (4 * 2 + 1 + 2) + 2 * 4 + (2 + 2 + 4 + 2) + 5 * 2  # attention, FFs, conv module, norms


def test_config_checks_and_paper_sizes():
    assert (PAPER.input_dim, PAPER.d_model, PAPER.heads, PAPER.ffn_dim, PAPER.blocks, PAPER.kernel) == (
        80, 256, 4, 2048, 12, 15)
    assert (PAPER.dropout, PAPER.attention_dropout, PAPER.pos_dropout, PAPER.norm_eps) == (0.1, 0.0, 0.1, 1e-12)
    with pytest.raises(ConfigError, match="divisible"):
        ConformerConfig(d_model=10, heads=4)
    with pytest.raises(ConfigError, match="odd"):
        ConformerConfig(kernel=4)
    with pytest.raises(ConfigError, match="input_dim"):
        ConformerConfig(input_dim=6)
