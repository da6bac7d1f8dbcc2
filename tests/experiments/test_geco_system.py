"""GeCo end to end on its smoke preset: each stage trains only its own network, the clip score is
-log p(ID) averaged over the clip's segments, and the ID-classifier baseline is GeCo without its
generative and contrastive parts. (Training and the learned-AUC check: test_systems.py.)"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from experiments import registry
from experiments.geco import system as geco_system
from jaxaudio.audio import features
from jaxaudio.train.trainer import Trainer
from tests.experiments.conftest import smoke_config


def _leaves(tree, prefix):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(v) for path, v in flat
            if jax.tree_util.keystr(path).startswith(prefix)}


def test_each_stage_trains_only_its_own_network(trained):
    system, config, workdir, _ = trained("geco")
    trainer = Trainer(system, config, workdir)
    fresh, pae, extractor = (trainer.model_of(s)[1].params for s in (None, "pae", "extractor"))
    for network, changed_in, kept_in in (("['paes']", pae, extractor), ("['net']", extractor, pae)):
        before = _leaves(fresh, network)
        assert before, network
        moved = _leaves(changed_in, network)
        assert any(not np.array_equal(before[k], moved[k]) for k in before), f"{network} did not train"
    # the PAEs are frozen in the extractor stage, the extractor in the PAE stage
    paes_after_pae, paes_after_extractor = _leaves(pae, "['paes']"), _leaves(extractor, "['paes']")
    assert all(np.array_equal(paes_after_pae[k], paes_after_extractor[k]) for k in paes_after_pae)
    net_fresh, net_after_pae = _leaves(fresh, "['net']"), _leaves(pae, "['net']")
    assert all(np.array_equal(net_fresh[k], net_after_pae[k]) for k in net_fresh)


def test_clip_score_is_the_mean_segment_negative_log_likelihood_of_its_id(trained):
    system, config, workdir, _ = trained("geco")
    trainer = Trainer(system, config, workdir)
    graphdef, state, shardings = trainer.model_of("extractor")
    source = system.evaluators(config)["test"].source
    batch = {k: np.stack([source[i][k] for i in range(8)]) for k in ("audio", "class_id", "index")}
    got = trainer.predict_step(graphdef, shardings)(state.params, state.model_state, batch)["score"]

    model = nnx.merge(graphdef, state.params, state.model_state)
    net_cfg = geco_system.model_config(config).net
    fe = geco_system.frontend_config(config)
    hop, frames = net_cfg.hop_frames, net_cfg.frames
    for row in range(0, 8, 3):
        mel = np.asarray(features.log_mel(batch["audio"][row][None], fe))[0]
        starts = list(range(0, mel.shape[0] - frames + 1, hop))
        if starts[-1] + frames < mel.shape[0]:
            starts.append(mel.shape[0] - frames)
        nll = []
        for t0 in starts:   # one segment at a time, its waveform cut by hand
            wave = np.zeros(net_cfg.segment_samples, np.float32)
            piece = batch["audio"][row][t0 * fe.hop_length: t0 * fe.hop_length + net_cfg.segment_samples]
            wave[: len(piece)] = piece
            logits = np.asarray(model(mel[None, t0:t0 + frames], wave[None], train=False)["id_logits"][0], np.float64)
            logp = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
            nll.append(-logp[batch["class_id"][row]])
        np.testing.assert_allclose(got[row], np.mean(nll), rtol=1e-4, atol=1e-4)


def test_id_classifier_baseline_is_geco_without_reconstructions(smoke_data):
    config = smoke_config("geco", smoke_data)
    config.geco.reconstructions = False
    config.data.classes = ("ToyCar/id_01", "ToyCar/id_02", "fan/id_00", "fan/id_02")   # no data read
    system = registry.load("geco")
    assert [s.name for s in system.stages(config, "/nonexistent")] == ["extractor", "thresholds"]
    model = nnx.eval_shape(lambda: system.build_model(config))
    assert not hasattr(model, "paes") and not model.net.cfg.recon_head
    assert geco_system.model_config(config).class_types == (0, 0, 1, 1)
