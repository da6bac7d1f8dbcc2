"""Feature-level augmentations as pure functions of a PRNG key.

Features are `(batch, time, mel)`, frame labels `(batch, frames, classes)`. Every function
is jit-able with static shapes: random widths, bands and positions become masks or index
arithmetic, never dynamic slices. Same key, same output.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxaudio.errors import ConfigError


# ----------------------------------------------------------------------------- SpecAugment masks

def span_mask(key: jax.Array, batch: int, size: int, max_width: int, num_masks: int = 1
              ) -> jax.Array:
    """Boolean (batch, size), True inside `num_masks` random spans per example.

    Each span's width is uniform on {0, ..., max_width} and its start uniform over the
    positions where it fits, drawn independently per example and per span (spans may overlap).
    """
    if not 0 <= max_width <= size:
        raise ConfigError(f"max_width: expected 0 <= max_width <= {size}, got {max_width}")
    width_key, start_key = jax.random.split(key)
    widths = jax.random.randint(width_key, (num_masks, batch, 1), 0, max_width + 1)
    starts = jax.random.randint(start_key, (num_masks, batch, 1), 0, size - widths + 1)
    pos = jnp.arange(size)
    return jnp.any((pos >= starts) & (pos < starts + widths), axis=0)


def _fill_value(x: jax.Array, fill: str) -> jax.Array:
    if fill == "zero":
        return jnp.zeros((), x.dtype)
    if fill == "mean":
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    raise ConfigError(f"fill: expected 'zero' or 'mean', got {fill!r}")


def time_mask(key: jax.Array, x: jax.Array, max_width: int, num_masks: int = 1,
              fill: str = "zero") -> jax.Array:
    """Blank random time spans of x (batch, time, mel).

    fill='zero' writes 0 (torchaudio's default; for normalised log-mels 0 is the data mean),
    fill='mean' writes each example's own mean over time and mel.
    """
    mask = span_mask(key, x.shape[0], x.shape[1], max_width, num_masks)[:, :, None]
    return jnp.where(mask, _fill_value(x, fill), x)


def freq_mask(key: jax.Array, x: jax.Array, max_width: int, num_masks: int = 1,
              fill: str = "zero") -> jax.Array:
    """Blank random mel-bin spans of x (batch, time, mel); `fill` as in `time_mask`."""
    mask = span_mask(key, x.shape[0], x.shape[2], max_width, num_masks)[:, None, :]
    return jnp.where(mask, _fill_value(x, fill), x)


# ----------------------------------------------------------------------------- mixup

def mixup_params(key: jax.Array, batch: int, alpha: float = 0.2, beta: float = 0.2,
                 prob: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """One mixing weight for the batch and a batch permutation.

    lam ~ Beta(alpha, beta) as in the DCASE baseline (one draw per batch); with probability
    1 - prob mixup is skipped, which is lam = 1.
    """
    lam_key, apply_key, perm_key = jax.random.split(key, 3)
    lam = jax.random.beta(lam_key, alpha, beta)
    lam = jnp.where(jax.random.uniform(apply_key) < prob, lam, 1.0)
    return lam, jax.random.permutation(perm_key, batch)


def mixup(key: jax.Array, x: jax.Array, *labels: jax.Array, alpha: float = 0.2,
          beta: float = 0.2, prob: float = 1.0) -> tuple[jax.Array, ...]:
    """Mix each example with a permuted partner: lam * a + (1 - lam) * a[perm].

    The same lam and permutation apply to x and to every label array (frame and clip labels),
    so soft labels stay the convex combination of the two examples' labels.
    Returns (x_mixed, *labels_mixed).
    """
    lam, perm = mixup_params(key, x.shape[0], alpha, beta, prob)

    def mix(a):
        lam_a = lam.astype(a.dtype)
        return lam_a * a + (1 - lam_a) * a[perm]

    return (mix(x),) + tuple(mix(y) for y in labels)


# ----------------------------------------------------------------------------- frame shift

def _roll_rows(a: jax.Array, shifts: jax.Array) -> jax.Array:
    """Roll each example a[b] along axis 1 by shifts[b] (as torch.roll / jnp.roll)."""
    size = a.shape[1]
    src = jnp.mod(jnp.arange(size)[None, :] - shifts[:, None], size)
    src = src.reshape(src.shape + (1,) * (a.ndim - 2))
    return jnp.take_along_axis(a, src, axis=1)


def roll_time(x: jax.Array, labels: jax.Array | None, shifts: jax.Array,
              frames_per_label: float | None = None):
    """Roll x (batch, time, ...) by integer `shifts` (batch,) and labels by the same time.

    The label shift is floor(shift / frames_per_label) (the DCASE baseline's rule), where
    frames_per_label defaults to time / label_frames. Returns x or (x, labels).
    """
    shifts = jnp.asarray(shifts, jnp.int32)
    x_out = _roll_rows(x, shifts)
    if labels is None:
        return x_out
    ratio = x.shape[1] / labels.shape[1] if frames_per_label is None else frames_per_label
    label_shifts = jnp.floor(shifts / ratio).astype(jnp.int32)
    return x_out, _roll_rows(labels, label_shifts)


def frame_shift(key: jax.Array, x: jax.Array, labels: jax.Array | None, sigma_frames: float,
                frames_per_label: float | None = None):
    """Roll each example in time by int(N(0, sigma_frames)) (truncated toward zero, as the
    reference draws `int(random.gauss(0, sigma))`), labels along with it; see `roll_time`."""
    shifts = jnp.trunc(sigma_frames * jax.random.normal(key, (x.shape[0],)))
    return roll_time(x, labels, shifts.astype(jnp.int32), frames_per_label)


# ----------------------------------------------------------------------------- FilterAugment

def filter_gains_db(key: jax.Array, batch: int, n_mels: int,
                    db_range: tuple[float, float] = (-6.0, 6.0),
                    n_bands: tuple[int, int] = (3, 6), min_bw: int = 6,
                    mode: str = "step") -> jax.Array:
    """FilterAugment gain curve in dB, shape (batch, n_mels).

    As the DCASE baseline's filt_aug: the number of bands n ~ U{n_bands[0], ..., n_bands[1]-1}
    and the band edges are drawn once per call (shared by the batch) with every band at least
    min_bw bins wide (min_bw shrinks if n bands cannot fit); gains are drawn per example,
    uniform in db_range. 'step' holds one gain per band; 'linear' draws a gain at each of the
    n + 1 band edges and ramps linearly (in dB) across each band, endpoints included.
    With n <= 1 the gain is 0 dB everywhere (the baseline leaves the input unchanged).
    """
    if mode not in ("step", "linear"):
        raise ConfigError(f"mode: expected 'step' or 'linear', got {mode!r}")
    low, high = n_bands
    if not 1 <= low < high:
        raise ConfigError(f"n_bands: expected 1 <= low < high (high exclusive), got {n_bands}")
    max_bands = high - 1
    n_key, edge_key, gain_key = jax.random.split(key, 3)
    n = jax.random.randint(n_key, (), low, high)
    bw = jnp.minimum(min_bw, (n_mels + 1) // n)
    # Interior edges: n - 1 sorted draws from [0, n_mels - n * bw], the j-th lifted by j * bw.
    draws = jax.random.randint(edge_key, (max_bands - 1,), 0, n_mels - n * bw + 1)
    valid = jnp.arange(max_bands - 1) < n - 1
    draws = jnp.sort(jnp.where(valid, draws, n_mels + 1))
    interior = jnp.where(valid, draws + jnp.arange(1, max_bands) * bw, n_mels)
    edges = jnp.concatenate([jnp.zeros((1,), interior.dtype), interior,
                             jnp.full((1,), n_mels, interior.dtype)])  # (max_bands + 1,)
    bins = jnp.arange(n_mels)
    band = jnp.sum(interior[None, :] <= bins[:, None], axis=1)  # (n_mels,) in [0, n - 1]
    lo_db, hi_db = db_range
    if mode == "step":
        gains = jax.random.uniform(gain_key, (batch, max_bands), minval=lo_db, maxval=hi_db)
        curve = gains[:, band]
    else:
        gains = jax.random.uniform(gain_key, (batch, max_bands + 1), minval=lo_db, maxval=hi_db)
        start, stop = edges[band], edges[band + 1]
        frac = (bins - start) / jnp.maximum(stop - start - 1, 1)
        curve = gains[:, band] + (gains[:, band + 1] - gains[:, band]) * frac[None, :]
    return jnp.where(n > 1, curve, 0.0)


def filter_augment(key: jax.Array, x: jax.Array,
                   db_range: tuple[float, float] = (-6.0, 6.0),
                   n_bands: tuple[int, int] = (3, 6), min_bw: int = 6, mode: str = "step",
                   units_per_db: float = 1.0) -> jax.Array:
    """Add a random FilterAugment gain curve to log features x (batch, time, mel).

    The baseline multiplies linear mel magnitudes by 10**(g/20); on log features that is an
    addition of g * units_per_db. units_per_db = 1 for dB features (DCASE); Transformer4SED's
    PaSST features add ln(10**(g/20)) / 5, i.e. units_per_db = ln(10) / 20 / 5.
    """
    curve = filter_gains_db(key, x.shape[0], x.shape[2], db_range, n_bands, min_bw, mode)
    return x + (units_per_db * curve).astype(x.dtype)[:, None, :]


# ----------------------------------------------------------------------------- frequency distortion

def freq_warp_matrix(n_bins: int, bias: jax.Array, phase: jax.Array) -> jax.Array:
    """(n_bins, n_bins) W such that ``x @ W.T`` warps the frequency axis of x.

    Transformer4SED's "frequency distortion" (``freq_nonlinear``): bin i's value moves to
    position i + n·bias·sin(2π(i/n + phase)) and the row is linearly re-sampled at the integer
    bins (``np.interp``, ends held). With bias < 1/(2π) the map is monotonic, so W is the
    interpolation written as a matrix: one matmul per batch instead of a per-row loop.
    """
    bins = jnp.arange(n_bins, dtype=jnp.float32)
    moved = bins + n_bins * bias * jnp.sin(2.0 * jnp.pi * (bins / n_bins + phase))
    eye = jnp.eye(n_bins, dtype=jnp.float32)
    return jax.vmap(lambda column: jnp.interp(bins, moved, column), in_axes=1, out_axes=1)(eye)


def freq_distortion(key: jax.Array, x: jax.Array, max_bias: float = 0.03) -> jax.Array:
    """Warp the mel axis of x (batch, time, mel) by one random sinusoid for the whole batch:
    bias ~ U(0, max_bias), phase ~ U(0, 1), as the reference draws them once per call
    (ref src/preprocess/data_aug.py:127-131,207-220)."""
    if not 0.0 <= max_bias < 1.0 / (2.0 * math.pi):
        raise ConfigError(f"freq_distortion: max_bias must lie in [0, 1/(2 pi)) so the warp is monotonic, "
                          f"got {max_bias}")
    k_bias, k_phase = jax.random.split(key)
    bias = max_bias * jax.random.uniform(k_bias, ())
    phase = jax.random.uniform(k_phase, ())
    warp = freq_warp_matrix(x.shape[-1], bias, phase)
    return jnp.matmul(x, warp.T.astype(x.dtype), precision="highest")


__all__: Sequence[str] = [
    "span_mask", "time_mask", "freq_mask", "mixup_params", "mixup", "roll_time", "frame_shift",
    "filter_gains_db", "filter_augment", "freq_warp_matrix", "freq_distortion",
]
