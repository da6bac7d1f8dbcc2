"""AST's input: the Kaldi fbank ``features.AST_16K``, padded or cut to 1024 frames, then normalised.

The order is the reference's (AST's dataloader, Hugging Face ``ASTFeatureExtractor``,
Transformer4SED ``ASTFeatsExtraction``): the *raw* fbank is zero-padded at the end (or cut) to
``frames``, and only then normalised with the AudioSet statistics, ``(x + 4.2677393) /
(2 * 4.5689974)``. So padded frames hold ``4.2677393 / 9.1379948 = 0.467``, not 0, and 10 s at
16 kHz (998 frames) gains 26 such frames. AST's dataloader also subtracts the waveform's mean
first; the fbank's per-frame DC removal takes any constant offset out of every frame, so that
step changes nothing beyond float rounding and is left out.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxaudio.audio.features import AST_16K, FrontEndConfig, log_mel

AST_FRAMES = 1024


def pad_or_cut(features: jax.Array, frames: int = AST_FRAMES, *, value: float = 0.0) -> jax.Array:
    """``(..., time, bins)`` -> ``(..., frames, bins)``: the first ``frames``, or ``value`` appended."""
    time = features.shape[-2]
    if time >= frames:
        return features[..., :frames, :]
    pad = [(0, 0)] * features.ndim
    pad[-2] = (0, frames - time)
    return jnp.pad(features, pad, constant_values=value)


def audioset_normalize(fbank: jax.Array, cfg: FrontEndConfig = AST_16K) -> jax.Array:
    """Raw log fbank -> ``(fbank - cfg.norm_mean) / cfg.norm_std`` (AST_16K: the AudioSet statistics)."""
    return (fbank - cfg.norm_mean) / cfg.norm_std


def ast_input(wave: jax.Array, *, frames: int | None = AST_FRAMES, cfg: FrontEndConfig = AST_16K) -> jax.Array:
    """Waveform ``(..., samples)`` at 16 kHz -> AST input ``(..., frames, n_mels)`` (module docstring).

    frames: None keeps the fbank's own length (normalised, unpadded).
    """
    raw = log_mel(wave, dataclasses.replace(cfg, norm_mean=0.0, norm_std=1.0))
    if frames is not None:
        raw = pad_or_cut(raw, frames)
    return audioset_normalize(raw, cfg)
