"""Kaldi fbank parity: ``features.log_mel`` against kaldi-native-fbank (knf), Kaldi's C++ code.

The knf options below restate each recipe from its own source, not from our configs:
- AST: torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False, window_type='hanning',
  num_mel_bins=128, dither=0.0, frame_shift=10), Kaldi defaults otherwise.
- FunASR's WavFrontend (Paraformer): kaldi.fbank(waveform * 2**15, num_mel_bins=80,
  frame_length=25, frame_shift=10, dither=0.0, energy_floor=0.0, window_type='hamming',
  snip_edges=True), Kaldi defaults otherwise.
Kaldi defaults: pre-emphasis 0.97 per frame, DC removal, FFT size rounded up to a power of two,
low_freq 20 Hz, high_freq Nyquist, no energy, ln(max(x, float32 eps)). knf's own default dither
is 3e-5, so it is set to 0 explicitly.

Kaldi refuses AST's 128 bins at a 512-point FFT: filter 3 (63-94 Hz) holds no FFT bin centre
(bins are 31.25 Hz apart). torchaudio, which AST uses, keeps the empty filter (a constant
ln(eps) feature), and so does ``AST_16K``; the parity run uses 126 bins (the most knf accepts),
everything else as AST_16K.

knf is a required test dependency (the ``test`` extra): imported directly, never skipped.
"""
import dataclasses

import jax
import kaldi_native_fbank as knf
import numpy as np
import pytest
import scipy.signal

from jaxaudio.audio import features as F

SR = 16000
# One window (400), one window + a partial hop, and longer clips that are not whole numbers of hops.
LENGTHS = (400, 559, SR + 37, 3 * SR + 250)


def knf_fbank(wave, num_bins, window_type, scale=1.0):
    """(frames, num_bins) float64 from knf.OnlineFbank, the waveform multiplied by ``scale`` first."""
    frame = knf.FrameExtractionOptions(
        samp_freq=float(SR), frame_shift_ms=10.0, frame_length_ms=25.0, dither=0.0,
        preemph_coeff=0.97, remove_dc_offset=True, window_type=window_type,
        round_to_power_of_two=True, snip_edges=True)
    mel = knf.MelBanksOptions(num_bins=num_bins, low_freq=20.0, high_freq=0.0)
    opts = knf.FbankOptions(frame_opts=frame, mel_opts=mel, use_energy=False, energy_floor=0.0,
                            use_log_fbank=True, use_power=True)
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(float(SR), (np.asarray(wave, np.float32) * np.float32(scale)).tolist())
    fbank.input_finished()
    frames = [np.asarray(fbank.get_frame(i), np.float64) for i in range(fbank.num_frames_ready)]
    return np.stack(frames) if frames else np.zeros((0, num_bins))


def unnormalised(cfg, **changes):
    return dataclasses.replace(cfg, norm_mean=0.0, norm_std=1.0, **changes)


# name -> (our config, knf num_bins, knf window_type, knf waveform scale)
RECIPES = {
    "ast": (unnormalised(F.AST_16K, n_mels=126), 126, "hanning", 1.0),
    "funasr": (unnormalised(F.FUNASR_16K), 80, "hamming", 32768.0),
}


def waveform(kind, length, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    if kind == "noise":
        x = 0.1 * rng.standard_normal(length)
    elif kind == "chirp":
        x = 0.5 * scipy.signal.chirp(t, f0=50.0, t1=max(t[-1], 1e-3), f1=0.45 * SR, method="logarithmic")
        x += 1e-3 * rng.standard_normal(length)
    else:  # "gap": noise with a run of exact zeros (Kaldi's ln floor) and a DC offset elsewhere
        x = 0.05 * rng.standard_normal(length) + 0.2
        x[length // 4: length // 4 + 2 * 400] = 0.0
    return x.astype(np.float32)


# Largest ln error allowed, i.e. relative error of a mel energy. Both sides compute in float32, and
# knf also builds its bank in float32 (filter weights off by up to 2e-5 from Kaldi's formula in
# float64, which ours uses): 2e-4 on noise. Where the chirp's peak is ~100 dB above a frame's
# quietest bins, float32 rounding in the FFT dominates those bins: knf is 5e-3 from a float64
# reference there, ours 1e-3, and the two differ by up to 1.4e-2.
MAX_LN_ERROR = {"noise": 1e-3, "gap": 1e-3, "chirp": 3e-2}


def mean_relative_error(ours, ref):
    return float(np.mean(np.abs(ours - ref)) / np.mean(np.abs(ref)))


def test_the_presets_state_the_recipes():
    for cfg in (F.AST_16K, F.FUNASR_16K):
        assert (cfg.sample_rate, cfg.win_length, cfg.hop_length, cfg.n_fft) == (SR, 400, 160, 512)
        assert (cfg.center, cfg.mel_scale, cfg.fmin, cfg.fmax_hz) == (False, "kaldi", 20.0, SR / 2)
        assert (cfg.preemphasis, cfg.preemphasis_mode, cfg.remove_dc_offset) == (0.97, "frame", True)
        assert (cfg.log, cfg.log_offset, cfg.power) == ("ln_clamp", float(np.finfo(np.float32).eps), 2.0)
        assert cfg.dft == "auto"
    assert (F.AST_16K.n_mels, F.AST_16K.window, F.AST_16K.input_scale) == (128, "hann", 1.0)
    assert (F.FUNASR_16K.n_mels, F.FUNASR_16K.window, F.FUNASR_16K.input_scale) == (80, "hamming", 32768.0)
    assert (F.FUNASR_16K.norm_mean, F.FUNASR_16K.norm_std) == (0.0, 1.0)
    # Kaldi's hamming: 0.54 - 0.46 cos(2 pi n / (N - 1)), as knf computes it.
    knf_window = knf.FeatureWindowFunction(knf.FrameExtractionOptions(window_type="hamming")).window
    np.testing.assert_allclose(F.window_function(F.FUNASR_16K), knf_window, rtol=0, atol=1e-6)
    knf_window = knf.FeatureWindowFunction(knf.FrameExtractionOptions(window_type="hanning")).window
    np.testing.assert_allclose(F.window_function(F.AST_16K), knf_window, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dft", ["matmul", "fft"])
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_log_mel_matches_kaldi_native_fbank(recipe, dft):
    cfg, num_bins, window_type, scale = RECIPES[recipe]
    cfg = dataclasses.replace(cfg, dft=dft)
    for i, length in enumerate(LENGTHS):
        for kind in ("noise", "chirp", "gap"):
            wave = waveform(kind, length, seed=10 * i + len(kind))
            ref = knf_fbank(wave, num_bins, window_type, scale)
            ours = np.asarray(F.log_mel(wave, cfg), np.float64)
            assert ours.shape == ref.shape == (cfg.num_frames(length), num_bins), (kind, length)
            err = mean_relative_error(ours, ref)
            # ln values: an absolute error e is a relative error of about e in the mel energies.
            max_abs = float(np.max(np.abs(ours - ref)))
            print(f"{recipe}/{dft}/{kind}/{length}: mean rel err {err:.2e}, max abs (ln) err {max_abs:.2e}")
            assert err <= 1e-4, (kind, length)
            assert max_abs <= MAX_LN_ERROR[kind], (kind, length)


def test_frame_counts_match_kaldi():
    cfg, num_bins, window_type, scale = RECIPES["funasr"]
    for length in (400, 401, 559, 560, 561, 1000, SR + 37):
        wave = waveform("noise", length, seed=length)
        assert cfg.num_frames(length) == len(knf_fbank(wave, num_bins, window_type, scale)) == 1 + (length - 400) // 160


def test_kaldi_refuses_ast_128_bins_which_ast_keeps_as_a_constant_feature():
    with pytest.raises(ValueError, match="num_mel_bins too large"):
        knf_fbank(np.zeros(400, np.float32), 128, "hanning")
    bank = F.mel_filterbank(F.AST_16K)
    assert np.flatnonzero(bank.sum(axis=0) == 0).tolist() == [3]
    out = np.asarray(F.log_mel(waveform("noise", SR, seed=1), F.AST_16K))
    floor = (np.log(np.float32(F.AST_16K.log_offset)) - F.AST_16K.norm_mean) / F.AST_16K.norm_std
    np.testing.assert_allclose(out[:, 3], floor, rtol=1e-6)
    # The 126 other filters of the 128-bin bank are all nonempty, as torchaudio's are.
    assert np.all(bank.sum(axis=0)[np.arange(128) != 3] > 0)


@pytest.mark.parametrize("name", ["AST_16K", "FUNASR_16K", "PASST_32K", "DCASE_16K"])
def test_fft_path_matches_the_matrix_path(name):
    cfg = dataclasses.replace(getattr(F, name), dft="matmul")
    wave = waveform("chirp", cfg.sample_rate + 123, seed=5) + waveform("noise", cfg.sample_rate + 123, seed=6)
    fast = dataclasses.replace(cfg, dft="fft")
    spec_m = np.asarray(F.power_spectrogram(wave, cfg), np.float64)
    spec_f = np.asarray(F.power_spectrogram(wave, fast), np.float64)
    assert spec_f.shape == spec_m.shape
    spec_err = float(np.max(np.abs(spec_f - spec_m)) / np.max(np.abs(spec_m)))
    ours_m = np.asarray(F.log_mel(wave, cfg), np.float64)
    ours_f = np.asarray(F.log_mel(wave, fast), np.float64)
    err = mean_relative_error(ours_f, ours_m)
    print(f"{name}: log-mel mean rel diff {err:.2e}, power max diff / max {spec_err:.2e}")
    assert err <= 1e-5
    assert spec_err <= 1e-5


def test_auto_dft_is_the_fft_on_one_cpu_device_only(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    assert F.resolved_dft(F.AST_16K) == ("matmul" if jax.default_backend() == "tpu" else "fft")
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert F.resolved_dft(F.AST_16K) == "fft"
    monkeypatch.setattr(jax, "device_count", lambda: 8)   # a mesh: the FFT would gather the batch
    assert F.resolved_dft(F.AST_16K) == "matmul"
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert F.resolved_dft(F.AST_16K) == "matmul"
    assert F.resolved_dft(dataclasses.replace(F.AST_16K, dft="fft")) == "fft"


def test_dft_and_input_scale_are_checked():
    from jaxaudio.errors import ConfigError

    with pytest.raises(ConfigError, match="dft"):
        dataclasses.replace(F.FUNASR_16K, dft="dct")
    with pytest.raises(ConfigError, match="input_scale"):
        dataclasses.replace(F.FUNASR_16K, input_scale=0.0)
