"""The MWER fine-tuning stage's wiring (the objective itself: tests/objectives/test_mwer.py): opt-in
by its step count, it starts from the train stage and becomes the final one; its loss is
``base_weight`` x the training loss + ``weight`` x MWER, the training loss computed as in training."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import registry
from experiments.paraformer import system as paraformer_system
from jaxaudio.data.tokenizer import SPECIALS


def _config():
    c = registry.load_config("paraformer", "smoke")
    c.data.tokens = SPECIALS + tuple("abcdefgh")
    c.data.cmvn_mean, c.data.cmvn_std = (0.0,) * 80, (1.0,) * 80
    return c


def test_mwer_stage_is_opt_in_and_final():
    c = _config()
    assert c.stages.mwer.steps == 0 and paraformer_system.final_stage(c) == "train"
    assert [s.name for s in paraformer_system.stages(c, "unused")] == ["train"]
    c.stages.mwer.steps = 5
    stages = paraformer_system.stages(c, "unused")
    assert [(s.name, s.init_from, s.steps) for s in stages] == [("train", None, 60), ("mwer", "train", 5)]
    assert paraformer_system.final_stage(c) == "mwer"


@pytest.fixture(scope="module")
def model_and_batch():
    c = _config()
    model = paraformer_system.build_model(c)
    rng = np.random.default_rng(0)
    batch = {"audio": jnp.asarray(0.1 * rng.standard_normal((2, 16000)), jnp.float32),
             "audio_len": jnp.asarray([16000, 12000], jnp.int32),
             "tokens": jnp.asarray(rng.integers(4, 12, (2, 40)), jnp.int32),
             "token_len": jnp.asarray([5, 3], jnp.int32)}
    return c, model, batch


def test_mwer_loss_is_the_weighted_sum(model_and_batch):
    c, model, batch = model_and_batch
    key = jax.random.key(3)
    base_key = jax.random.split(key, 3)[0]    # the MWER loss splits its own keys off first
    base, _ = paraformer_system.loss_fn(c)(model, batch, base_key, None, 0)
    c.mwer.weight, c.mwer.base_weight = 0.0, 1.0
    only_base, aux = paraformer_system.loss_fn(c, mwer=True)(model, batch, key, None, 0)
    np.testing.assert_allclose(float(only_base), float(base), rtol=1e-6)
    assert float(aux["base_loss"]) == pytest.approx(float(base), rel=1e-6)
    c.mwer.weight, c.mwer.base_weight = 1.0, 0.0
    only_mwer, aux = paraformer_system.loss_fn(c, mwer=True)(model, batch, key, None, 0)
    np.testing.assert_allclose(float(only_mwer), float(aux["mwer_loss"]), rtol=1e-6)
    assert 0.0 < float(aux["mwer_mean_wer"]) <= 2.0 and abs(float(only_mwer)) < 1.0
