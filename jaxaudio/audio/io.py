"""Reading, writing and resampling audio files, with errors that name the file.

Everything here runs on the host in numpy: decoding and resampling happen once per clip in the
input pipeline, never on the compute path.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from jaxaudio.errors import AudioFileError

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")  # what libsndfile decodes

# Bound on the gcd-reduced up/down factors of a polyphase resampler. scipy's default filter
# has about 20 * max(up, down) taps, so 1024 keeps it near 20k taps: every common pair of
# rates fits (44.1k->16k is 160/441, 11.025k->16k is 640/441, 8k->44.1k is 441/80), while
# an odd rate such as 44101 Hz (16000/44101, an ~880k-tap filter) is refused rather than
# silently taking seconds per clip.
MAX_RESAMPLE_FACTOR = 1024


def resample_factors(sr_in: int, sr_out: int) -> tuple[int, int]:
    """Returns the gcd-reduced (up, down) pair, or raises ValueError saying why it cannot."""
    for name, rate in (("input", sr_in), ("output", sr_out)):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"{name} sample rate must be a positive integer, got {rate!r}")
    sr_in, sr_out = int(sr_in), int(sr_out)
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    if max(up, down) > MAX_RESAMPLE_FACTOR:
        raise ValueError(
            f"cannot resample {sr_in} Hz to {sr_out} Hz: the reduced polyphase factors "
            f"up={up}, down={down} exceed the bound {MAX_RESAMPLE_FACTOR} "
            f"(the filter would be absurdly long); convert the file to a standard rate first"
        )
    return up, down


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis; float32 out. Raises ValueError on bad rates."""
    up, down = resample_factors(sr_in, sr_out)
    x = np.asarray(x, dtype=np.float32)
    if up == down:
        return x
    return resample_poly(x, up, down, axis=-1).astype(np.float32)


def pad_or_crop(x: np.ndarray, length: int, axis: int = -1) -> np.ndarray:
    """Zero-pads at the end or crops the end so that `x.shape[axis] == length`."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    x = np.asarray(x)
    current = x.shape[axis]
    if current >= length:
        index = [slice(None)] * x.ndim
        index[axis] = slice(0, length)
        return x[tuple(index)]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length - current)
    return np.pad(x, widths)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioFileError(path, "file does not exist")
    if not path.is_file():
        raise AudioFileError(path, "is not a regular file")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise AudioFileError(
            path, f"unsupported format {path.suffix!r}; expected one of {SUPPORTED_EXTENSIONS}"
        )


def audio_sample_rate(path: os.PathLike | str) -> int:
    """The native sample rate of a file, read from its header only."""
    path = Path(path)
    _check_readable(path)
    try:
        return int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioFileError(path, f"cannot decode audio header ({err})") from err


def read_audio(
    path: os.PathLike | str, sample_rate: int | None = None, mono: bool = True
) -> np.ndarray:
    """Reads a wav/flac file as float32 in [-1, 1].

    Returns `(samples,)` when `mono` (channels averaged) or `(channels, samples)` otherwise.
    With `sample_rate` set, the audio is resampled from the file's rate with a polyphase
    filter (see MAX_RESAMPLE_FACTOR for which rate pairs are refused).
    """
    path = Path(path)
    _check_readable(path)
    try:
        data, native_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioFileError(path, f"corrupt or unreadable audio ({err})") from err
    if data.shape[0] == 0:
        raise AudioFileError(path, "audio is empty (0 samples)")
    if not np.all(np.isfinite(data)):
        raise AudioFileError(path, "audio contains non-finite samples (NaN or Inf)")
    audio = data.T  # (channels, samples)
    if mono:
        audio = audio.mean(axis=0)
    if sample_rate is not None and sample_rate != native_rate:
        try:
            audio = resample(audio, native_rate, sample_rate)
        except ValueError as err:
            raise AudioFileError(path, str(err)) from err
    return np.ascontiguousarray(audio, dtype=np.float32)


def write_audio(path: os.PathLike | str, x: np.ndarray, sample_rate: int) -> None:
    """Writes 16-bit PCM wav; `x` is `(samples,)` or `(channels, samples)`, clipped to [-1, 1].

    Parent folders are created, so generators can write straight into a dataset layout.
    """
    path = Path(path)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise AudioFileError(path, f"expected (samples,) or (channels, samples), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise AudioFileError(path, "refusing to write non-finite samples (NaN or Inf)")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioFileError(path, f"sample rate must be a positive integer, got {sample_rate!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.clip(x, -1.0, 1.0)
    if frames.ndim == 2:
        frames = frames.T  # soundfile wants (samples, channels)
    sf.write(str(path), frames, int(sample_rate), subtype="PCM_16", format="WAV")
