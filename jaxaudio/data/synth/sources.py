"""Procedural look-alikes of the ten DESED sound classes.

Each class has its own spectro-temporal shape (tonal beeps, motor hum, gliding harmonics,
ringing impulses, crackles, formant-filtered pulse trains ...). Every parameter — pitch, rate,
duration, filter bands, modulation — is drawn from the generator, so two events of one class
differ. The three motor classes and the two noise-like classes share part of their parameter
ranges on purpose: a clip-level average spectrum should not separate them perfectly, while their
temporal structure (harmonicity, modulation, impulsiveness) still does.

Durations follow DESED: speech/dishes/dog/cat/alarm are short (about 0.2–4 s), blender, frying,
running water, vacuum cleaner and shaver long (about 2–10 s).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import signal as sps

from jaxaudio.data.synth import dsp

CLASSES: tuple[str, ...] = (
    "Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog",
    "Electric_shaver_toothbrush", "Frying", "Running_water", "Speech", "Vacuum_cleaner",
)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _duration(rng: np.random.Generator, lo: float, hi: float, sample_rate: int) -> int:
    return int(_log_uniform(rng, lo, hi) * sample_rate)


def _decaying_amps(rng: np.random.Generator, n: int, lo_exp: float, hi_exp: float) -> np.ndarray:
    """Harmonic amplitudes ~ k^-p with a little per-harmonic jitter."""
    k = np.arange(1, n + 1)
    return k ** -rng.uniform(lo_exp, hi_exp) * rng.uniform(0.6, 1.0, n)


def alarm_bell_ringing(rng, sr):
    """Repeated tonal beeps, a hammered bell ring, or a two-tone siren; few strong harmonics."""
    n = _duration(rng, 0.6, 4.0, sr)
    f0 = rng.uniform(500.0, 2600.0)
    amps = _decaying_amps(rng, int(rng.integers(1, 5)), 0.5, 1.5)
    style = rng.integers(3)
    if style == 0:  # beeps
        f0_track = np.full(n, f0)
        env = dsp.gate(n, rng.uniform(0.05, 0.35), rng.uniform(0.04, 0.3), sr)
    elif style == 1:  # bell: continuous tone, hammer modulation
        f0_track = np.full(n, f0)
        t = np.arange(n) / sr
        env = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(12.0, 30.0) * t)
    else:  # two-tone
        ratio = rng.uniform(1.15, 1.5)
        step = dsp.gate(n, rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5), sr, edge_s=0.01)
        f0_track = f0 * (1.0 + (ratio - 1.0) * step)
        env = np.ones(n)
    x = env * dsp.harmonic_tone(f0_track, amps, sr, rng)
    return dsp.fade(x, sr, 0.005, 0.01)


def _motor(rng, sr, n, f0_range, harm_exp, n_harm, noise_band, noise_ratio, wobble):
    """Shared motor model: a hum with harmonics + band noise; the f0 wanders with load."""
    f0 = rng.uniform(*f0_range)
    f0_track = f0 * (1.0 + wobble * dsp.smooth_curve(rng, n, rng.uniform(0.5, 3.0), sr))
    hum = dsp.harmonic_tone(f0_track, _decaying_amps(rng, n_harm, *harm_exp), sr, rng)
    lo = rng.uniform(*noise_band[0])
    hi = rng.uniform(max(lo * 1.5, noise_band[1][0]), noise_band[1][1])
    noise = dsp.shaped_noise(rng, n, sr, lo, hi, slope_db_per_octave=rng.uniform(-4, 2))
    noise *= dsp.rms(hum) / dsp.rms(noise) * noise_ratio
    return hum + noise


def blender(rng, sr):
    """Motor hum + broadband grinding noise; speed steps and chopping as the load changes."""
    n = _duration(rng, 2.0, 10.0, sr)
    x = _motor(rng, sr, n, (120.0, 400.0), (0.6, 1.2), 30, ((200.0, 1200.0), (3000.0, 7500.0)),
               rng.uniform(0.7, 2.0), wobble=rng.uniform(0.03, 0.12))
    chop = 1.0 - rng.uniform(0.0, 0.6) * (0.5 + 0.5 * dsp.smooth_curve(rng, n, rng.uniform(2.0, 8.0), sr))
    return dsp.fade(x * chop, sr, rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3))


def vacuum_cleaner(rng, sr):
    """Strong broadband airflow noise, a weak low hum and a fan whine; slow run-up."""
    n = _duration(rng, 2.0, 10.0, sr)
    x = _motor(rng, sr, n, (90.0, 260.0), (0.8, 1.5), 12, ((100.0, 700.0), (2500.0, 7500.0)),
               rng.uniform(1.5, 4.0), wobble=rng.uniform(0.005, 0.03))
    t = np.arange(n) / sr
    whine_hz = rng.uniform(900.0, 4000.0)
    whine = np.sin(2 * np.pi * whine_hz * t * (1 + 0.01 * dsp.smooth_curve(rng, n, 1.0, sr)))
    x += whine * dsp.rms(x) * rng.uniform(0.1, 0.5)
    level = 1.0 + rng.uniform(0.0, 0.3) * dsp.smooth_curve(rng, n, rng.uniform(0.2, 1.0), sr)
    return dsp.fade(x * level, sr, rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.5))


def electric_shaver_toothbrush(rng, sr):
    """Buzzy flat-spectrum harmonics (a vibrating motor) + high band noise; brushing strokes."""
    n = _duration(rng, 1.5, 10.0, sr)
    x = _motor(rng, sr, n, (70.0, 320.0), (0.2, 0.7), 60, ((1500.0, 3000.0), (4500.0, 7800.0)),
               rng.uniform(0.2, 1.0), wobble=rng.uniform(0.002, 0.02))
    if rng.random() < 0.5:  # toothbrush strokes
        depth = rng.uniform(0.3, 0.8)
        stroke = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.5, 4.0) * np.arange(n) / sr)
        x *= 1.0 - depth * stroke
    return dsp.fade(x, sr, rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2))


def cat(rng, sr):
    """A gliding harmonic "meow": pitch rises then falls, formant-weighted harmonics, vibrato."""
    n = _duration(rng, 0.4, 2.5, sr)
    start, peak, end = rng.uniform(300, 600), rng.uniform(550, 1100), rng.uniform(280, 600)
    peak_at = rng.uniform(0.2, 0.6)
    u = np.linspace(0.0, 1.0, n)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(u / peak_at, 0, 1))
    fall = 0.5 - 0.5 * np.cos(np.pi * np.clip((u - peak_at) / (1 - peak_at), 0, 1))
    f0 = start + (peak - start) * rise - (peak - end) * fall
    f0 *= 1.0 + rng.uniform(0.0, 0.02) * np.sin(2 * np.pi * rng.uniform(4, 8) * u * n / sr)
    formant_hz, formant_bw = rng.uniform(900, 3000), rng.uniform(600, 1500)

    def env(freq):
        return 0.3 + np.exp(-0.5 * ((freq - formant_hz) / formant_bw) ** 2)

    x = dsp.harmonic_tone(f0, _decaying_amps(rng, 12, 0.3, 1.0), sr, rng, spectral_env=env)
    x *= np.sin(np.pi * u) ** rng.uniform(0.3, 1.0)
    return dsp.fade(x, sr, 0.02, 0.03)


def dishes(rng, sr):
    """One to six clinks: a short click exciting a few high, lightly damped ringing modes."""
    n_clinks = int(rng.integers(1, 7))
    span = rng.uniform(0.05, 0.35) * n_clinks
    tails = rng.uniform(0.06, 0.3)
    n = int((span + tails) * sr)
    x = np.zeros(n)
    onsets = np.sort(rng.uniform(0.0, span, n_clinks))
    onsets[0] = 0.0
    for onset in onsets:
        tau = rng.uniform(0.015, tails / 2.5)
        m = min(n - int(onset * sr), int(5 * tau * sr))
        t = np.arange(m) / sr
        clink = np.zeros(m)
        for _ in range(int(rng.integers(2, 5))):
            f = rng.uniform(1500.0, min(7500.0, 0.45 * sr))
            clink += rng.uniform(0.3, 1.0) * np.exp(-t / (tau * rng.uniform(0.5, 1.0))) * np.sin(
                2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        click = min(m, int(0.002 * sr))
        clink[:click] += rng.standard_normal(click) * rng.uniform(0.5, 2.0)
        i = int(onset * sr)
        x[i:i + m] += rng.uniform(0.4, 1.0) * clink
    return x


def dog(rng, sr):
    """One to four barks: sharp attack, falling pitch, harmonics plus noisy formant energy."""
    n_barks = int(rng.integers(1, 5))
    f0_base = rng.uniform(150.0, 600.0)
    formants = [(rng.uniform(400.0, 1100.0), 200.0), (rng.uniform(1200.0, 2600.0), 300.0)]
    pieces = []
    for b in range(n_barks):
        m = int(rng.uniform(0.08, 0.25) * sr)
        u = np.linspace(0.0, 1.0, m)
        f0 = f0_base * rng.uniform(0.9, 1.1) * (1.0 + rng.uniform(0.1, 0.4) * (1 - u))
        voiced = dsp.harmonic_tone(f0, _decaying_amps(rng, 15, 0.4, 1.0), sr, rng)
        noise = dsp.formant_filter(rng.standard_normal(m), formants, sr)
        noise *= dsp.rms(voiced) / dsp.rms(noise) * rng.uniform(0.3, 1.2)
        env = np.minimum(1.0, u * m / (0.005 * sr)) * np.exp(-u * rng.uniform(2.0, 5.0))
        pieces.append(dsp.fade((voiced + noise) * env, sr, 0.003, 0.01))
        if b < n_barks - 1:
            pieces.append(np.zeros(int(rng.uniform(0.08, 0.4) * sr)))
    return np.concatenate(pieces)


def frying(rng, sr):
    """Sparse crackles of high-passed noise over a steady sizzle hiss."""
    n = _duration(rng, 2.0, 10.0, sr)
    lo = rng.uniform(700.0, 3000.0)
    hiss = dsp.shaped_noise(rng, n, sr, lo, rng.uniform(5000.0, 8000.0), rng.uniform(-3, 3))
    rate = _log_uniform(rng, 10.0, 200.0)
    n_pops = rng.poisson(rate * n / sr) + 1
    impulses = np.zeros(n)
    impulses[rng.integers(0, n, n_pops)] = rng.lognormal(0.0, 0.8, n_pops) * rng.choice([-1, 1], n_pops)
    kernel_len = int(rng.uniform(0.001, 0.005) * sr) + 1
    kernel = rng.standard_normal(kernel_len) * np.exp(-np.arange(kernel_len) / (kernel_len / 3))
    pops = np.convolve(impulses, kernel, mode="same")
    pops = dsp.band_filter(pops, sr, lo * 0.7)
    hiss *= dsp.rms(pops) / dsp.rms(hiss) * rng.uniform(0.1, 0.8)
    level = 1.0 + 0.3 * dsp.smooth_curve(rng, n, rng.uniform(0.3, 2.0), sr)
    return dsp.fade((pops + hiss) * level, sr, rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.5))


def running_water(rng, sr):
    """Band-limited rushing noise with slow swells, plus many small bubble chirps."""
    n = _duration(rng, 2.0, 10.0, sr)
    lo = rng.uniform(200.0, 900.0)
    x = dsp.shaped_noise(rng, n, sr, lo, rng.uniform(2500.0, 7000.0), rng.uniform(-5, 1))
    swell = 1.0 + rng.uniform(0.2, 0.6) * dsp.smooth_curve(rng, n, rng.uniform(0.3, 2.0), sr)
    x *= swell
    bubbles = np.zeros(n)
    n_bubbles = rng.poisson(_log_uniform(rng, 10.0, 80.0) * n / sr)
    for onset in rng.integers(0, n, n_bubbles):
        m = min(n - onset, int(rng.uniform(0.005, 0.02) * sr))
        u = np.linspace(0.0, 1.0, m)
        f = rng.uniform(500.0, 3000.0) * (1.0 + rng.uniform(0.5, 2.0) * u)  # rising chirp
        bubbles[onset:onset + m] += np.exp(-u * 4.0) * np.sin(2 * np.pi * np.cumsum(f) / sr)
    x = x / dsp.rms(x) + bubbles / dsp.rms(bubbles) * rng.uniform(0.2, 0.7)
    return dsp.fade(x, sr, rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.5))


def speech(rng, sr):
    """Syllables of a glottal pulse train through three formants, with a falling pitch contour.

    Some syllables start with a noisy fricative; words are separated by short pauses.
    """
    n_syllables = int(rng.integers(2, 16))
    rate = rng.uniform(3.0, 6.5)  # syllables per second
    f0_base = rng.uniform(90.0, 250.0)
    tilt = rng.uniform(0.7, 0.97)
    pieces = []
    for s in range(n_syllables):
        m = int(rng.uniform(0.6, 1.4) / rate * sr)
        u = np.linspace(0.0, 1.0, m)
        progress = s / max(1, n_syllables - 1)
        f0 = f0_base * (1.15 - 0.3 * progress) * (1 + rng.uniform(-0.08, 0.08) + 0.05 * (0.5 - u))
        phase = np.cumsum(f0) / sr
        pulses = np.diff(np.floor(phase), prepend=0.0)
        glottal = sps.lfilter([1.0], [1.0, -tilt], pulses)  # one-pole spectral tilt
        glottal -= glottal.mean()
        formants = [(rng.uniform(300, 900), rng.uniform(60, 120)),
                    (rng.uniform(900, 2500), rng.uniform(80, 180)),
                    (rng.uniform(2300, 3400), rng.uniform(120, 250))]
        voiced = dsp.formant_filter(glottal, formants, sr)
        voiced *= np.sin(np.pi * u) ** 0.6
        if rng.random() < 0.4:  # fricative onset
            k = int(rng.uniform(0.03, 0.1) * sr)
            fric = dsp.shaped_noise(rng, k, sr, rng.uniform(2500.0, 4500.0), 7500.0)
            fric = dsp.fade(fric / dsp.rms(fric) * dsp.rms(voiced) * rng.uniform(0.2, 0.6), sr, 0.01, 0.01)
            voiced = np.concatenate([fric, voiced])
        pieces.append(voiced)
        if s < n_syllables - 1 and rng.random() < 0.25:  # word gap
            pieces.append(np.zeros(int(rng.uniform(0.05, 0.2) * sr)))
    return np.concatenate(pieces)


GENERATORS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "Alarm_bell_ringing": alarm_bell_ringing,
    "Blender": blender,
    "Cat": cat,
    "Dishes": dishes,
    "Dog": dog,
    "Electric_shaver_toothbrush": electric_shaver_toothbrush,
    "Frying": frying,
    "Running_water": running_water,
    "Speech": speech,
    "Vacuum_cleaner": vacuum_cleaner,
}


def make_source(label: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One event of class `label`: trimmed to where it is audible and scaled to unit RMS."""
    x = dsp.trim(GENERATORS[label](rng, sample_rate), sample_rate)
    return x / dsp.rms(x)
