"""The export front end against ``features.log_mel`` (the training path) and the dense mel bank."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.audio import features
from jaxaudio.export import frontend as export_frontend

PRESETS = ("DCASE_16K", "PASST_32K", "AST_16K", "FUNASR_16K")
# a scaled input and a config trained with the FFT path: the exported graph must compute the same
VARIANTS = {"DCASE_16K scaled, fft": dict(input_scale=4.0, dft="fft"), "FUNASR_16K fft": dict(dft="fft")}


@pytest.mark.parametrize("name", PRESETS)
def test_mel_blocks_cover_every_nonzero_of_the_bank(name):
    bank = features.mel_filterbank(getattr(features, name))
    blocks = export_frontend.mel_blocks(bank)
    rebuilt = np.zeros_like(bank)
    for b0, b1, m0, m1 in blocks:
        rebuilt[b0:b1, m0:m1] = bank[b0:b1, m0:m1]
    np.testing.assert_array_equal(rebuilt, bank)
    assert [m0 for _, _, m0, _ in blocks] == sorted(m0 for _, _, m0, _ in blocks)
    assert sum((b1 - b0) * (m1 - m0) for b0, b1, m0, m1 in blocks) < 0.25 * bank.size


@pytest.mark.parametrize("name", PRESETS + tuple(VARIANTS))
def test_log_mel_matches_training_front_end(name):
    cfg = getattr(features, name.split()[0])
    cfg = dataclasses.replace(cfg, **VARIANTS.get(name, {}))
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal((2, cfg.sample_rate // 2)) * np.array([[0.3], [3e-4]])).astype(np.float32)
    want = np.asarray(features.log_mel(jnp.asarray(wave), cfg))
    got = np.asarray(jax.jit(lambda w: export_frontend.log_mel(w, cfg))(wave))
    assert got.shape == want.shape
    # float32 rounding of a different summation order, relative to the features' scale
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()), rtol=0)
