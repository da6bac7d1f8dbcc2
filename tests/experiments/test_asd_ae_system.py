"""The DCASE2020 task-2 autoencoder baseline as a System: the paper preset pinned to the released
baseline's values, tiny / smoke on GeCo's built-in data, and a trained smoke run's clip score = its own
machine type's AE's ``ae_score``. (Training and the learned-AUC check: test_systems.py.)"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import registry
from experiments.asd_ae import system as ae_system
from jaxaudio.audio import features
from jaxaudio.models.asd_ae import DCASE2020_T2_FRONTEND, ae_score
from jaxaudio.train.trainer import Trainer

DCASE_CLASSES = ("ToyCar/id_01", "ToyCar/id_02", "ToyConveyor/id_01", "fan/id_00", "fan/id_02", "pump/id_00",
                 "slider/id_00", "valve/id_00")   # set by hand: nothing is read


def test_paper_preset_is_the_released_baseline():
    """y-kawagu/dcase2020_task2_baseline, final commit: baseline.yaml, keras_model.py, Keras 2.1.6 defaults."""
    config = registry.load_config("asd_ae", "paper")
    config.data.classes = DCASE_CLASSES
    # features: 16 kHz, n_fft 1024, hop 512, 128 mels, 5 frames, raw dB (librosa 0.6 melspectrogram)
    assert ae_system.frontend_config(config) == DCASE2020_T2_FRONTEND
    fe = DCASE2020_T2_FRONTEND
    assert (fe.sample_rate, fe.n_fft, fe.hop_length, fe.n_mels, fe.power, fe.norm_mean, fe.norm_std) == (
        16000, 1024, 512, 128, 2.0, 0.0, 1.0)
    ae = ae_system.model_config(config).ae
    assert (ae.n_mels, ae.frames, ae.input_dim, ae.hidden, ae.depth, ae.bottleneck) == (128, 5, 640, 128, 4, 8)
    assert (ae.bn_momentum, ae.bn_epsilon) == (0.99, 1e-3)
    assert ae_system.model_config(config).class_types == (0, 0, 1, 2, 2, 3, 4, 5)   # one AE per machine type

    # training: Adam lr 1e-3, beta 0.9 / 0.999, epsilon 1e-7, constant rate, no clipping, no weight decay
    stage, thresholds = registry.load("asd_ae").stages(config, "/nonexistent")
    assert not thresholds.trains and thresholds.name == "thresholds"     # predict's decision thresholds
    assert stage.name == "train" and stage.clip_norm is None and not stage.groups and stage.ema is None
    assert stage.default_group == {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-7, "weight_decay": 0.0,
                                   "schedule": {"kind": "constant"}}

    # batch 512 vectors: 10 full 10-s clips of 309 vectors over 6 machine types
    assert config.data.clip_seconds == 10.0 and config.batch.train == 10
    frames = features.log_mel(jnp.zeros((1, 160_000)), fe).shape[1]
    assert frames == 313 and frames - 5 + 1 == 309
    assert round(10 * 309 / 6) == 515
    # 100 epochs of DCASE2020 dev_data's 20,119 training clips at 10 clips a step
    assert stage.steps == 100 * 2012 == 201_200
    assert config.eval.max_fpr == 0.1


def test_tiny_and_smoke_use_gecos_built_in_data():
    for preset in ("tiny", "smoke"):
        ours, geco = registry.load_config("asd_ae", preset), registry.load_config("geco", preset)
        for key in ("synth_preset", "synth_dir", "clip_seconds", "cache", "sample_rate", "subsets"):
            assert ours.data[key] == geco.data[key], (preset, key)
        assert ours.frontend.n_mels == 64 and ours.model.frames == 5
        assert ours.batch.train % 8 == 0 and ours.batch.eval % 8 == 0, preset   # 8 simulated test devices


def test_score_is_the_own_types_ae_score(trained):
    system, config, workdir, _ = trained("asd_ae")
    trainer = Trainer(system, config, workdir)
    graphdef, state, shardings = trainer.model_of("train")
    fresh = trainer.model_of(None)[1].params
    for k in range(len(fresh["aes"])):   # every type's AE trained
        before, after = jax.tree.leaves(fresh["aes"][k]), jax.tree.leaves(state.params["aes"][k])
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), k

    source = system.evaluators(config)["test"].source
    rows = np.arange(0, len(source), 3)[:8]
    batch = {key: np.stack([source[int(i)][key] for i in rows]) for key in ("audio", "class_id", "index")}
    got = np.asarray(trainer.predict_step(graphdef, shardings)(state.params, state.model_state, batch)["score"])
    model = nnx.merge(graphdef, state.params, state.model_state)
    types = ae_system.model_config(config).class_types
    mel = features.log_mel(jnp.asarray(batch["audio"]), ae_system.frontend_config(config))
    for row in range(len(rows)):
        own = model.aes[types[int(batch["class_id"][row])]]
        np.testing.assert_allclose(got[row], float(ae_score(own, mel[row:row + 1])[0]), rtol=1e-4)
