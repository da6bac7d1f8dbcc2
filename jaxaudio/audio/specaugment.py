"""SpecAugment as ESPnet / FunASR apply it to ASR features: time warp, frequency masks, time masks.

Why a module of its own: the masks are `augment.py`'s (reused, not rewritten), but ESPnet's time warp
(espnet2/layers/time_warp.py, which FunASR copies) is a bicubic resize of the two sides of a random
centre, ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``, and ASR batches are
padded, so each row must be warped (and time-masked) inside its own length. Here the resize is a
coordinate map plus a 4-tap gather with torch's Keys weights (a = -0.75, indices clamped at each
segment's border), so everything stays jit-able with static shapes and per-row dynamic lengths.

ESPnet's draws: centre c ~ U{window, ..., T - window - 1}, warped w ~ U{c - window + 1, ..., c + window}
(its ``randint(c - window, c + window) + 1``); frames [0, c) are resized to [0, w) and [c, T) to
[w, T). When T - window <= window the input is returned unchanged. Without lengths one (c, w) serves
the whole batch (ESPnet with equal lengths); with lengths each row draws its own inside its length
(ESPnet's per-utterance loop) and its padding is left as it is (ESPnet re-pads with 0.0).
Masks are filled with 0.0 (ESPnet's ``replace_with_zero=True`` default; 0 is the mean after CMVN).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxaudio.audio.augment import freq_mask, span_mask, time_mask
from jaxaudio.errors import ConfigError

CUBIC_A = -0.75  # torch's (and OpenCV's) Keys cubic-convolution coefficient


def cubic_weights(t: jax.Array) -> jax.Array:
    """The 4 tap weights (..., 4) for taps at floor(s) - 1 .. floor(s) + 2, t = s - floor(s) (torch's)."""
    a = CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return jnp.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _cubic_gather(x: jax.Array, rel: jax.Array, offset: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Rows of x (T, F) at source coordinates offset + rel (N,), taps clamped to [lo, hi] (N,).

    The fraction is taken from `rel` (the coordinate inside the segment, as torch computes it on the
    slice) before the integer offset is added, so a late segment loses no float32 precision."""
    base = jnp.floor(rel)
    weights = cubic_weights(rel - base).astype(x.dtype)  # (N, 4)
    taps = base.astype(jnp.int32)[:, None] + offset[:, None] + jnp.arange(-1, 3)[None, :]
    taps = jnp.clip(taps, lo[:, None], hi[:, None])
    # Multiply and sum (not a matmul): full precision on every backend.
    return jnp.sum(weights[:, :, None] * x[taps], axis=1)


def _source(i: jax.Array, in_len: jax.Array, out_len: jax.Array) -> jax.Array:
    """torch's align_corners=False source coordinate scale * (i + 0.5) - 0.5 (cubic: not clamped at 0).

    torch's compiled kernel evaluates it as one fused multiply-add on the float32 scale; a plain
    float32 product then subtraction is up to an ulp of the product off, which moves a late frame's
    value by ~1e-5. So the scale is split in two (11 + 13 significant bits): hi * (i + 0.5) is
    exact for T <= 4096, and only the sum of the two parts is rounded, as the fused operation is.
    The barrier keeps XLA from rewriting a division by a broadcast value as a multiplication by its
    reciprocal (1 ulp off, which is worse than the rounding avoided above)."""
    num, den = jax.lax.optimization_barrier((in_len.astype(jnp.float32), out_len.astype(jnp.float32)))
    scale = num / den
    half = i.astype(jnp.float32) + 0.5
    bits = jax.lax.bitcast_convert_type(scale, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFE000), jnp.float32)
    return (hi * half - 0.5) + (scale - hi) * half


def resize_bicubic_1d(x: jax.Array, out_len: int) -> jax.Array:
    """Resize x (T, F) along time to (out_len, F) as torch's bicubic interpolate, align_corners=False."""
    i = jnp.arange(out_len)
    zeros = jnp.zeros_like(i)
    return _cubic_gather(x, _source(i, jnp.asarray(x.shape[0]), jnp.asarray(out_len)), zeros, zeros,
                         jnp.full_like(i, x.shape[0] - 1))


def _warp_row(x: jax.Array, center: jax.Array, warped: jax.Array, length: jax.Array, window: int) -> jax.Array:
    i = jnp.arange(x.shape[0])
    active = length - window > window
    # Safe values for rows that stay as they are (no division by zero, no out-of-range taps).
    c = jnp.where(active, center, 1)
    w = jnp.where(active, warped, 1)
    n = jnp.where(active, length, 2)
    left = i < w
    rel = jnp.where(left, _source(i, c, w), _source(i - w, n - c, n - w))
    offset = jnp.where(left, 0, c)
    lo = jnp.where(left, 0, c)
    hi = jnp.where(left, c - 1, n - 1)
    y = _cubic_gather(x, rel, offset, lo, hi)
    keep = ~active | (i >= length)
    return jnp.where(keep[:, None], x, y)


def apply_time_warp(x: jax.Array, center: jax.Array, warped: jax.Array, lengths: jax.Array,
                    window: int) -> jax.Array:
    """Warp each row of x (B, T, F): frames [0, c) to [0, w), [c, L) to [w, L); frames >= L kept.

    center, warped, lengths: (B,) ints. Rows with L - window <= window are returned unchanged."""
    b = x.shape[0]
    as_rows = [jnp.broadcast_to(jnp.asarray(v, jnp.int32), (b,)) for v in (center, warped, lengths)]
    return jax.vmap(_warp_row, in_axes=(0, 0, 0, 0, None))(x, *as_rows, window)


def time_warp_params(key: jax.Array, lengths: jax.Array, window: int, shared: bool = False
                     ) -> tuple[jax.Array, jax.Array]:
    """ESPnet's (center, warped) per row of `lengths` (B,), or one pair for all rows when `shared`."""
    k_center, k_warp = jax.random.split(key)
    lengths = jnp.asarray(lengths, jnp.int32)
    shape = () if shared else lengths.shape
    top = lengths.max() if shared else lengths
    center = jax.random.randint(k_center, shape, window, top - window)
    warped = jax.random.randint(k_warp, shape, center - window, center + window) + 1
    return jnp.broadcast_to(center, lengths.shape), jnp.broadcast_to(warped, lengths.shape)


def time_warp(key: jax.Array, x: jax.Array, window: int = 5, lengths: Optional[jax.Array] = None) -> jax.Array:
    """ESPnet's bicubic time warp of x (B, T, F); see the module docstring for the draws.

    lengths None: one warp for the batch (identity when T - window <= window). lengths (B,): each row
    warped inside its own length by its own draw, padding untouched."""
    if window < 0:
        raise ConfigError(f"time_warp: window must be >= 0, got {window}")
    b, t = x.shape[:2]
    if window == 0 or (lengths is None and t - window <= window):
        return x
    shared = lengths is None
    lengths = jnp.full((b,), t, jnp.int32) if shared else jnp.asarray(lengths, jnp.int32)
    center, warped = time_warp_params(key, lengths, window, shared=shared)
    return apply_time_warp(x, center, warped, lengths, window)


def time_mask_within(key: jax.Array, x: jax.Array, max_width: int, num_masks: int,
                     lengths: Optional[jax.Array] = None) -> jax.Array:
    """`augment.time_mask` (zero fill) with each span started inside its row's length.

    Widths and starts are `span_mask`'s draws, one span at a time; a start s uniform on [0, T - w]
    is mapped to floor(s (L - w + 1) / (T - w + 1)), so a span lies inside the valid frames when
    w <= L (rows of full length are unchanged by the map), and frames at or past L are never
    masked. max_width is capped at T (span_mask refuses wider)."""
    b, t = x.shape[:2]
    max_width = min(max_width, t)
    if lengths is None:
        return time_mask(key, x, max_width, num_masks)
    lengths = jnp.asarray(lengths, jnp.int32)[:, None]
    pos = jnp.arange(t)[None, :]
    masked = jnp.zeros((b, t), bool)
    for k in jax.random.split(key, num_masks):
        span = span_mask(k, b, t, max_width, 1)
        width = span.sum(axis=1, keepdims=True)
        start = jnp.argmax(span, axis=1)[:, None]
        start = start * (jnp.maximum(lengths - width, 0) + 1) // (t - width + 1)
        masked |= (pos >= start) & (pos < start + width)
    masked &= pos < lengths
    return jnp.where(masked[:, :, None], jnp.zeros((), x.dtype), x)


def spec_augment(key: jax.Array, x: jax.Array, lengths: Optional[jax.Array] = None, *, warp_window: int = 5,
                 freq_masks: int = 2, freq_width: int = 30, time_masks: int = 2, time_width: int = 40) -> jax.Array:
    """FunASR's AISHELL-1 SpecAugment on x (B, T, F): time warp, freq masks, time masks (ESPnet's order).

    Mask widths are uniform on {0, ..., width} (`span_mask`'s inclusive range); ESPnet's
    ``width_range [0, 30]`` draws from {0, ..., 29}: pass freq_width=29, time_width=39 to match it
    exactly. A zero count or width (or warp_window 0) switches that step off."""
    k_warp, k_freq, k_time = jax.random.split(key, 3)
    x = time_warp(k_warp, x, warp_window, lengths)
    if freq_masks > 0 and freq_width > 0:
        x = freq_mask(k_freq, x, min(freq_width, x.shape[2]), freq_masks)
    if time_masks > 0 and time_width > 0:
        x = time_mask_within(k_time, x, time_width, time_masks, lengths)
    return x


__all__: Sequence[str] = [
    "cubic_weights", "resize_bicubic_1d", "apply_time_warp", "time_warp_params", "time_warp",
    "time_mask_within", "spec_augment",
]
