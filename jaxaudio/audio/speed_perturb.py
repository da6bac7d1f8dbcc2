"""Speed perturbation (Ko et al. 2015) as the Kaldi / ESPnet / FunASR recipes run it: sox ``speed f``.

Why on the host: it changes the waveform's length (n -> round(n / f)), so it belongs before
feature extraction and padding, in the data pipeline, not in a jitted step. sox ``speed f`` plays
the audio f times faster, tempo and pitch together: the samples are reinterpreted as recorded at
rate * f and resampled back to rate. That is a rational resampling by up/down = 1 / f, done here
with ``scipy.signal.resample_poly`` (polyphase, Kaiser-windowed FIR): 0.9 -> up 10, down 9;
1.1 -> up 10, down 11. A sine of f0 comes out at f0 * f.

The factor is read as ``Fraction(factor).limit_denominator(100)``, so factors with more than two
decimals are rounded to the nearest ratio with denominator <= 100.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
from scipy.signal import resample_poly

from jaxaudio.errors import ConfigError

SPEEDS = (0.9, 1.0, 1.1)  # the AISHELL-1 / LibriSpeech recipes' factors
FACTOR_RANGE = (0.5, 2.0)


def _ratio(factor: float) -> Fraction:
    try:
        ok = math.isfinite(float(factor)) and FACTOR_RANGE[0] <= float(factor) <= FACTOR_RANGE[1]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"speed_perturb: factor must be a number in [{FACTOR_RANGE[0]}, {FACTOR_RANGE[1]}], "
                          f"got {factor!r}")
    return Fraction(float(factor)).limit_denominator(100)


def perturbed_length(samples: int, factor: float) -> int:
    """The length ``speed_perturb`` gives ``samples`` samples: round(samples / factor), halves up."""
    ratio = _ratio(factor)
    up, down = ratio.denominator, ratio.numerator
    return (2 * int(samples) * up + down) // (2 * down)


def speed_perturb(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """`wave` (..., n) played `factor` times faster at the same `sample_rate`: (..., round(n / factor)).

    factor 1 returns the input unchanged (a copy). A floating input keeps its dtype; an integer
    one comes back as float32 (in the same units, not rescaled). sample_rate only documents the
    rate, which the operation does not change; it must be positive."""
    ratio = _ratio(factor)
    if int(sample_rate) <= 0:
        raise ConfigError(f"speed_perturb: sample_rate must be positive, got {sample_rate!r}")
    wave = np.asarray(wave)
    dtype = wave.dtype if np.issubdtype(wave.dtype, np.floating) else np.dtype(np.float32)
    if ratio == 1:
        return wave.astype(dtype, copy=True)
    up, down = ratio.denominator, ratio.numerator  # new rate / old rate = 1 / factor
    out_len = perturbed_length(wave.shape[-1], factor)
    y = resample_poly(wave.astype(np.float64), up, down, axis=-1)
    return y[..., :out_len].astype(dtype)


def choose_speed(seed: int | np.random.Generator, epoch: int = 0, index: int = 0,
                 factors: Sequence[float] = SPEEDS) -> float:
    """One of `factors`, uniformly: from a Generator as given, or a pure function of
    (seed, epoch, index) so that a restarted or sharded pipeline draws the same speed for an example."""
    if not factors:
        raise ConfigError("choose_speed: factors must not be empty")
    for factor in factors:
        _ratio(factor)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([int(seed), int(epoch), int(index)])
    return float(factors[int(rng.integers(len(factors)))])


__all__: Sequence[str] = ["SPEEDS", "perturbed_length", "speed_perturb", "choose_speed"]
