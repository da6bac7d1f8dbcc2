"""Global-local fusion against a literal loop over windows, as Transformer4SED's EncoderSlideWindow runs it."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.global_local import global_local, sliding_encode, window_starts


def make_encoder(seed, c_in=3, c=4, halve=False, xp=jnp):
    """(batch, time, c_in) -> (batch, time or time // 2, c): softmax attention over time, then a
    3-tap conv, so a window's encoding depends on what else is in the window. ``xp=np`` gives the
    same function in numpy, for the loop."""
    rng = np.random.default_rng(seed)
    wq, wk, wv = (rng.normal(size=(c_in, c)).astype(np.float32) for _ in range(3))
    kernel = (rng.normal(size=(3, c, c)) / math.sqrt(3 * c)).astype(np.float32)

    def encode(x):
        logits = (x @ wq) @ xp.swapaxes(x @ wk, 1, 2) / math.sqrt(c)
        att = xp.exp(logits - logits.max(axis=-1, keepdims=True))
        h = (att / att.sum(axis=-1, keepdims=True)) @ (x @ wv)
        hp = xp.pad(h, ((0, 0), (1, 1), (0, 0)))
        t = h.shape[1]
        h = xp.tanh(sum(hp[:, k:k + t] @ kernel[k] for k in range(3))) + h
        if halve:
            h = h[:, :t // 2 * 2].reshape(h.shape[0], t // 2, 2, c).mean(axis=2)
        return h

    return encode


def loop_fusion(encode, x, window, step, *, time_axis=1, mix=0.5, global_encoding=None):
    """Literal numpy version of the reference: range(0, T + step - window, step), last window cut at T,
    placed at round(start * out_len / T), summed, divided by the count, 0/0 -> 0, then mixed."""
    x = np.asarray(x)
    total = x.shape[time_axis]
    g = np.asarray(encode(x) if global_encoding is None else global_encoding, np.float64)
    out_len = g.shape[1]
    scale = out_len / total
    emb = np.zeros(g.shape)
    acc = np.zeros(g.shape)
    for left in range(0, total + step - window, step):
        right = min(left + window, total)
        out = np.asarray(encode(np.take(x, np.arange(left, right), axis=time_axis)))
        out_left = round(left * scale)
        out_right = min(out_len, out_left + out.shape[1])
        emb[:, out_left:out_right] += out
        acc[:, out_left:out_right] += 1
    with np.errstate(invalid="ignore"):
        local = emb / acc
    local[np.isnan(local)] = 0
    return mix * local + (1 - mix) * g


@functools.partial(jax.jit, static_argnames=("encode", "window", "step", "time_axis", "fill_uncovered"))
def fused(x, global_encoding=None, *, encode, window, step, time_axis=1, fill_uncovered=False):
    """global_local under jit (eager dispatch compiles every op separately: seconds on a busy CPU)."""
    return global_local(encode, x, window=window, step=step, time_axis=time_axis, global_encoding=global_encoding,
                        fill_uncovered=fill_uncovered)


def clip(seed, batch, total, c_in=3):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, total, c_in)), jnp.float32)


@pytest.mark.parametrize("total, window, step, halve", [
    (20, 8, 4, False),    # T - window = 12, a multiple of step: last window ends at T
    (23, 8, 4, False),    # ragged: starts 0..16, the last window is [16, 23), 7 frames
    (8, 8, 3, False),     # T == window: one window, the whole clip -> global
    (6, 8, 3, False),     # T < window (but > window - step): one cut window = whole clip -> global
    (24, 8, 4, True),     # encoder halves time: out_len 12, starts map to 0, 2, ..., 8
    (30, 8, 3, True),     # halving with odd starts: 3 * 0.5 = 1.5 -> 2, 9 * 0.5 = 4.5 -> 4 (half to even)
    (1000, 512, 49, False),  # the reference's training numbers
    (1000, 512, 31, True),   # validation step, halving encoder
])
def test_matches_loop_over_windows(total, window, step, halve):
    encode = make_encoder(total + step, halve=halve)
    x = clip(total, 2, total)
    got = np.asarray(fused(x, encode=encode, window=window, step=step))
    encode_np = make_encoder(total + step, halve=halve, xp=np)
    want = loop_fusion(encode_np, x, window, step)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    if total > window:  # the local branch is not the global one
        assert np.abs(got - encode_np(np.asarray(x))).max() > 1e-3


def test_time_axis_of_mel_like_input():
    """Reference layout (batch, mel, time) with time on axis 2; the encoder returns (batch, frames, c)."""
    base, base_np = make_encoder(5), make_encoder(5, xp=np)
    x = jnp.swapaxes(clip(6, 2, 23), 1, 2)
    got = np.asarray(fused(x, encode=lambda a: base(jnp.swapaxes(a, 1, 2)), window=8, step=4, time_axis=2))
    want = loop_fusion(lambda a: base_np(np.swapaxes(a, 1, 2)), x, 8, 4, time_axis=2)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_window_starts_hand_worked():
    assert window_starts(20, 8, 4) == (0, 4, 8, 12)  # last = T - window exactly
    assert window_starts(23, 8, 4) == (0, 4, 8, 12, 16)  # 16 is the first multiple of 4 >= 15; [16, 23) is cut
    assert window_starts(8, 8, 3) == (0,)
    assert window_starts(6, 8, 3) == (0,)  # range(0, 1, 3)
    assert window_starts(3, 8, 3) == (0,)  # reference: range(0, -2, 3) is empty; we keep one window
    # 10 s PaSST clip: 320000 samples, pre-emphasis -> 319999, hop 320 centred -> 1 + 999 = 1000 mel frames.
    # step 49: range(0, 1000 + 49 - 512 = 537, 49) -> 0, 49, ..., 490 (10 * 49; 11 * 49 = 539 >= 537):
    # 11 windows; 490 is the first multiple of 49 >= 488 = 1000 - 512, so the last window is [490, 1000), 510 frames.
    s49 = window_starts(1000, 512, 49)
    assert len(s49) == 11 and s49[-1] == 490 and s49 == tuple(range(0, 491, 49))
    # step 31: range(0, 519, 31) -> 0, 31, ..., 496 (16 * 31; 17 * 31 = 527 >= 519): 17 windows, last [496, 1000).
    s31 = window_starts(1000, 512, 31)
    assert len(s31) == 17 and s31[-1] == 496 and s31 == tuple(range(0, 497, 31))


def passt_like(seed, c=4, xp=jnp):
    """PaSST's time geometry: patch columns of 16 frames every 10, mixed over time, x10 (nearest) per column.
    512 or 510 frames -> 50 columns -> 500 output frames; a whole 1000-frame clip -> 99 columns."""
    mix = make_encoder(seed, c_in=c, c=c, xp=xp)

    def columns(x):
        n = (x.shape[1] - 16) // 10 + 1
        return mix(x[:, 10 * np.arange(n)[:, None] + np.arange(16)].mean(axis=2))

    def encode(x):
        return xp.repeat(columns(x), 10, axis=1)

    def encode_global(x):  # the reference pads the global 99 columns to 100 (last repeated): 1000 frames
        col = columns(x)
        return xp.repeat(xp.concatenate([col, col[:, -1:]], axis=1), 10, axis=1)

    return encode, encode_global


def test_uncovered_tail_like_the_reference_or_filled():
    encode, encode_global = passt_like(3)
    x = clip(4, 2, 1000, c_in=4)
    g = jax.jit(encode_global)(x)
    got = np.asarray(fused(x, g, encode=encode, window=512, step=49))
    want = loop_fusion(passt_like(3, xp=np)[0], x, 512, 49, global_encoding=g)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # last window starts at 490 and yields 500 frames: 990..999 are reached by no window -> 0.5 * global there
    np.testing.assert_allclose(got[:, 990:], 0.5 * np.asarray(g)[:, 990:], rtol=1e-6)
    assert np.abs(got[:, 989] - 0.5 * np.asarray(g)[:, 989]).max() > 1e-3
    filled = np.asarray(fused(x, g, encode=encode, window=512, step=49, fill_uncovered=True))
    np.testing.assert_allclose(filled[:, 990:], np.asarray(g)[:, 990:], rtol=1e-6)
    np.testing.assert_allclose(filled[:, :990], got[:, :990], rtol=1e-6)


def test_short_clip_is_global_and_sliding_counts():
    x = clip(2, 2, 3)  # T <= window - step: the reference would give 0.5 * global; we give the global encoding
    got = fused(x, encode=make_encoder(1), window=8, step=3)
    np.testing.assert_allclose(np.asarray(got), make_encoder(1, xp=np)(np.asarray(x)), rtol=1e-5, atol=1e-6)
    # sliding_encode of an identity encoder is the input (every frame averaged with copies of itself)
    x = clip(3, 2, 23)
    got = jax.jit(lambda a: sliding_encode(lambda b: b, a, window=8, step=4))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x), rtol=1e-6)


def test_jit_one_stacked_encoder_call_and_differs_from_global():
    base = make_encoder(7)
    calls = []

    def encode(x):
        calls.append(x.shape)
        return base(x)

    x = clip(8, 3, 23)
    fused = jax.jit(functools.partial(global_local, encode, window=8, step=4))
    got = np.asarray(fused(x))
    # traced once: the whole clip, the 4 full windows stacked into the batch (4 * 3), the cut window [16, 23)
    assert calls == [(3, 23, 3), (12, 8, 3), (3, 7, 3)]
    base_np = make_encoder(7, xp=np)
    np.testing.assert_allclose(got, loop_fusion(base_np, x, 8, 4), atol=1e-5, rtol=1e-5)
    assert np.abs(got - base_np(np.asarray(x))).max() > 1e-3
    got_static = jax.jit(global_local, static_argnames=("encode", "window", "step"))(encode=base, x=x, window=8, step=4)
    np.testing.assert_allclose(np.asarray(got_static), got, atol=1e-6)


def test_nnx_module_under_nnx_jit():
    model = nnx.Conv(3, 4, kernel_size=(3,), rngs=nnx.Rngs(0))  # (batch, time, 3) -> (batch, time, 4)
    x = clip(9, 2, 20)
    got = nnx.jit(lambda m, a: global_local(m, a, window=8, step=4))(model, x)
    np.testing.assert_allclose(np.asarray(got), loop_fusion(model, x, 8, 4), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, name", [
    (dict(window=0, step=4), "window"),
    (dict(window=8, step=0), "step"),
    (dict(window=8, step=1.5), "step"),
    (dict(window=8, step=4, local_weight=1.5), "local_weight"),
])
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        global_local(lambda a: a, clip(0, 1, 20), **kwargs)


def test_bad_output_grid_names_out_len():
    with pytest.raises(ConfigError, match="out_len"):
        sliding_encode(lambda a: a, clip(0, 1, 20), window=8, step=4, out_len=0)
    # identity encoder (8 frames per window) on a grid of 10 for 20 input frames: start 12 -> 6, 6 + 8 > 10
    with pytest.raises(ConfigError, match="out_len"):
        sliding_encode(lambda a: a, clip(0, 1, 20), window=8, step=4, out_len=10)
    with pytest.raises(ConfigError, match="window"):
        window_starts(20, -1, 4)
