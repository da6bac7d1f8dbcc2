"""MAT-SED's encoder from a PMAM run (``model.encoder_from``), the stand-in for AudioSet PaSST at
sizes where there is none; and a trained run restores without the files it started from."""
from __future__ import annotations

import copy
import os

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import registry
from jaxaudio.errors import CheckpointError
from jaxaudio.train.trainer import Trainer, batch_predictor
from jaxaudio.train.warm_start import selected_step
from tests.experiments.conftest import smoke_config


def _params(module):
    return jax.tree.map(np.asarray, nnx.state(module, nnx.Param).to_pure_dict())


def test_matsed_starts_from_the_pmam_runs_pretrained_encoder(trained, smoke_data):
    pmam_system, pmam_config, pmam_workdir, _ = trained("pmam")
    source = os.path.join(pmam_workdir, "round1", "pretrain")
    pmam_trainer = Trainer(pmam_system, pmam_config, pmam_workdir)
    graphdef, state, _ = pmam_trainer.model_of("round1/pretrain")
    pmam_model = nnx.merge(graphdef, state.params, state.model_state)
    assert int(np.asarray(state.step)) == selected_step(source)

    system = registry.load("matsed")
    config = smoke_config("matsed", smoke_data)
    config.model.encoder_from = source
    model = system.build_model(config)
    jax.tree.map(np.testing.assert_array_equal, _params(model.encoder), _params(pmam_model.encoder))
    fresh = system.build_model(smoke_config("matsed", smoke_data))
    with pytest.raises(AssertionError):   # the default stays a fresh encoder
        jax.tree.map(np.testing.assert_array_equal, _params(fresh.encoder), _params(pmam_model.encoder))


def test_a_trained_run_restores_after_its_start_weights_are_gone(trained):
    system, config, workdir, _ = trained("matsed")
    moved = copy.deepcopy(config)
    moved.model.encoder_from = "/nowhere/round2/pretrain"       # as if the PMAM run had been deleted
    with pytest.raises(CheckpointError, match="/nowhere/round2/pretrain: not a finished training stage"):
        system.build_model(moved)                                # a fresh model does need it
    predict_batch, source = batch_predictor(system, moved, workdir)
    assert "finetune2 teacher" in source
    out = predict_batch(np.zeros((8, int(config.data.sample_rate * config.data.clip_seconds)), np.float32))
    assert np.all(np.isfinite(out["strong"]))
