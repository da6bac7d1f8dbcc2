"""audio/io.py against soundfile and scipy as references."""
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from jaxaudio.audio.io import (
    MAX_RESAMPLE_FACTOR,
    pad_or_crop,
    read_audio,
    resample,
    resample_factors,
    write_audio,
)
from jaxaudio.errors import AudioFileError


def test_write_then_read_round_trip_within_pcm16_step(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.9, 0.9, 1000).astype(np.float32)
    path = tmp_path / "a.wav"
    write_audio(path, x, 8000)
    info = sf.info(str(path))
    assert (info.samplerate, info.subtype, info.channels) == (8000, "PCM_16", 1)
    y = read_audio(path)
    assert y.dtype == np.float32 and y.shape == (1000,)
    np.testing.assert_allclose(y, x, atol=1.0 / 32768)


def test_write_clips_to_unit_range(tmp_path):
    path = tmp_path / "loud.wav"
    write_audio(path, np.array([2.0, -3.0, 0.5], np.float32), 8000)
    y = read_audio(path)
    np.testing.assert_allclose(y, [32767 / 32768, -1.0, 0.5], atol=1.0 / 32768)


def test_stereo_downmix_is_channel_mean_and_mono_false_keeps_channels(tmp_path):
    left = np.linspace(-0.5, 0.5, 64, dtype=np.float32)
    right = np.full(64, 0.25, np.float32)
    path = tmp_path / "st.flac"
    sf.write(str(path), np.stack([left, right], axis=1), 8000, subtype="PCM_16")
    both = read_audio(path, mono=False)
    assert both.shape == (2, 64)
    np.testing.assert_allclose(read_audio(path), both.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(both[1], right, atol=1.0 / 32768)


def test_read_resamples_like_scipy_resample_poly(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, 4410).astype(np.float32)
    path = tmp_path / "b.wav"
    write_audio(path, x, 44100)
    native = read_audio(path)
    y = read_audio(path, sample_rate=16000)
    ref = resample_poly(native, 160, 441)
    assert y.shape == (1600,)
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_resample_of_sine_keeps_its_frequency():
    t = np.arange(22050) / 22050
    y = resample(np.sin(2 * np.pi * 440 * t), 22050, 16000)
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    # Interior only: the polyphase filter has edge transients.
    np.testing.assert_allclose(y[500:-500], expected[500:-500], atol=2e-3)


def test_resample_factors_reduce_by_gcd_and_bound_is_enforced():
    assert resample_factors(44100, 16000) == (160, 441)
    assert resample_factors(48000, 16000) == (1, 3)
    assert resample_factors(11025, 16000) == (640, 441)
    with pytest.raises(ValueError, match="exceed the bound"):
        resample_factors(44101, 16000)
    with pytest.raises(ValueError, match="positive integer"):
        resample_factors(0, 16000)
    assert MAX_RESAMPLE_FACTOR >= 640


def test_pad_or_crop():
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(pad_or_crop(x, 5), [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0]])
    np.testing.assert_array_equal(pad_or_crop(x, 2), [[0, 1], [3, 4]])
    np.testing.assert_array_equal(pad_or_crop(x, 1, axis=0), [[0, 1, 2]])
    np.testing.assert_array_equal(pad_or_crop(x, 3), x)


def test_missing_file_and_wrong_format(tmp_path):
    with pytest.raises(AudioFileError, match="does not exist") as err:
        read_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(err.value)
    m4a = tmp_path / "a.m4a"  # libsndfile decodes wav/flac/ogg/mp3, not AAC
    m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    with pytest.raises(AudioFileError, match="unsupported format") as err:
        read_audio(m4a)
    assert "a.m4a" in str(err.value)
    mp3 = tmp_path / "a.mp3"
    mp3.write_bytes(b"ID3")  # a supported extension, but no audio in it
    with pytest.raises(AudioFileError, match="corrupt or unreadable") as err:
        read_audio(mp3)
    assert "a.mp3" in str(err.value)


def test_non_finite_samples_are_refused(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(str(path), np.array([0.0, np.nan, 0.1], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="non-finite") as err:
        read_audio(path)
    assert "nan.wav" in str(err.value)
