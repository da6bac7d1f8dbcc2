"""Event timelines: log-mel spectrogram, per-class scores and detected events on one time axis."""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxaudio.audio.features import FrontEndConfig, mel_filterbank
from jaxaudio.io import paths

# The spectrogram has at most this many columns, the score curves at most this many steps,
# however long the file (curves are max-pooled over frames, so short peaks stay visible).
MAX_SPECTROGRAM_COLUMNS = 4000
MAX_CURVE_STEPS = 4000


def _pool_max(timestamps: np.ndarray, scores: np.ndarray, steps: int):
    """Max over groups of consecutive frames so that at most `steps` remain."""
    n = len(scores)
    factor = -(-n // steps)
    if factor <= 1:
        return timestamps, scores
    groups = -(-n // factor)
    padded = np.concatenate([scores, np.full((groups * factor - n, scores.shape[1]), -np.inf)])
    pooled = padded.reshape(groups, factor, -1).max(axis=1)
    return np.r_[timestamps[: n : factor], timestamps[-1]], pooled


def log_mel_image(audio: np.ndarray, sample_rate: int, n_mels: int = 64) -> np.ndarray:
    """`(n_mels, columns)` log-mel power in dB, for display: ~64 ms Hann frames, hop >= 16 ms."""
    n_fft = 1 << max(6, int(np.ceil(np.log2(0.064 * sample_rate))))
    hop = max(n_fft // 4, int(np.ceil(len(audio) / MAX_SPECTROGRAM_COLUMNS)))
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=-1)) ** 2
    cfg = FrontEndConfig(
        sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop,
        n_mels=n_mels, fmin=0.0,
    )
    mel = power @ mel_filterbank(cfg)
    return (10.0 * np.log10(np.maximum(mel, 1e-10))).T


def plot_timeline(
    path: os.PathLike | str,
    audio: np.ndarray,
    sample_rate: int,
    duration: float,
    timestamps: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    thresholds: np.ndarray,
    events: Sequence[tuple[float, float, str]],
    title: str,
) -> str:
    """Three panels sharing the time axis: log-mel spectrogram, score curves (the scores that
    were thresholded, with the thresholds dashed), and the detected events as bars per class.
    Uses the Agg canvas directly (headless, pyplot untouched). Returns the path written."""
    n_classes = len(class_names)
    width = float(np.clip(8.0 + duration / 15.0, 10.0, 24.0))
    fig = Figure(figsize=(width, 7.0 + 0.15 * n_classes), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [2.0, 2.0, 0.5 + 0.2 * n_classes]}
    )
    cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
    colors = [cmap(k % cmap.N) for k in range(n_classes)]

    image = log_mel_image(np.asarray(audio)[: int(round(duration * sample_rate))], sample_rate)
    top = image.max()
    axes[0].imshow(
        image, origin="lower", aspect="auto", cmap="magma", extent=(0.0, duration, 0, image.shape[0]),
        vmin=top - 80.0, vmax=top, interpolation="nearest",
    )
    hz = np.array([125, 250, 500, 1000, 2000, 4000, 8000, 16000])
    hz = hz[hz < sample_rate / 2]
    mel_max = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)  # HTK mel, as the bank above
    axes[0].set_yticks(
        image.shape[0] * 2595.0 * np.log10(1.0 + hz / 700.0) / mel_max,
        [f"{h / 1000:g}k" if h >= 1000 else str(h) for h in hz], fontsize=8,
    )
    axes[0].set_ylabel("frequency (Hz)")
    axes[0].set_title(title)

    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_classes,))
    curve_t, curves = _pool_max(np.asarray(timestamps), np.asarray(scores), MAX_CURVE_STEPS)
    for k, name in enumerate(class_names):
        axes[1].stairs(curves[:, k], curve_t, color=colors[k], linewidth=1.0, label=name)
    if np.all(thresholds == thresholds[0]):
        axes[1].axhline(thresholds[0], color="black", linestyle="--", linewidth=0.8,
                        label=f"threshold {thresholds[0]:g}")
    else:
        for k in range(n_classes):
            axes[1].axhline(thresholds[k], color=colors[k], linestyle="--", linewidth=0.6)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("score")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))

    index = {name: k for k, name in enumerate(class_names)}
    for onset, offset, label in events:
        k = index[label]
        axes[2].broken_barh([(onset, offset - onset)], (k - 0.4, 0.8), color=colors[k])
    axes[2].set_yticks(range(n_classes), list(class_names), fontsize=8)
    axes[2].set_ylim(n_classes - 0.5, -0.5)
    axes[2].set_xlim(0.0, duration)
    axes[2].set_xlabel("time (s)")
    axes[2].set_title(f"{len(events)} detected events", fontsize=9)
    axes[2].grid(axis="x", alpha=0.3)
    fig.tight_layout()

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    paths.write_bytes_atomic(path, buffer.getvalue())
    return os.fspath(path)
