"""Background beds for the synthetic soundscapes: coloured noise, room tone, mains hum.

A bed always has a coloured-noise floor (white to brown, with a few random spectral bumps so
no two rooms sound alike); room tone and hum are mixed in at random. The level drifts slowly.
The bed contains no target-class sound, so every labelled sound comes from an event.
`make_field_background` is the outdoor / handheld counterpart for the strong_real subset.
"""
from __future__ import annotations

import numpy as np

from jaxaudio.data.synth import dsp


def bed_gain(rng: np.random.Generator, freqs: np.ndarray) -> np.ndarray:
    """Amplitude response of the noise floor: white to brown, bumps, maybe a room rumble.

    Independent Gaussian noises add in power, so one noise shaped by the root of the summed
    power responses sounds the same as the sum of separately shaped noises, at one FFT's cost.
    """
    power = dsp.band_gain(freqs, 30.0, None, rng.uniform(-6.0, 0.0)) ** 2
    for _ in range(int(rng.integers(0, 4))):  # broad resonances of the room / the recorder
        centre = np.exp(rng.uniform(np.log(100.0), np.log(6000.0)))
        power *= 1.0 + rng.uniform(-0.6, 2.0) * dsp.band_gain(freqs, centre / 1.6, centre * 1.6) ** 2
    power /= np.mean(power)
    if rng.random() < 0.5:  # room tone: low rumble from ventilation
        rumble = dsp.band_gain(freqs, 20.0, rng.uniform(150.0, 800.0)) ** 2
        power += 10 ** (rng.uniform(-6.0, 6.0) / 10) * rumble / np.mean(rumble)
    return np.sqrt(power)


def mains_hum(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """50 or 60 Hz hum with a few decaying harmonics.

    One second holds a whole number of periods, so one second is built and tiled.
    """
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    amps = np.arange(1, 9) ** -rng.uniform(0.5, 2.0) * rng.uniform(0.3, 1.0, 8)
    second = dsp.harmonic_tone(np.full(sample_rate, f0), amps, sample_rate, rng)
    x = np.tile(second, n // sample_rate + 1)[:n]
    return x / dsp.rms(x)


def make_background(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """A unit-RMS background bed of n samples."""
    def gain(freqs):  # smooth in frequency: evaluate on a coarse grid, interpolate
        coarse = np.linspace(0.0, sample_rate / 2, 1025)
        return np.interp(freqs, coarse, bed_gain(rng, coarse))

    x = dsp.filter_fft(rng.standard_normal(n), sample_rate, gain)
    x /= dsp.rms(x)
    if rng.random() < 0.4:
        x = x + 10 ** (rng.uniform(-15.0, -3.0) / 20) * mains_hum(rng, n, sample_rate)
    x = x * (1.0 + rng.uniform(0.0, 0.3) * dsp.smooth_curve(rng, n, rng.uniform(0.1, 0.5), sample_rate))
    return x / dsp.rms(x)


def make_field_background(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """A unit-RMS bed like a handheld field recording's (the built-in strong_real subset).

    Unlike `make_background`'s indoor room tone: a steeper (brown to darker) floor, wind or
    traffic swells below a few hundred hertz, often a babble-like murmur (band noise with a
    syllable-rate level flutter, no pitch, so nothing Speech-like), more often mains hum,
    and a deeper, slower level drift. Still no target-class sound.
    """
    x = dsp.shaped_noise(rng, n, sample_rate, 20.0, None, rng.uniform(-9.0, -4.0))
    x /= dsp.rms(x)
    if rng.random() < 0.6:  # wind / distant traffic: low rumble that swells
        swell = dsp.shaped_noise(rng, n, sample_rate, 20.0, rng.uniform(100.0, 400.0))
        depth = 1.0 + rng.uniform(0.5, 1.0) * dsp.smooth_curve(rng, n, rng.uniform(0.2, 1.0), sample_rate)
        swell = swell * depth ** 2
        x = x + 10 ** (rng.uniform(-6.0, 6.0) / 20) * swell / dsp.rms(swell)
    if rng.random() < 0.5:  # murmur of a crowd far away
        murmur = dsp.shaped_noise(rng, n, sample_rate, 250.0, 2500.0, -3.0)
        murmur = murmur * (1.0 + 0.6 * dsp.smooth_curve(rng, n, rng.uniform(3.0, 6.0), sample_rate))
        x = x + 10 ** (rng.uniform(-18.0, -6.0) / 20) * murmur / dsp.rms(murmur)
    if rng.random() < 0.6:
        x = x + 10 ** (rng.uniform(-20.0, -6.0) / 20) * mains_hum(rng, n, sample_rate)
    x = x * (1.0 + rng.uniform(0.2, 0.6) * dsp.smooth_curve(rng, n, rng.uniform(0.05, 0.3), sample_rate))
    return x / dsp.rms(x)
