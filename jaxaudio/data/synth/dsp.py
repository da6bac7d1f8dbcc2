"""Small signal-building blocks shared by the procedural sources and backgrounds.

Everything is plain numpy/scipy on one 1-D float64 signal; every random choice comes from
the `numpy.random.Generator` passed in, so a clip is fully determined by its generator.
"""
from __future__ import annotations

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sps


def shaped_noise(rng: np.random.Generator, n: int, sample_rate: int, lo_hz: float = 0.0,
                 hi_hz: float | None = None, slope_db_per_octave: float = 0.0) -> np.ndarray:
    """Gaussian noise band-limited to [lo_hz, hi_hz] with soft edges and a spectral tilt."""
    return band_filter(rng.standard_normal(n), sample_rate, lo_hz, hi_hz, slope_db_per_octave)


def band_gain(freqs: np.ndarray, lo_hz: float = 0.0, hi_hz: float | None = None,
              slope_db_per_octave: float = 0.0, edge_octaves: float = 0.25) -> np.ndarray:
    """Amplitude response: band-pass with raised-cosine edges (in octaves), tilt re 1 kHz."""
    octaves = np.log2(np.maximum(freqs, 1.0) / 1000.0)
    gain = 10.0 ** (slope_db_per_octave * octaves / 20.0)
    if lo_hz > 0:
        gain *= _soft_step((octaves - np.log2(lo_hz / 1000.0)) / edge_octaves)
    if hi_hz is not None:
        gain *= _soft_step((np.log2(hi_hz / 1000.0) - octaves) / edge_octaves)
    return gain


def filter_fft(x: np.ndarray, sample_rate: int, gain_fn) -> np.ndarray:
    """Zero-phase filtering in the FFT domain: x's spectrum times gain_fn(freqs_hz), DC removed.

    One rfft/irfft pair, padded to a fast length: cheap even for a whole 10 s clip.
    """
    n = len(x)
    n_fft = sp_fft.next_fast_len(n, real=True)  # lengths with large prime factors are slow
    spectrum = np.fft.rfft(x, n_fft)
    gain = gain_fn(np.fft.rfftfreq(n_fft, 1.0 / sample_rate))
    gain[0] = 0.0
    return np.fft.irfft(spectrum * gain, n_fft)[:n]


def band_filter(x: np.ndarray, sample_rate: int, lo_hz: float = 0.0, hi_hz: float | None = None,
                slope_db_per_octave: float = 0.0) -> np.ndarray:
    """Band-pass x to [lo_hz, hi_hz] with soft edges and a spectral tilt."""
    if hi_hz is not None and hi_hz >= sample_rate / 2:
        hi_hz = None
    return filter_fft(x, sample_rate, lambda f: band_gain(f, lo_hz, hi_hz, slope_db_per_octave))


def _soft_step(x: np.ndarray) -> np.ndarray:
    """0 for x <= -1, 1 for x >= 1, raised cosine in between."""
    return 0.5 + 0.5 * np.sin(0.5 * np.pi * np.clip(x, -1.0, 1.0))


def harmonic_tone(f0_hz: np.ndarray, harmonic_amps: np.ndarray, sample_rate: int,
                  rng: np.random.Generator, spectral_env=None) -> np.ndarray:
    """Sum of harmonics of a time-varying fundamental (`f0_hz` per sample).

    Harmonics above 0.45 * sample_rate are dropped (no aliasing). `spectral_env(freq_hz)`,
    if given, weights each harmonic by a formant-like envelope that follows the pitch.
    """
    phase = 2.0 * np.pi * np.cumsum(f0_hz) / sample_rate
    top = float(np.max(f0_hz))
    z = np.exp(1j * phase)
    z_k = np.ones_like(z)
    acc = np.zeros_like(z)
    for k, amp in enumerate(harmonic_amps, start=1):
        if k * top >= 0.45 * sample_rate:
            break
        z_k = z_k * z  # e^{i k phase} by recurrence: much cheaper than one sin() per harmonic
        coef = amp * np.exp(1j * rng.uniform(0, 2 * np.pi))
        acc += (coef * spectral_env(k * f0_hz)) * z_k if spectral_env is not None else coef * z_k
    return acc.imag


def smooth_curve(rng: np.random.Generator, n: int, rate_hz: float, sample_rate: int) -> np.ndarray:
    """A random curve in [-1, 1] that changes about `rate_hz` times a second.

    Knots are cosine-interpolated on a coarse grid (every 32 samples), then linearly
    up-sampled: smooth enough for envelopes and pitch drift, and cheap on long clips.
    """
    n_points = max(2, int(np.ceil(n / sample_rate * rate_hz)) + 2)
    knots = rng.uniform(-1.0, 1.0, n_points)
    n_coarse = n // 32 + 2
    pos = np.linspace(0, n_points - 1.0001, n_coarse)
    i = pos.astype(int)
    frac = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    coarse = knots[i] * (1 - frac) + knots[i + 1] * frac
    return np.interp(np.arange(n), np.linspace(0, n - 1, n_coarse), coarse)


def resonator_sos(freq_hz: float, bandwidth_hz: float, sample_rate: int) -> np.ndarray:
    """One two-pole resonance (a formant or a ringing mode) as a second-order section."""
    r = np.exp(-np.pi * bandwidth_hz / sample_rate)
    theta = 2.0 * np.pi * freq_hz / sample_rate
    return np.array([[1.0 - r, 0.0, 0.0, 1.0, -2.0 * r * np.cos(theta), r * r]])


def formant_filter(x: np.ndarray, formants: list[tuple[float, float]], sample_rate: int) -> np.ndarray:
    """Parallel bank of resonators: sum of x filtered at each (freq, bandwidth)."""
    out = np.zeros_like(x)
    for freq, bw in formants:
        if freq < 0.45 * sample_rate:
            out += sps.sosfilt(resonator_sos(freq, bw, sample_rate), x)
    return out


def fade(x: np.ndarray, sample_rate: int, fade_in_s: float, fade_out_s: float) -> np.ndarray:
    """Raised-cosine fade in/out, so events do not start or stop with a click."""
    x = x.copy()
    n_in = min(len(x), max(1, int(fade_in_s * sample_rate)))
    n_out = min(len(x), max(1, int(fade_out_s * sample_rate)))
    x[:n_in] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(n_in) / n_in)
    x[len(x) - n_out:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(n_out) / n_out)
    return x


def gate(n: int, on_s: float, off_s: float, sample_rate: int, edge_s: float = 0.005,
         start_on: bool = True) -> np.ndarray:
    """Periodic on/off envelope (beeps, strokes) with smoothed edges."""
    period = max(2, int((on_s + off_s) * sample_rate))
    on = max(1, int(on_s * sample_rate))
    t = np.arange(n) % period
    g = (t < on) if start_on else (t >= period - on)
    k = max(1, int(edge_s * sample_rate))
    window = np.hanning(2 * k + 1)
    return np.convolve(g.astype(float), window / window.sum(), mode="same")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def trim(x: np.ndarray, sample_rate: int, threshold_db: float = -40.0, frame_s: float = 0.01) -> np.ndarray:
    """Cut leading/trailing parts whose short-time RMS is below threshold_db re the loudest frame.

    This keeps labels tight: the labelled onset and offset are where the sound is.
    """
    hop = max(1, int(frame_s * sample_rate))
    n_frames = len(x) // hop
    if n_frames < 2:
        return x
    frames = np.sqrt(np.mean(np.square(x[: n_frames * hop].reshape(n_frames, hop)), axis=1))
    loud = np.flatnonzero(frames >= frames.max() * 10 ** (threshold_db / 20))
    return x[loud[0] * hop: min(len(x), (loud[-1] + 1) * hop)]


def reverb_tail(rng: np.random.Generator, sample_rate: int, rt60_s: float) -> np.ndarray:
    """A room's response after the direct sound: unit energy, decaying 60 dB in `rt60_s`.

    A few discrete early reflections (3 to 40 ms) and an exponentially decaying noise tail
    whose highs are damped (air and wall absorption). Convolve a dry sound with
    ``delta + 10**(-drr_db / 20) * tail`` for a direct-to-reverberant ratio of drr_db.
    """
    n = max(2, int(rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    pre_delay = rng.uniform(0.003, 0.012)
    late = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60_s) * (t >= pre_delay)
    late = band_filter(late, sample_rate, 0.0, rng.uniform(2500.0, 6000.0), rng.uniform(-3.0, 0.0))
    early = np.zeros(n)
    for _ in range(int(rng.integers(3, 9))):
        delay = rng.uniform(0.003, 0.04)
        at = min(n - 1, int(delay * sample_rate))
        early[at] += rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0) * 10.0 ** (-3.0 * delay / rt60_s)

    def unit(x):
        return x / np.sqrt(np.sum(x ** 2) + 1e-20)

    return unit(unit(late) + rng.uniform(0.3, 1.0) * unit(early))


def reverberate(x: np.ndarray, tail: np.ndarray, drr_db: float, length: int | None = None) -> np.ndarray:
    """x through ``delta + 10**(-drr_db/20) * tail``: the direct sound, then the room's tail
    ringing on for len(tail) - 1 samples; cut to `length` samples when given."""
    wet = np.zeros(len(x) + len(tail) - 1)
    wet[:len(x)] = x
    wet += 10.0 ** (-drr_db / 20.0) * sps.fftconvolve(x, tail)
    return wet if length is None else wet[:length]


def channel_gain(freqs: np.ndarray, lo_hz: float, hi_hz: float, slope_db_per_octave: float,
                 peak_hz: float, peak_db: float) -> np.ndarray:
    """Amplitude response of a consumer microphone and recording chain: band limit with soft
    edges (half an octave), a tilt re 1 kHz and one presence peak (an octave wide)."""
    gain = band_gain(freqs, lo_hz, hi_hz, slope_db_per_octave, edge_octaves=0.5)
    bump = band_gain(freqs, peak_hz / np.sqrt(2.0), peak_hz * np.sqrt(2.0), 0.0, edge_octaves=0.5)
    return gain * (1.0 + (10.0 ** (peak_db / 20.0) - 1.0) * bump)
