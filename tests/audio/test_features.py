"""Front-end parity against an independent float64 numpy/scipy reference written here.

The reference frames with numpy strides and np.fft.rfft (torch.stft-style centring, or Kaldi
per-frame processing), builds its own windows with scipy.signal.get_window and its own
filterbanks (librosa for HTK/Slaney, Kaldi's C++ loop re-written below for Kaldi banks).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jaxaudio.audio import features as F
from jaxaudio.errors import ConfigError

librosa = pytest.importorskip("librosa")

PRESETS = {"passt": F.PASST_32K, "ast": F.AST_16K, "dcase": F.DCASE_16K}


# ----------------------------------------------------------------------------- reference

def ref_kaldi_bank(n_mels, n_fft, sr, fmin, fmax):
    """Kaldi MelBanks (mel-banks.cc) as a plain loop, float64, shape (n_fft//2+1, n_mels)."""
    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    bin_width = sr / n_fft
    lo, hi = mel(fmin), mel(fmax)
    delta = (hi - lo) / (n_mels + 1)
    bank = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        left, centre, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        for i in range(n_fft // 2):  # Kaldi leaves out the Nyquist bin
            f_mel = mel(bin_width * i)
            if left < f_mel < right:
                if f_mel <= centre:
                    bank[i, m] = (f_mel - left) / (centre - left)
                else:
                    bank[i, m] = (right - f_mel) / (right - centre)
    return bank


def ref_window(cfg):
    name = {"hann": "hann", "hamming": "hamming", "povey": "hann"}[cfg.window]
    w = scipy.signal.get_window(name, cfg.win_length, fftbins=cfg.window_periodic)
    return w ** 0.85 if cfg.window == "povey" else w


def ref_bank(cfg):
    fmax = cfg.sample_rate / 2 if cfg.fmax is None else cfg.fmax
    if cfg.mel_scale == "kaldi":
        return ref_kaldi_bank(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.fmin, fmax)
    return librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=fmax,
        htk=cfg.mel_scale == "htk", norm=cfg.mel_norm, dtype=np.float64).T


def ref_log_mel(wave, cfg):
    """float64 reference of the whole chain for one waveform (samples,) -> (frames, mels)."""
    x = np.asarray(wave, np.float64)
    if cfg.peak_normalize:
        x = x / (np.max(np.abs(x)) + 1e-10)
    if cfg.preemphasis and cfg.preemphasis_mode == "signal":
        x = scipy.signal.lfilter([1.0, -cfg.preemphasis], [1.0], x)[1:]
    w = ref_window(cfg)
    if cfg.center:
        # torch.stft: pad n_fft//2 each side, n_fft frames, window centred inside the frame.
        xp = np.pad(x, cfg.n_fft // 2, mode=cfg.pad_mode)
        frames = np.lib.stride_tricks.sliding_window_view(xp, cfg.n_fft)[:: cfg.hop_length]
        full = np.zeros(cfg.n_fft)
        left = (cfg.n_fft - cfg.win_length) // 2
        full[left:left + cfg.win_length] = w
        spec = np.fft.rfft(frames * full, axis=-1)
    else:
        # Kaldi: window-length frames, DC removal, per-frame pre-emphasis, window, zero-pad.
        frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win_length)[:: cfg.hop_length]
        frames = frames.copy()
        if cfg.remove_dc_offset:
            frames -= frames.mean(axis=1, keepdims=True)
        if cfg.preemphasis and cfg.preemphasis_mode == "frame":
            prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
            frames = frames - cfg.preemphasis * prev
        spec = np.fft.rfft(frames * w, n=cfg.n_fft, axis=-1)
    mag = np.abs(spec) ** cfg.power
    mel = mag @ ref_bank(cfg)
    if cfg.log == "ln":
        out = np.log(mel + cfg.log_offset)
    elif cfg.log == "ln_clamp":
        out = np.log(np.maximum(mel, cfg.log_offset))
    else:
        out = 20.0 / cfg.power * np.log10(np.maximum(mel, cfg.amin))
        if cfg.db_clip is not None:
            out = np.clip(out, *cfg.db_clip)
    return (out - cfg.norm_mean) / cfg.norm_std


def test_signals(sr, seconds=3.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    noise = 0.1 * rng.standard_normal(t.size)
    chirp = 0.5 * scipy.signal.chirp(t, f0=50.0, t1=seconds, f1=0.45 * sr, method="logarithmic")
    return {"noise": noise.astype(np.float32), "chirp": chirp.astype(np.float32)}


test_signals.__test__ = False  # a helper, not a test


def mean_relative_error(ours, ref):
    return float(np.mean(np.abs(ours - ref)) / np.mean(np.abs(ref)))


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("signal", ["noise", "chirp"])
def test_log_mel_matches_float64_reference(preset, signal):
    cfg = PRESETS[preset]
    wave = test_signals(cfg.sample_rate)[signal]
    ours = np.asarray(jax.jit(F.log_mel, static_argnums=1)(wave, cfg), np.float64)
    ref = ref_log_mel(wave, cfg)
    assert ours.shape == ref.shape == (cfg.num_frames(wave.size), cfg.n_mels)
    err = mean_relative_error(ours, ref)
    print(f"{preset}/{signal}: mean rel err {err:.2e}, max abs err {np.max(np.abs(ours - ref)):.2e}")
    assert err < 1e-4


@pytest.mark.parametrize("cfg", [
    dataclasses.replace(F.PASST_32K, window="povey", pad_mode="constant", peak_normalize=False),
    dataclasses.replace(F.AST_16K, window="hamming", remove_dc_offset=False),
    dataclasses.replace(F.DCASE_16K, power=2.0, mel_scale="slaney", mel_norm="slaney",
                        window_periodic=True, db_clip=None, amin=1e-10),
], ids=["povey-constant", "kaldi-hamming-dc", "slaney-power-periodic"])
def test_other_options_match_reference(cfg):
    wave = test_signals(cfg.sample_rate, seconds=1.0, seed=3)["noise"]
    ours = np.asarray(F.log_mel(wave, cfg), np.float64)
    assert mean_relative_error(ours, ref_log_mel(wave, cfg)) < 1e-4


def test_power_spectrogram_matches_scipy_stft():
    """Kaldi-style framing without the Kaldi steps is exactly scipy's un-padded STFT."""
    cfg = F.FrontEndConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
                           n_mels=40, center=False)
    wave = test_signals(16000, seconds=1.0)["noise"]
    w = ref_window(cfg)
    _, _, zxx = scipy.signal.stft(wave.astype(np.float64), window=w, nperseg=400,
                                  noverlap=400 - 160, nfft=512, boundary=None, padded=False,
                                  detrend=False, return_onesided=True)
    ref = (np.abs(zxx * w.sum()) ** 2).T  # undo scipy's 1/sum(w) scaling
    ours = np.asarray(F.power_spectrogram(wave, cfg), np.float64)
    assert ours.shape == ref.shape
    assert mean_relative_error(ours, ref) < 1e-5


def test_frame_counts_of_the_reference_systems():
    """10 s clips: PaSST gives 1000 frames (pre-emphasis drops a sample), AST's Kaldi fbank
    1 + (160000 - 400) // 160 = 998, the DCASE baseline 1 + 160000 // 256 = 626."""
    assert F.PASST_32K.num_frames(320000) == 1000
    assert F.AST_16K.num_frames(160000) == 998
    assert F.DCASE_16K.num_frames(160000) == 626


# ----------------------------------------------------------------------------- filterbanks

@pytest.mark.parametrize("htk", [True, False])
@pytest.mark.parametrize("norm", [None, "slaney"])
@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (16000, 2048, 128, 0.0, 8000.0), (22050, 1024, 64, 50.0, 9000.0), (32000, 512, 40, 0.0, None)])
def test_htk_and_slaney_banks_match_librosa(htk, norm, sr, n_fft, n_mels, fmin, fmax):
    cfg = F.FrontEndConfig(sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop_length=n_fft // 4,
                           n_mels=n_mels, fmin=fmin, fmax=fmax,
                           mel_scale="htk" if htk else "slaney", mel_norm=norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk,
                              norm=norm, dtype=np.float64).T
    ours = F.mel_filterbank(cfg)
    assert ours.shape == (n_fft // 2 + 1, n_mels) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6 * ref.max())


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (32000, 1024, 128, 0.0, 15000.0), (16000, 512, 128, 20.0, None), (16000, 512, 23, 100.0, 7000.0)])
def test_kaldi_bank_matches_kaldi_formula(sr, n_fft, n_mels, fmin, fmax):
    cfg = F.FrontEndConfig(sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop_length=n_fft // 4,
                           n_mels=n_mels, fmin=fmin, fmax=fmax, mel_scale="kaldi")
    ref = ref_kaldi_bank(n_mels, n_fft, sr, fmin, sr / 2 if fmax is None else fmax)
    np.testing.assert_allclose(F.mel_filterbank(cfg), ref, rtol=1e-5, atol=1e-7)
    assert not np.any(F.mel_filterbank(cfg)[-1])  # Nyquist bin unused


def test_dft_matrices_give_rfft_of_windowed_frame():
    cfg = dataclasses.replace(F.AST_16K, remove_dc_offset=False, preemphasis=0.0)
    frame = np.random.default_rng(1).standard_normal(cfg.win_length)
    cos_m, sin_m = F.dft_matrices(cfg)
    ref = np.fft.rfft(frame * ref_window(cfg), n=cfg.n_fft)
    np.testing.assert_allclose(frame @ cos_m, ref.real, atol=2e-4)
    np.testing.assert_allclose(frame @ sin_m, ref.imag, atol=2e-4)


# ----------------------------------------------------------------------------- transforms

def test_jit_vmap_and_batch_agree():
    """Eager, batched, nested-batch, jit and vmap agree to float32 round-off: their spread is
    no larger than the float32 error of the eager result against the float64 reference."""
    cfg = F.PASST_32K
    waves = np.stack([test_signals(cfg.sample_rate, 1.0, seed=s)["noise"] for s in range(4)])
    eager = np.stack([np.asarray(F.log_mel(w, cfg)) for w in waves])
    round_off = max(np.max(np.abs(e - ref_log_mel(w, cfg))) for e, w in zip(eager, waves))
    batched = np.asarray(F.log_mel(waves, cfg))
    jitted = np.asarray(jax.jit(F.log_mel, static_argnums=1)(waves, cfg))
    vmapped = np.asarray(jax.jit(jax.vmap(lambda w: F.log_mel(w, cfg)))(waves))
    nested = np.asarray(F.log_mel(waves.reshape(2, 2, -1), cfg)).reshape(batched.shape)
    print(f"float32 round-off (max |eager - float64 ref|) = {round_off:.3e}")
    for name, other in [("batched", batched), ("jit", jitted), ("vmap", vmapped), ("nested", nested)]:
        diff = np.max(np.abs(other - eager))
        print(f"{name}: max |diff| vs per-example eager = {diff:.3e}")
        assert other.shape == eager.shape and diff <= round_off
    np.testing.assert_array_equal(vmapped, jitted)  # same compiled batch computation


def test_frontend_ops_carry_the_named_scope():
    cfg = F.DCASE_16K
    text = jax.jit(F.log_mel, static_argnums=1).lower(jnp.zeros((1, 16000)), cfg).as_text(
        debug_info=True)
    assert "frontend" in text


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="mel_scale"):
        dataclasses.replace(F.PASST_32K, mel_scale="bark")
    with pytest.raises(ConfigError, match="win_length"):
        dataclasses.replace(F.PASST_32K, win_length=2048)
    with pytest.raises(ConfigError, match="fmax"):
        dataclasses.replace(F.PASST_32K, fmax=20000.0)
    with pytest.raises(ConfigError, match="win_length"):
        F.log_mel(np.zeros(100, np.float32), F.AST_16K)


# ----------------------------------------------------------------------------- train-time mel jitter

def test_jittered_bank_is_the_kaldi_bank_at_the_drawn_edges():
    """PaSST's train-time jitter (Transformer4SED): fmin + U{0..9}, fmax + 1000 - U{0..1999} Hz."""
    cfg = dataclasses.replace(F.PASST_32K, fmin_aug_range=10, fmax_aug_range=2000)
    edges = set()
    for seed in range(4):
        key = jax.random.key(seed)
        k_min, k_max = jax.random.split(key)
        fmin = int(jax.random.randint(k_min, (), 0, 10))
        fmax = 15000 + 1000 - int(jax.random.randint(k_max, (), 0, 2000))
        assert 0 <= fmin <= 9 and 14001 <= fmax <= 16000
        edges.add((fmin, fmax))
        ours = np.asarray(jax.jit(lambda k: F.jittered_mel_filterbank(k, cfg))(key))
        ref = ref_kaldi_bank(cfg.n_mels, cfg.n_fft, cfg.sample_rate, float(fmin), float(fmax))
        np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-5)
    assert len(edges) > 1


def test_log_mel_jitters_only_when_given_a_key():
    cfg = dataclasses.replace(F.PASST_32K, fmin_aug_range=10, fmax_aug_range=2000)
    wave = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    fixed = np.asarray(F.log_mel(wave, cfg))
    np.testing.assert_array_equal(fixed, np.asarray(F.log_mel(wave, F.PASST_32K)))
    jittered = np.asarray(F.log_mel(wave, cfg, jax.random.key(1)))
    assert jittered.shape == fixed.shape and not np.allclose(jittered, fixed)
    # no range, no jitter, key or not
    np.testing.assert_array_equal(np.asarray(F.log_mel(wave, F.PASST_32K, jax.random.key(1))), fixed)


def test_jitter_ranges_are_checked():
    with pytest.raises(ConfigError, match="fmax_aug_range"):
        dataclasses.replace(F.PASST_32K, fmax=16000.0, fmax_aug_range=2000)
    with pytest.raises(ConfigError, match="fmin_aug_range"):
        dataclasses.replace(F.PASST_32K, fmin_aug_range=0)
