"""The log-mel front end for export, with its DFT matrix computed in the graph.

Why: ``features.log_mel`` multiplies frames by a stored ``(k * hop, 2 * (n_fft/2 + 1))``
float32 matrix: 1 MB at n_fft 512 and 17 MB at 2048, as large as the whole CRNN. The integer
variants keep the front end in float, so that matrix would dominate the int8 file. Here the
same matrix is rebuilt at run time from ``window[n] * cos/sin(2 pi ((n k) mod n_fft) / n_fft)``
(a few thousand cos/sin per clip, next to the millions of multiply-adds of the matmul).

The converter folds every input-independent subgraph into a constant, so the row index is
tied to the waveform by a zero derived from it (``min(|x_0|, 0)``); the numbers do not change.
``n * k`` is formed in float32, exact while below 2**24, so the reduction mod n_fft is exact.

Front ends with Kaldi per-frame steps (DC removal, per-frame pre-emphasis) fold a full matrix
into the DFT and keep ``features.power_spectrogram``'s stored matrix.

The mel filterbank is stored as dense blocks around its nonzeros: filters are narrow triangles
(the DCASE 16 kHz bank is 3% nonzero), and the int8 variant keeps the front end's constants in
float32, where the full (n_bins, n_mels) bank would be a quarter of a small CRNN's int8 file.
``mel_blocks`` splits the filters into contiguous groups, each multiplied only with the bins its
filters cover; the omitted products are exact zeros, so only the summation order changes.

The log compression is restated with plain ``jnp.maximum``/``jnp.minimum``: ``jnp.clip`` is a
jitted helper whose ops lose the ``frontend`` name scope in the converted graph, and an
unscoped clamp at the end of the front end would be quantized to int8 (steps of ~0.3 dB).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudio.audio import features
from jaxaudio.audio.features import FRONTEND_SCOPE, FrontEndConfig


def computes_dft(cfg: FrontEndConfig) -> bool:
    """Whether the DFT matrix of ``cfg`` is window x cos/sin only (no Kaldi per-frame steps)."""
    kaldi_frame_steps = cfg.remove_dc_offset or (cfg.preemphasis != 0.0 and cfg.preemphasis_mode == "frame")
    rows = features._frame_chunks(cfg) * cfg.hop_length
    return not kaldi_frame_steps and rows * cfg.n_bins < 2**24


def _dft_matrix(cfg: FrontEndConfig, anchor: jax.Array) -> jax.Array:
    """[window * cos | -window * sin], (k * hop, 2 * n_bins) float32, like ``features._stacked_dft``."""
    rows = features._frame_chunks(cfg) * cfg.hop_length
    window = np.zeros((rows, 1), np.float32)
    window[: cfg.win_length, 0] = features.window_function(cfg)
    n = jax.lax.iota(jnp.float32, rows)[:, None] + anchor
    k = jax.lax.iota(jnp.float32, cfg.n_bins)[None, :]
    product = n * k
    phase = product - cfg.n_fft * jnp.floor(product / cfg.n_fft)
    angle = phase * np.float32(2.0 * np.pi / cfg.n_fft)
    window = jnp.asarray(window)
    return jnp.concatenate([window * jnp.cos(angle), -window * jnp.sin(angle)], axis=1)


def mel_blocks(filterbank: np.ndarray, op_bytes: int = 300) -> list[tuple[int, int, int, int]]:
    """Contiguous filter groups ``(bin_lo, bin_hi, mel_lo, mel_hi)`` (half-open) covering every
    nonzero of ``filterbank`` (n_bins, n_mels), chosen to minimise stored float32 bytes plus
    ``op_bytes`` per group (the slice and matmul each group adds to the file)."""
    n_bins, n_mels = filterbank.shape
    lo, hi = np.zeros(n_mels, int), np.zeros(n_mels, int)
    for m in range(n_mels):
        rows = np.flatnonzero(filterbank[:, m])
        lo[m], hi[m] = (rows[0], rows[-1] + 1) if rows.size else (n_bins, 0)

    def span(a, b):  # bins covered by filters a..b-1, at least one bin
        start, stop = lo[a:b].min(), hi[a:b].max()
        return (int(start), int(stop)) if stop > start else (0, 1)

    best = [0.0] + [np.inf] * n_mels  # best[j]: cheapest cover of filters 0..j-1
    cut = [0] * (n_mels + 1)
    for j in range(1, n_mels + 1):
        for i in range(j):
            start, stop = span(i, j)
            cost = best[i] + 4 * (stop - start) * (j - i) + op_bytes
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n_mels
    while j > 0:
        i = cut[j]
        groups.append((*span(i, j), i, j))
        j = i
    return groups[::-1]


def _mel(power: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    """``power @ mel_filterbank(cfg)`` from the bank's nonzero blocks (see ``mel_blocks``)."""
    bank = features.mel_filterbank(cfg)
    parts = [jnp.matmul(power[..., b0:b1], jnp.asarray(bank[b0:b1, m0:m1]), precision="highest")
             for b0, b1, m0, m1 in mel_blocks(bank)]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _compress(mel: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    """``features._compress`` with the clamps spelled out (they keep the name scope)."""
    if cfg.log != "db":
        return features._compress(mel, cfg)
    db = (20.0 / cfg.power) * jnp.log10(jnp.maximum(mel, cfg.amin))
    if cfg.top_db is not None:
        db = jnp.maximum(db, jnp.max(db, axis=(-2, -1), keepdims=True) - cfg.top_db)
    if cfg.db_clip is not None:
        db = jnp.minimum(jnp.maximum(db, cfg.db_clip[0]), cfg.db_clip[1])
    return db


def _finish(mel: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    out = _compress(mel, cfg)
    if cfg.norm_mean != 0.0 or cfg.norm_std != 1.0:
        out = (out - cfg.norm_mean) / cfg.norm_std
    return out.astype(jnp.float32)


def log_mel(wave: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    """Same contract and numbers (to float32 rounding) as ``features.log_mel``. Always the DFT as a
    matrix multiply, which TFLite runs everywhere (a config trained with ``dft='fft'`` exports so)."""
    if cfg.dft != "matmul":
        cfg = dataclasses.replace(cfg, dft="matmul")
    if not computes_dft(cfg):
        with jax.named_scope(FRONTEND_SCOPE):
            power = features.power_spectrogram(wave, cfg)
            return _finish(_mel(power, cfg), cfg)
    with jax.named_scope(FRONTEND_SCOPE):
        wave = jnp.asarray(wave, jnp.float32)
        num_frames = cfg.num_frames(wave.shape[-1])
        if cfg.input_scale != 1.0:
            wave = wave * cfg.input_scale
        if cfg.peak_normalize:
            wave = wave / (jnp.max(jnp.abs(wave), axis=-1, keepdims=True) + 1e-10)
        if cfg.preemphasis != 0.0:
            wave = wave[..., 1:] - cfg.preemphasis * wave[..., :-1]
        anchor = jnp.minimum(jnp.abs(wave.reshape(-1)[0]), 0.0)
        frames = features._frames(wave, cfg, num_frames)
        spec = jnp.matmul(frames, _dft_matrix(cfg, anchor), precision="highest")
        real, imag = spec[..., : cfg.n_bins], spec[..., cfg.n_bins:]
        power = real * real + imag * imag
        if cfg.power == 1.0:
            power = jnp.sqrt(power)
        elif cfg.power != 2.0:
            power = power ** (cfg.power / 2.0)
        return _finish(_mel(power, cfg), cfg)
