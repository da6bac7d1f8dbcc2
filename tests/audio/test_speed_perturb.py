"""Speed perturbation: pitch and length move together (sox speed), identity at 1, bad factors named."""
import numpy as np
import pytest

from jaxaudio.audio.speed_perturb import SPEEDS, choose_speed, speed_perturb
from jaxaudio.errors import ConfigError

SR = 16000


def peak_hz(x, sr=SR):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return np.fft.rfftfreq(8 * len(x), 1 / sr)[spectrum.argmax()]


@pytest.mark.parametrize("factor,up,down", [(1.1, 10, 11), (0.9, 10, 9), (1.5, 2, 3)])
def test_sine_moves_in_pitch_and_length(factor, up, down):
    n, f0 = 16001, 440.0
    x = np.sin(2 * np.pi * f0 * np.arange(n) / SR).astype(np.float32)
    y = speed_perturb(x, factor, SR)
    assert y.dtype == np.float32
    assert len(y) == round(n * up / down)
    assert abs(peak_hz(y) - f0 * factor) < 1.0
    # away from the filter's edge transients the sine keeps its amplitude
    assert np.abs(y[200:-200]).max() == pytest.approx(1.0, abs=0.01)


def test_factor_one_is_identity_and_batches_work():
    x = np.random.default_rng(0).standard_normal((3, 1000))
    np.testing.assert_array_equal(speed_perturb(x, 1.0, SR), x)
    y = speed_perturb(x, 1.1, SR)
    assert y.shape == (3, 909) and y.dtype == np.float64
    np.testing.assert_allclose(y[1], speed_perturb(x[1], 1.1, SR))
    assert speed_perturb(np.arange(100, dtype=np.int16), 0.9, SR).dtype == np.float32


@pytest.mark.parametrize("factor", [0.0, -1.1, 0.4, 2.5, float("nan"), "fast"])
def test_bad_factor_is_a_config_error_naming_it(factor):
    with pytest.raises(ConfigError, match=repr(factor).replace("(", r"\(").replace(".", r"\.")):
        speed_perturb(np.zeros(100), factor, SR)


def test_choose_speed_is_deterministic_per_seed_epoch_index():
    draws = [choose_speed(3, epoch, i) for epoch in range(3) for i in range(200)]
    assert draws == [choose_speed(3, epoch, i) for epoch in range(3) for i in range(200)]
    assert set(draws) == set(SPEEDS)
    counts = np.array([draws.count(s) for s in SPEEDS])
    assert counts.min() > 150  # ~200 each
    assert draws[:200] != draws[200:400]  # epochs differ
    rng = np.random.default_rng(0)
    assert choose_speed(rng, factors=(1.0,)) == 1.0
    with pytest.raises(ConfigError, match="3.0"):
        choose_speed(0, factors=(1.0, 3.0))
