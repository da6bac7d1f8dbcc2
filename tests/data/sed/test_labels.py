"""FrameLabelEncoder and median_filter against hand-worked cases and scipy.ndimage."""
import numpy as np
import pytest
from scipy.ndimage import median_filter as scipy_median_filter

from jaxaudio.data.sed.labels import FrameLabelEncoder, median_filter
from jaxaudio.errors import ConfigError, ShapeError

CLASSES = ("dog", "cat", "bell")


def test_encode_strong_hand_case():
    # 1 s in 10 frames: hop 0.1 s. Frame i covers [0.1 i, 0.1 (i + 1)).
    enc = FrameLabelEncoder(CLASSES, 1.0, 10)
    target = enc.encode_strong([(0.25, 0.41, "dog"), (0.0, 0.1, "cat"), (0.95, 3.0, "bell")])
    expected = np.zeros((10, 3), np.float32)
    expected[2:5, 0] = 1  # floor(2.5) = 2 .. ceil(4.1) = 5 exclusive
    expected[0:1, 1] = 1  # boundary times map exactly: frame 0 only
    expected[9:10, 2] = 1  # clipped at the clip end
    np.testing.assert_array_equal(target, expected)
    assert target.dtype == np.float32


def test_boundaries_on_float_grid_are_exact():
    # 10 s, 156 frames: times that are exact multiples of the hop must not spill over.
    enc = FrameLabelEncoder(CLASSES, 10.0, 156)
    hop = 10.0 / 156
    target = enc.encode_strong([(7 * hop, 19 * hop, "cat")])
    assert np.flatnonzero(target[:, 1]).tolist() == list(range(7, 19))


def test_encode_weak_and_unknown_class():
    enc = FrameLabelEncoder(CLASSES, 1.0, 10)
    np.testing.assert_array_equal(enc.encode_weak(["bell", "dog"]), [1, 0, 1])
    with pytest.raises(ValueError, match="unknown class 'cow'"):
        enc.encode_weak(["cow"])


def test_timestamps():
    enc = FrameLabelEncoder(CLASSES, 2.0, 4)
    np.testing.assert_allclose(enc.timestamps(), [0, 0.5, 1.0, 1.5, 2.0])


def test_encode_decode_round_trip_on_frame_aligned_events():
    enc = FrameLabelEncoder(CLASSES, 1.0, 10)
    events = [(0.0, 0.3, "dog"), (0.5, 0.6, "dog"), (0.2, 1.0, "bell"), (0.7, 0.9, "cat")]
    decoded = enc.decode_strong(enc.encode_strong(events))
    got = [(round(a, 9), round(b, 9), c) for a, b, c in decoded]
    want = sorted(events, key=lambda e: (e[0], CLASSES.index(e[2])))
    assert got == want


def test_decode_threshold_is_strict_and_median_removes_blips():
    enc = FrameLabelEncoder(("x",), 1.0, 10)
    probs = np.array([0.1, 0.9, 0.1, 0.1, 0.8, 0.9, 0.7, 0.1, 0.5, 0.1])[:, None]
    raw = enc.decode_strong(probs, threshold=0.5)
    # Frame 8 sits exactly at the threshold and stays inactive (strict >).
    assert [(round(a, 6), round(b, 6), c) for a, b, c in raw] == [(0.1, 0.2, "x"), (0.4, 0.7, "x")]
    # A 3-frame median removes the isolated frame 1 and keeps frames 4..6.
    smooth = enc.decode_strong(probs, threshold=0.5, median_windows=3)
    assert [(round(a, 6), round(b, 6)) for a, b, _ in smooth] == [(0.4, 0.7)]


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 7, 11, 32])
def test_median_filter_matches_scipy_per_column(window):
    probs = np.random.default_rng(window).uniform(size=(40, 4))
    got = median_filter(probs, window)
    for k in range(4):
        np.testing.assert_array_equal(got[:, k], scipy_median_filter(probs[:, k], size=window))


def test_class_wise_windows_match_scipy_each():
    probs = np.random.default_rng(3).uniform(size=(25, 3))
    windows = [1, 5, 9]
    got = median_filter(probs, windows)
    for k, w in enumerate(windows):
        np.testing.assert_array_equal(got[:, k], scipy_median_filter(probs[:, k], size=w))


def test_an_even_window_takes_the_upper_middle_value_of_the_frames_around():
    """Hand-worked: window 4 at frame i covers frames i-2 .. i+1 (edges mirrored), and of the
    two middle values scipy keeps the upper one (no averaging)."""
    column = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    # frame 0: [1, 0 | 0, 1] -> sorted 0 0 1 1 -> 1; frame 2: [0, 1, 0, 0] -> 0; frame 4: [0, 0, 1, 1] -> 1
    got = median_filter(column[:, None], 4)[:, 0]
    assert got[0] == 1.0 and got[2] == 0.0 and got[4] == 1.0


def test_the_reference_class_wise_windows():
    """Transformer4SED's windows (recipes/desed/finetune/train.py:221-226) at 1000 output frames."""
    windows = [int(w / 156 * 1000) for w in (5, 20, 5, 5, 5, 20, 20, 20, 5, 20)]
    assert windows == [32, 128, 32, 32, 32, 128, 128, 128, 32, 128]
    probs = np.random.default_rng(5).uniform(size=(1000, 10))
    got = median_filter(probs, windows)
    for k, w in enumerate(windows):
        np.testing.assert_array_equal(got[:, k], scipy_median_filter(probs[:, k], size=w))


def test_median_filter_window_longer_than_signal_matches_scipy():
    probs = np.random.default_rng(4).uniform(size=(5, 2))
    got = median_filter(probs, 11)
    for k in range(2):
        np.testing.assert_array_equal(got[:, k], scipy_median_filter(probs[:, k], size=11))


@pytest.mark.parametrize("windows, match", [
    (0, "median window 0 must be a whole number of frames >= 1"),
    (-3, "median window -3 must be a whole number of frames >= 1"),
    (2.5, "median window 2.5 must be a whole number of frames >= 1"),
    ([3, 0], r"median window 0 \(class 1\) must be a whole number of frames >= 1"),
    ([3, 3, 3], "got 3 windows for 2 classes"),
])
def test_median_filter_bad_window_is_a_config_error(windows, match):
    with pytest.raises(ConfigError, match=match):
        median_filter(np.zeros((5, 2)), windows)


def test_median_filter_wrong_shape_names_expected_and_got():
    with pytest.raises(ShapeError, match=r"expected probs of shape \(time, classes\), got \(5,\)"):
        median_filter(np.zeros(5), 3)
    encoder = FrameLabelEncoder(("a", "b"), 1.0, 4)
    with pytest.raises(ShapeError, match=r"\(4, 2\), got \(4, 3\)"):
        encoder.decode_strong(np.zeros((4, 3)))
    assert issubclass(ShapeError, ValueError)  # callers catching ValueError still do


def test_max_filter_widens_each_class_by_its_own_window():
    """Hand-worked: a one-frame blip becomes the window's width, edges mirrored as scipy does."""
    from jaxaudio.data.sed.labels import max_filter

    probs = np.zeros((7, 2))
    probs[3, 0] = probs[3, 1] = 0.9
    probs[0, 1] = 0.4
    out = max_filter(probs, (3, 5))
    np.testing.assert_array_equal(out[:, 0], [0, 0, 0.9, 0.9, 0.9, 0, 0])
    np.testing.assert_array_equal(out[:, 1], [0.4, 0.9, 0.9, 0.9, 0.9, 0.9, 0])
    np.testing.assert_array_equal(max_filter(probs, 1), probs)
