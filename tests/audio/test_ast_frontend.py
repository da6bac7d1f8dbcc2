"""AST's input (``audio/ast_frontend.py``) against kaldi-native-fbank, Hugging Face's extractor and,
where it is installed, torchaudio's Kaldi fbank.

knf refuses AST's 128 bins (filter 3 holds no FFT bin: ``test_kaldi_fbank_parity.py``), so the
128-bin reference is knf run twice over the same mel axis: Kaldi's filter ``m`` of an ``n``-bin
bank spans mel edges ``lo + m*delta .. lo + (m+2)*delta`` with ``delta = (hi - lo) / (n + 1)``,
so a 3-bin bank from 20 Hz to ``mel^-1(lo + 4*delta)`` is filters 0-2 and a 124-bin bank from that
edge to 8 kHz is filters 4-127; filter 3, empty, is ``ln(float32 eps)`` in torchaudio (AST's own
front end), as in ours. The padding and normalisation of the reference are restated here from
AST's dataloader: zero-pad the raw fbank to 1024 frames (or cut), then ``(x + 4.2677393) / (2 * 4.5689974)``.
"""
import dataclasses

import jax
import kaldi_native_fbank as knf
import numpy as np
import pytest

from jaxaudio.audio import features as F
from jaxaudio.audio.ast_frontend import AST_FRAMES, ast_input, pad_or_cut
from tests.audio.test_kaldi_fbank_parity import mean_relative_error, waveform

SR = 16000
MEAN, STD = -4.2677393, 4.5689974  # AudioSet statistics (AST README, HF ASTFeatureExtractor)
# 3 s (padded), 10 s (998 frames, padded by 26), 10.5 s (1048 frames, cut)
LENGTHS = {"noise": 3 * SR, "tones": 10 * SR, "chirp": 10 * SR + SR // 2}


def _mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)


def knf_fbank(wave, num_bins, low, high):
    """(frames, num_bins) float64: knf with AST's options and mel bins ``low..high`` Hz."""
    frame = knf.FrameExtractionOptions(
        samp_freq=float(SR), frame_shift_ms=10.0, frame_length_ms=25.0, dither=0.0, preemph_coeff=0.97,
        remove_dc_offset=True, window_type="hanning", round_to_power_of_two=True, snip_edges=True)
    opts = knf.FbankOptions(frame_opts=frame, mel_opts=knf.MelBanksOptions(num_bins=num_bins, low_freq=low,
                                                                          high_freq=high),
                            use_energy=False, energy_floor=0.0, use_log_fbank=True, use_power=True)
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(float(SR), np.asarray(wave, np.float32).tolist())
    fbank.input_finished()
    return np.stack([np.asarray(fbank.get_frame(i), np.float64) for i in range(fbank.num_frames_ready)])


def knf_fbank_128(wave):
    delta = (_mel(SR / 2) - _mel(20.0)) / 129
    edge = float(700.0 * (np.exp((_mel(20.0) + 4 * delta) / 1127.0) - 1.0))
    low, high = knf_fbank(wave, 3, 20.0, edge), knf_fbank(wave, 124, edge, SR / 2)
    empty = np.full((len(low), 1), np.log(np.finfo(np.float32).eps))
    return np.concatenate([low, empty, high], axis=1)


def reference_input(fbank):
    """AST's dataloader after the fbank: zero-pad or cut to 1024 frames, then normalise."""
    fbank = fbank[:AST_FRAMES]
    fbank = np.concatenate([fbank, np.zeros((AST_FRAMES - len(fbank), fbank.shape[1]))])
    return (fbank - MEAN) / (2 * STD)


def signal(kind):
    length = LENGTHS[kind]
    if kind != "tones":
        return waveform(kind, length, seed=len(kind))
    t = np.arange(length) / SR
    rng = np.random.default_rng(7)
    x = sum(a * np.sin(2 * np.pi * f * t) for a, f in ((0.3, 440.0), (0.2, 1234.5), (0.05, 5000.0), (0.02, 97.0)))
    return (x + 1e-4 * rng.standard_normal(length)).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(LENGTHS))
def test_matches_kaldi_native_fbank_at_128_bins(kind):
    wave = signal(kind)
    ref = knf_fbank_128(wave)
    raw = np.asarray(F.log_mel(wave, dataclasses.replace(F.AST_16K, norm_mean=0.0, norm_std=1.0)), np.float64)
    assert raw.shape == ref.shape == (1 + (len(wave) - 400) // 160, 128)
    ours = np.asarray(ast_input(wave), np.float64)
    want = reference_input(ref)
    fbank_err, input_err = mean_relative_error(raw, ref), mean_relative_error(ours, want)
    print(f"{kind}: fbank mean rel err {fbank_err:.2e} (max abs {np.abs(raw - ref).max():.2e}), "
          f"AST input mean rel err {input_err:.2e} (max abs {np.abs(ours - want).max():.2e})")
    assert ours.shape == (AST_FRAMES, 128)
    assert fbank_err <= 1e-4 and input_err <= 1e-4


def test_matches_hugging_face_feature_extractor(require_reference):
    """ASTFeatureExtractor (torchaudio's fbank where installed, else its numpy Kaldi port)."""
    require_reference("transformers")
    from transformers import ASTFeatureExtractor

    extractor = ASTFeatureExtractor()
    for kind in ("noise", "tones"):
        wave = signal(kind)
        ref = extractor(wave, sampling_rate=SR, return_tensors="np")["input_values"][0]
        ours = np.asarray(ast_input(wave))
        err = mean_relative_error(ours, ref)
        print(f"{kind}: mean rel err against ASTFeatureExtractor {err:.2e}")
        assert ours.shape == ref.shape == (AST_FRAMES, 128)
        assert err <= 1e-4


def test_matches_torchaudio_kaldi_fbank_when_installed():
    """AST's own call; torchaudio is optional (not installed in CI), so this may skip."""
    torchaudio = pytest.importorskip("torchaudio")
    import torch

    wave = signal("tones")
    ref = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(wave)[None], htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10).numpy()
    assert mean_relative_error(np.asarray(ast_input(wave)), reference_input(ref.astype(np.float64))) <= 1e-4


def test_padding_cutting_batching_and_jit():
    wave = signal("noise")[: 2 * SR]  # 198 frames
    single = np.asarray(ast_input(wave))
    np.testing.assert_allclose(single[198:], -MEAN / (2 * STD), rtol=1e-6)  # padded raw zeros, normalised
    np.testing.assert_array_equal(np.asarray(ast_input(wave, frames=None)), single[:198])
    np.testing.assert_array_equal(np.asarray(pad_or_cut(single, 150)), single[:150])
    batch = np.stack([wave, wave[::-1]])
    jitted = np.asarray(jax.jit(ast_input, static_argnames=("frames", "cfg"))(batch))
    assert jitted.shape == (2, AST_FRAMES, 128)
    np.testing.assert_allclose(jitted[0], single, atol=1e-5)


def test_waveform_mean_removal_is_left_to_the_per_frame_dc_removal():
    """AST's loader subtracts the waveform mean; the fbank's DC removal makes that a no-op."""
    wave = signal("noise")[: 2 * SR]
    shifted = np.asarray(ast_input(wave + np.float32(0.25)), np.float64)
    assert mean_relative_error(shifted, np.asarray(ast_input(wave - wave.mean()), np.float64)) <= 1e-5
