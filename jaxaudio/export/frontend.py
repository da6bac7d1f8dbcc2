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
into the DFT and fall back to ``features.log_mel``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudio.audio import features
from jaxaudio.audio.features import FrontEndConfig


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


def log_mel(wave: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    """Same contract and numbers (to float32 rounding) as ``features.log_mel``."""
    if not computes_dft(cfg):
        return features.log_mel(wave, cfg)
    with jax.named_scope("frontend"):
        wave = jnp.asarray(wave, jnp.float32)
        num_frames = cfg.num_frames(wave.shape[-1])
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
        mel = jnp.matmul(power, jnp.asarray(features.mel_filterbank(cfg)), precision="highest")
        out = features._compress(mel, cfg)
        if cfg.norm_mean != 0.0 or cfg.norm_std != 1.0:
            out = (out - cfg.norm_mean) / cfg.norm_std
        return out.astype(jnp.float32)
