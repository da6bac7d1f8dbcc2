"""Log-mel front ends as pure, jit- and vmap-able functions.

Why a DFT matmul and not `jnp.fft`: the front end must export to TFLite and run on any
accelerator, so it uses no complex numbers. Frames are multiplied by one real matrix
`[cos | sin]` (window, and for Kaldi framing also DC removal and pre-emphasis, folded in on
the host in float64); the power spectrum is `re**2 + im**2`.

Framing uses no gather: the signal is cut into hop-sized chunks (a reshape) and each frame
is the concatenation of the `ceil(win/hop)` chunks that follow its start. The DFT matrix has
zero rows for the samples past `win_length`.

Two framings cover the reference systems:
- centred (`center=True`, torch.stft): the signal is padded by `n_fft // 2` on each side and
  the `win_length` window sits in the middle of each `n_fft` frame, so frame t is centred on
  sample `t * hop`; `1 + N // hop` frames.
- Kaldi (`center=False`): window-length frames start at `t * hop` (Kaldi's snip_edges);
  `1 + (N - win_length) // hop` frames. With `win_length < n_fft` this differs from
  torch.stft(center=False), which frames `n_fft` samples.
The window's position inside the zero-padded `n_fft` frame only changes the phase, so the
power spectrum does not depend on it.

All windows are symmetric by default (`window_periodic=False`): PaSST uses
`torch.hann_window(800, periodic=False)`, Kaldi's 'hanning'/'hamming'/'povey' are symmetric,
and the DCASE baseline uses `torch.hamming_window(2048, periodic=False)`.

`dft="fft"` computes the same power spectrum with `jnp.fft.rfft` (the per-frame Kaldi steps and
the window applied to the frames first); `dft="matmul"` as one matrix product with a real
[cos | sin] matrix, which TFLite runs everywhere and a TPU's matrix units run fastest. The default,
`"auto"`, picks when the function is traced: the FFT on a single CPU or GPU device (on 2 CPU cores
it is 2-3.6x faster than the matrix; `benchmarks/results/frontend.json`), the matrix on TPU and on
any multi-device mesh, where the FFT would gather a sharded batch (`resolved_dft`). The exporters
always build the matrix form (`jaxaudio/export/frontend.py`).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudio.errors import ConfigError

_MEL_SCALES = ("htk", "slaney", "kaldi")
_WINDOWS = ("hann", "hamming", "povey")
_LOGS = ("ln", "ln_clamp", "db", "none")
_DFTS = ("auto", "matmul", "fft")


@dataclasses.dataclass(frozen=True)
class FrontEndConfig:
    """Everything that defines a log-mel front end; hashable so jit can treat it as static.

    Fields beyond the obvious ones:
      input_scale: the waveform is multiplied by this first (FunASR's WavFrontend: 32768, the
        int16 range, so a [-1, 1] waveform gives Kaldi's features of 16-bit samples).
      dft: 'auto' (default: 'fft' on one CPU/GPU device, else 'matmul'; ``resolved_dft``), 'matmul' (real
        [cos | sin] matrix, exportable) or 'fft' (jnp.fft.rfft); all give the same power spectrum to
        float32 rounding.
      mel_norm: None, or 'slaney' to scale each triangle to unit area (librosa norm='slaney').
      window_periodic: False = symmetric window (all reference systems), True = periodic.
      preemphasis: coefficient c of y[n] = x[n] - c x[n-1].
      preemphasis_mode: 'signal' filters the whole waveform as PaSST's conv1d([-c, 1]) does,
        dropping the first sample (N-1 samples remain); 'frame' filters each frame as Kaldi
        does, with the frame's first sample standing in for its missing predecessor.
      remove_dc_offset: subtract each frame's mean before pre-emphasis and windowing (Kaldi).
      peak_normalize: divide each waveform by max|x| + 1e-10 first (PaSST in Transformer4SED).
      power: 2 for the power spectrum, 1 for the magnitude.
      log: 'ln' -> ln(x + log_offset); 'ln_clamp' -> ln(max(x, log_offset)) (Kaldi);
        'db' -> (20 / power) log10(max(x, amin)), i.e. 10 log10 for power and 20 log10 for
        magnitude, so the dB value does not depend on `power`; 'none' keeps linear mel values.
      top_db: with 'db', floor each example at its own maximum minus top_db (librosa).
      db_clip: with 'db', clip to (low, high) dB (the DCASE baseline clamps to (-50, 80)).
      norm_mean, norm_std: the result is (logmel - norm_mean) / norm_std.
      fmin_aug_range, fmax_aug_range: train-time jitter of the mel bank's edges, in Hz, drawn once
        per batch when ``log_mel`` is given a key: fmin + U{0..fmin_aug_range-1} and
        fmax + fmax_aug_range//2 - U{0..fmax_aug_range-1} (PaSST's extractor in Transformer4SED:
        10 and 2000). 1 means no jitter; without a key (evaluation, export) the bank is fixed.
    """

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    fmin: float = 0.0
    fmax: float | None = None
    mel_scale: str = "htk"
    mel_norm: str | None = None
    window: str = "hann"
    window_periodic: bool = False
    center: bool = True
    pad_mode: str = "reflect"
    preemphasis: float = 0.0
    preemphasis_mode: str = "signal"
    remove_dc_offset: bool = False
    peak_normalize: bool = False
    power: float = 2.0
    log: str = "ln"
    log_offset: float = 1e-5
    amin: float = 1e-10
    top_db: float | None = None
    db_clip: tuple[float, float] | None = None
    norm_mean: float = 0.0
    norm_std: float = 1.0
    fmin_aug_range: int = 1
    fmax_aug_range: int = 1
    input_scale: float = 1.0
    dft: str = "auto"

    def __post_init__(self):
        _validate(self)

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def fmax_hz(self) -> float:
        """fmax resolved: None means Nyquist; a value <= 0 counts back from Nyquist (Kaldi)."""
        nyquist = self.sample_rate / 2.0
        if self.fmax is None:
            return nyquist
        return self.fmax if self.fmax > 0 else nyquist + self.fmax

    def _signal_length(self, num_samples: int) -> int:
        """Samples left after signal-level pre-emphasis (which drops the first sample)."""
        drops_one = self.preemphasis != 0.0 and self.preemphasis_mode == "signal"
        return num_samples - 1 if drops_one else num_samples

    def num_frames(self, num_samples: int) -> int:
        """Frames `log_mel` returns for a waveform of `num_samples` samples."""
        n = self._signal_length(num_samples)
        if self.center:
            return 1 + n // self.hop_length
        return max(0, 1 + (n - self.win_length) // self.hop_length)


def _validate(cfg: FrontEndConfig) -> None:
    def bad(key, problem):
        raise ConfigError(f"FrontEndConfig.{key}: {problem}")

    for key in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
        if int(getattr(cfg, key)) <= 0:
            bad(key, f"must be a positive integer, got {getattr(cfg, key)!r}")
    if cfg.win_length > cfg.n_fft:
        bad("win_length", f"{cfg.win_length} exceeds n_fft={cfg.n_fft}")
    if cfg.mel_scale not in _MEL_SCALES:
        bad("mel_scale", f"expected one of {_MEL_SCALES}, got {cfg.mel_scale!r}")
    if cfg.mel_norm not in (None, "slaney"):
        bad("mel_norm", f"expected None or 'slaney', got {cfg.mel_norm!r}")
    if cfg.window not in _WINDOWS:
        bad("window", f"expected one of {_WINDOWS}, got {cfg.window!r}")
    if cfg.pad_mode not in ("reflect", "constant"):
        bad("pad_mode", f"expected 'reflect' or 'constant', got {cfg.pad_mode!r}")
    if cfg.preemphasis_mode not in ("signal", "frame"):
        bad("preemphasis_mode", f"expected 'signal' or 'frame', got {cfg.preemphasis_mode!r}")
    if cfg.log not in _LOGS:
        bad("log", f"expected one of {_LOGS}, got {cfg.log!r}")
    if cfg.dft not in _DFTS:
        bad("dft", f"expected one of {_DFTS}, got {cfg.dft!r}")
    if not cfg.input_scale > 0:
        bad("input_scale", f"must be positive, got {cfg.input_scale!r}")
    if cfg.power <= 0:
        bad("power", f"must be positive, got {cfg.power}")
    if cfg.norm_std == 0:
        bad("norm_std", "must be non-zero")
    if not 0.0 <= cfg.fmin < cfg.fmax_hz <= cfg.sample_rate / 2.0 + 1e-9:
        bad("fmax", f"need 0 <= fmin ({cfg.fmin}) < fmax ({cfg.fmax_hz}) <= Nyquist "
                    f"({cfg.sample_rate / 2})")
    for key in ("fmin_aug_range", "fmax_aug_range"):
        if int(getattr(cfg, key)) < 1:
            bad(key, f"must be >= 1 (1: no jitter), got {getattr(cfg, key)!r}")
    if cfg.fmax_hz + cfg.fmax_aug_range // 2 > cfg.sample_rate / 2.0 + 1e-9:
        bad("fmax_aug_range", f"fmax ({cfg.fmax_hz}) + fmax_aug_range // 2 ({cfg.fmax_aug_range // 2}) exceeds "
                              f"Nyquist ({cfg.sample_rate / 2}); lower fmax (PaSST: Nyquist - range // 2)")
    if cfg.fmin + cfg.fmin_aug_range - 1 >= cfg.fmax_hz - cfg.fmax_aug_range // 2:
        bad("fmin_aug_range", "the jittered fmin can reach the jittered fmax")


# PaSST as used by MAT-SED/PMAM (Transformer4SED PasstFeatureExtractor, eval mode): peak-normalised
# wave, conv1d pre-emphasis (drops one sample: 10 s -> 1000 frames), torch.stft centred with a
# symmetric Hann(800) in a 1024-point frame, Kaldi mel banks 0-15 kHz, ln(x+1e-5), (x+4.5)/5.
PASST_32K = FrontEndConfig(
    sample_rate=32000, n_fft=1024, win_length=800, hop_length=320, n_mels=128,
    fmin=0.0, fmax=15000.0, mel_scale="kaldi", window="hann", center=True, pad_mode="reflect",
    preemphasis=0.97, preemphasis_mode="signal", peak_normalize=True, power=2.0,
    log="ln", log_offset=1e-5, norm_mean=-4.5, norm_std=5.0,
)

# AST (torchaudio.compliance.kaldi.fbank with htk_compat, use_energy=False, 'hanning', dither 0,
# 25 ms / 10 ms, 128 bins, Kaldi defaults: low_freq 20, high_freq Nyquist, pre-emphasis 0.97 per
# frame, DC removal, snip_edges, 512-point FFT, ln(max(x, float32 eps))), normalised with the
# AudioSet statistics (x + 4.2677393) / (2 * 4.5689974). Padding to 1024 frames is left to the
# data pipeline.
AST_16K = FrontEndConfig(
    sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=128,
    fmin=20.0, fmax=None, mel_scale="kaldi", window="hann", center=False,
    preemphasis=0.97, preemphasis_mode="frame", remove_dc_offset=True, power=2.0,
    log="ln_clamp", log_offset=float(np.finfo(np.float32).eps),
    norm_mean=-4.2677393, norm_std=2 * 4.5689974,
)

# FunASR's WavFrontend (Paraformer): torchaudio.compliance.kaldi.fbank of the waveform times 2**15,
# 80 bins, 'hamming', 25 ms / 10 ms, dither 0 (test time), energy_floor 0, snip_edges, and the Kaldi
# defaults as for AST (low_freq 20, high_freq Nyquist, pre-emphasis 0.97 per frame, DC removal,
# 512-point FFT, ln(max(x, float32 eps))). Unnormalised: the recipe's low frame rate stacking and
# its CMVN (am.mvn) come after, in the model's input pipeline.
FUNASR_16K = FrontEndConfig(
    sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80,
    fmin=20.0, fmax=None, mel_scale="kaldi", window="hamming", center=False,
    preemphasis=0.97, preemphasis_mode="frame", remove_dc_offset=True, power=2.0,
    log="ln_clamp", log_offset=float(np.finfo(np.float32).eps), input_scale=32768.0,
)

# DCASE task-4 CRNN baseline: torchaudio MelSpectrogram(n_fft=win=2048, hop 256, 0-8 kHz, 128 HTK
# mels, symmetric Hamming, power=1, centred, reflect) then AmplitudeToDB(amin=1e-5).clamp(-50, 80).
# With power=1 the 'db' log is 20 log10(max(x, amin)), so amin applies to the magnitude.
DCASE_16K = FrontEndConfig(
    sample_rate=16000, n_fft=2048, win_length=2048, hop_length=256, n_mels=128,
    fmin=0.0, fmax=8000.0, mel_scale="htk", window="hamming", center=True, pad_mode="reflect",
    power=1.0, log="db", amin=1e-5, db_clip=(-50.0, 80.0),
)


# ----------------------------------------------------------------------------- host constants

def _hz_to_mel(freq, scale: str, xp=np):
    """Hz -> mel; ``xp`` is numpy (float64 host constants) or jax.numpy (a traced, jittered bank)."""
    if xp is np:
        freq = np.asarray(freq, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * xp.log10(1.0 + freq / 700.0)
    if scale == "kaldi":
        return 1127.0 * xp.log(1.0 + freq / 700.0)
    # Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    linear = freq / (200.0 / 3.0)
    log_part = 15.0 + xp.log(xp.maximum(freq, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return xp.where(freq >= 1000.0, log_part, linear)


def _mel_to_hz(mel, scale: str, xp=np):
    if xp is np:
        mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * (xp.exp(mel / 1127.0) - 1.0)
    linear = mel * (200.0 / 3.0)
    log_part = 1000.0 * xp.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return xp.where(mel >= 15.0, log_part, linear)


def _triangles(cfg: FrontEndConfig, fmin, fmax, xp=np):
    """The (n_bins, n_mels) bank between ``fmin`` and ``fmax`` Hz (host floats or traced values)."""
    bin_hz = xp.arange(cfg.n_bins) * (cfg.sample_rate / cfg.n_fft)
    lo_mel, hi_mel = _hz_to_mel(fmin, cfg.mel_scale, xp), _hz_to_mel(fmax, cfg.mel_scale, xp)
    edges_mel = lo_mel + (hi_mel - lo_mel) * xp.linspace(0.0, 1.0, cfg.n_mels + 2)
    left, centre, right = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]
    if cfg.mel_scale == "kaldi":
        # Kaldi draws the triangles on the mel axis itself.
        x = _hz_to_mel(bin_hz, "kaldi", xp)[:, None]
    else:
        # HTK/Slaney (librosa, torchaudio) draw them on the Hz axis between mel-spaced corners.
        x = bin_hz[:, None]
        left, centre, right = (_mel_to_hz(e, cfg.mel_scale, xp) for e in (left, centre, right))
    rising = (x - left) / (centre - left)
    falling = (right - x) / (right - centre)
    bank = xp.maximum(0.0, xp.minimum(rising, falling))
    if cfg.mel_scale == "kaldi":
        bank = bank * (xp.arange(cfg.n_bins) < cfg.n_bins - 1)[:, None]  # Kaldi never uses the Nyquist bin.
    if cfg.mel_norm == "slaney":
        bank = bank * (2.0 / (right - left))[None, :]
    return bank


@functools.lru_cache(maxsize=32)
def _mel_filterbank64(cfg: FrontEndConfig) -> np.ndarray:
    return _triangles(cfg, cfg.fmin, cfg.fmax_hz)


def mel_filterbank(cfg: FrontEndConfig) -> np.ndarray:
    """Triangular mel filters, shape (n_fft//2+1, n_mels), float32 (a host-side constant)."""
    return _mel_filterbank64(cfg).astype(np.float32)


def window_function(cfg: FrontEndConfig) -> np.ndarray:
    """The analysis window, float64, length win_length (symmetric unless window_periodic)."""
    n = cfg.win_length
    denom = n if cfg.window_periodic else n - 1
    phase = 2.0 * np.pi * np.arange(n) / max(denom, 1)
    if cfg.window == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    hann = 0.5 - 0.5 * np.cos(phase)
    return hann ** 0.85 if cfg.window == "povey" else hann


def _frame_chunks(cfg: FrontEndConfig) -> int:
    return -(-cfg.win_length // cfg.hop_length)


@functools.lru_cache(maxsize=32)
def _dft_matrices64(cfg: FrontEndConfig) -> tuple[np.ndarray, np.ndarray]:
    n = np.arange(cfg.win_length)
    k = np.arange(cfg.n_bins)
    angle = 2.0 * np.pi * np.outer(n, k) / cfg.n_fft  # phase measured from the frame start
    # Per-frame linear steps, applied right to left: DC removal, pre-emphasis, window.
    frame_op = np.eye(cfg.win_length)
    if cfg.remove_dc_offset:
        frame_op = frame_op - 1.0 / cfg.win_length
    if cfg.preemphasis != 0.0 and cfg.preemphasis_mode == "frame":
        shift = np.eye(cfg.win_length, k=-1)
        shift[0, 0] = 1.0  # the first sample is its own predecessor
        frame_op = (np.eye(cfg.win_length) - cfg.preemphasis * shift) @ frame_op
    frame_op = window_function(cfg)[:, None] * frame_op
    # frame (row) @ frame_op.T @ [cos | sin]
    cos_m = frame_op.T @ np.cos(angle)
    sin_m = frame_op.T @ -np.sin(angle)
    return cos_m, sin_m


def dft_matrices(cfg: FrontEndConfig) -> tuple[np.ndarray, np.ndarray]:
    """Real DFT matrices (win_length, n_fft//2+1) float32, window (and Kaldi steps) folded in.

    `frame @ cos_m` and `frame @ sin_m` are the real and imaginary parts of the windowed
    frame's rfft (up to a phase that depends on where the window sits in the n_fft frame).
    """
    cos_m, sin_m = _dft_matrices64(cfg)
    return cos_m.astype(np.float32), sin_m.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _stacked_dft(cfg: FrontEndConfig) -> np.ndarray:
    """[cos | sin] with zero rows padded to a whole number of hops, float32."""
    cos_m, sin_m = _dft_matrices64(cfg)
    rows = _frame_chunks(cfg) * cfg.hop_length
    stacked = np.zeros((rows, 2 * cfg.n_bins), dtype=np.float64)
    stacked[: cfg.win_length] = np.concatenate([cos_m, sin_m], axis=1)
    return stacked.astype(np.float32)


# ----------------------------------------------------------------------------- traced compute

def resolved_dft(cfg: FrontEndConfig) -> str:
    """``cfg.dft`` with 'auto' decided when traced: 'fft' on one CPU or GPU device, else 'matmul'.

    The matrix on TPU (its matrix units), and wherever there is more than one device: XLA's SPMD
    partitioner does not split the FFT over a sharded batch but gathers the batch first (PMAM
    tiny's step on a data 2 x fsdp 4 mesh all-gathers 16.4 MB more with the FFT;
    ``tests/scaling/test_pmam_study.py``), while the matrix product stays sharded."""
    if cfg.dft != "auto":
        return cfg.dft
    return "matmul" if jax.default_backend() == "tpu" or jax.device_count() > 1 else "fft"


def _fft_power(frames: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    """``dft='fft'``: the steps folded into ``_dft_matrices64``, applied to the frames, then rfft."""
    x = frames[..., : cfg.win_length]
    if cfg.remove_dc_offset:
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    if cfg.preemphasis != 0.0 and cfg.preemphasis_mode == "frame":
        x = x - cfg.preemphasis * jnp.concatenate([x[..., :1], x[..., :-1]], axis=-1)
    x = x * jnp.asarray(window_function(cfg).astype(np.float32))
    spec = jnp.fft.rfft(x, n=cfg.n_fft, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def _frames(signal: jax.Array, cfg: FrontEndConfig, num_frames: int) -> jax.Array:
    """(..., n) -> (..., num_frames, k * hop) by reshape + k shifted slices, no gather."""
    hop, k = cfg.hop_length, _frame_chunks(cfg)
    if cfg.center:
        pad = cfg.n_fft // 2
        widths = [(0, 0)] * (signal.ndim - 1) + [(pad, pad)]
        signal = jnp.pad(signal, widths, mode=cfg.pad_mode)
        signal = signal[..., (cfg.n_fft - cfg.win_length) // 2:]
    needed = (num_frames - 1 + k) * hop
    have = signal.shape[-1]
    if have < needed:
        widths = [(0, 0)] * (signal.ndim - 1) + [(0, needed - have)]
        signal = jnp.pad(signal, widths)
    chunks = signal[..., :needed].reshape(*signal.shape[:-1], num_frames - 1 + k, hop)
    return jnp.concatenate([chunks[..., i:i + num_frames, :] for i in range(k)], axis=-1)


def power_spectrogram(wave: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    """Waveform (..., samples) -> |STFT|**power, shape (..., frames, n_fft//2+1), float32.

    Includes the waveform-level steps (input scaling, peak normalisation, signal pre-emphasis).
    """
    wave = jnp.asarray(wave, jnp.float32)
    num_frames = cfg.num_frames(wave.shape[-1])
    if num_frames < 1:
        raise ConfigError(
            f"FrontEndConfig.win_length: a waveform of {wave.shape[-1]} samples is shorter "
            f"than one window ({cfg.win_length}) with center=False")
    if cfg.input_scale != 1.0:
        wave = wave * cfg.input_scale
    if cfg.peak_normalize:
        peak = jnp.max(jnp.abs(wave), axis=-1, keepdims=True)
        wave = wave / (peak + 1e-10)
    if cfg.preemphasis != 0.0 and cfg.preemphasis_mode == "signal":
        wave = wave[..., 1:] - cfg.preemphasis * wave[..., :-1]
    frames = _frames(wave, cfg, num_frames)
    if resolved_dft(cfg) == "fft":
        power = _fft_power(frames, cfg)
    else:
        spec = jnp.matmul(frames, jnp.asarray(_stacked_dft(cfg)), precision="highest")
        real, imag = spec[..., : cfg.n_bins], spec[..., cfg.n_bins:]
        power = real * real + imag * imag
    if cfg.power == 2.0:
        return power
    if cfg.power == 1.0:
        return jnp.sqrt(power)
    return power ** (cfg.power / 2.0)


def _compress(mel: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    if cfg.log == "ln":
        return jnp.log(mel + cfg.log_offset)
    if cfg.log == "ln_clamp":
        return jnp.log(jnp.maximum(mel, cfg.log_offset))
    if cfg.log == "none":
        return mel
    db = (20.0 / cfg.power) * jnp.log10(jnp.maximum(mel, cfg.amin))
    if cfg.top_db is not None:
        peak = jnp.max(db, axis=(-2, -1), keepdims=True)
        db = jnp.maximum(db, peak - cfg.top_db)
    if cfg.db_clip is not None:
        db = jnp.clip(db, cfg.db_clip[0], cfg.db_clip[1])
    return db


# The named scope of every front-end op: exporters find the ops by it to keep them in float.
FRONTEND_SCOPE = "frontend"


def jittered_mel_filterbank(key: jax.Array, cfg: FrontEndConfig) -> jax.Array:
    """A training-time bank with its edges drawn as ``cfg.fmin_aug_range`` / ``fmax_aug_range`` say."""
    k_min, k_max = jax.random.split(key)
    fmin = cfg.fmin + jax.random.randint(k_min, (), 0, cfg.fmin_aug_range).astype(jnp.float32)
    fmax = (cfg.fmax_hz + cfg.fmax_aug_range // 2
            - jax.random.randint(k_max, (), 0, cfg.fmax_aug_range).astype(jnp.float32))
    return _triangles(cfg, fmin, fmax, jnp).astype(jnp.float32)


def log_mel(wave: jax.Array, cfg: FrontEndConfig, key: jax.Array | None = None) -> jax.Array:
    """Waveform (..., samples) -> normalised log-mel (..., frames, n_mels), float32.

    ``key``: training only; with it and a jitter range > 1 the mel bank's edges are drawn
    (``jittered_mel_filterbank``), one bank for the batch. Runs under the named scope
    ``FRONTEND_SCOPE`` so the exporter can keep these ops in float.
    """
    with jax.named_scope(FRONTEND_SCOPE):
        power = power_spectrogram(wave, cfg)
        jitter = key is not None and (cfg.fmin_aug_range > 1 or cfg.fmax_aug_range > 1)
        bank = jittered_mel_filterbank(key, cfg) if jitter else jnp.asarray(mel_filterbank(cfg))
        mel = jnp.matmul(power, bank, precision="highest")
        out = _compress(mel, cfg)
        if cfg.norm_mean != 0.0 or cfg.norm_std != 1.0:
            out = (out - cfg.norm_mean) / cfg.norm_std
        return out.astype(jnp.float32)


def frame_rate(cfg: FrontEndConfig) -> float:
    """Frames per second of the output."""
    return cfg.sample_rate / cfg.hop_length


__all__ = [
    "FrontEndConfig", "PASST_32K", "AST_16K", "FUNASR_16K", "DCASE_16K", "mel_filterbank", "window_function",
    "dft_matrices", "resolved_dft", "power_spectrogram", "log_mel", "jittered_mel_filterbank", "frame_rate",
]

