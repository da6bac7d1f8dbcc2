"""PMAM experiment: every stage runs on a small DESED-layout folder, leaves its files, hands its
weights to the next stage and is skipped when the run is started again."""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from experiments.pmam import prototypes as protos
from experiments.pmam.model import frontend_config, mel_frames
from experiments.pmam.system import SYSTEM
from experiments.sed.task import SEDData
from jaxaudio.data.synth import SMALL, generate
from jaxaudio.objectives import gmm as gmm_lib
from jaxaudio.train import stages
from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.trainer import Trainer, run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(generate(tmp_path_factory.mktemp("pmam_data") / "desed", SMALL, progress=False, workers=1))


@pytest.fixture(scope="module")
def finished(trained):
    """The session's PMAM smoke run (tests/experiments/conftest.py), one round of every stage."""
    _, config, workdir, final = trained("pmam")
    return config, workdir, final


def _restore(config, workdir, name):
    return Trainer(SYSTEM, config, workdir).model_of(name)[1]


def test_every_stage_leaves_its_files(finished):
    _, workdir, final = finished
    for stage in ("round1/prototypes", "round1/pretrain", "finetune1", "finetune2", "evaluation"):
        assert stages.is_done(os.path.join(workdir, stage)), stage
    for name in ("prototypes.npz", "pseudo_labels.png", "labels_synthetic_train.npy"):
        assert os.path.exists(os.path.join(workdir, "round1/prototypes", name))
    assert os.path.exists(os.path.join(workdir, "evaluation", "validation_teacher_psd_roc.png"))
    with open(os.path.join(workdir, "metrics.json")) as f:
        summary = json.load(f)
    assert summary["final_eval"] == final
    for key in ("validation/teacher/psds1", "validation/teacher/psds2", "eval/student/psds1"):
        assert 0.0 <= final[key] <= 1.0


def test_pseudo_labels_are_the_gmm_posteriors_of_the_round_features(finished, data_dir):
    """Recompute clip 0's features with a fresh model (round 1 reads the untrained network)
    and its posteriors with the saved mixture: they must be the stored labels."""
    config, workdir, _ = finished
    labels = np.load(os.path.join(workdir, "round1/prototypes/labels_synthetic_train.npy"))
    fitted = protos.Prototypes.load(os.path.join(workdir, "round1/prototypes/prototypes.npz"))
    source = SEDData(config, config.model.frames).source(config.data.train_strong)
    assert labels.shape == (len(source), config.model.frames, config.model.n_prototypes)
    np.testing.assert_allclose(labels.astype(np.float32).sum(-1), 1.0, atol=5e-3)
    graphdef, state, _ = Trainer(SYSTEM, config, workdir).model_of(None)  # the untrained network
    fe, frames = frontend_config(config), config.model.frames

    @jax.jit
    def features(params, model_state, audio):
        return nnx.merge(graphdef, params, model_state).gmm_features(mel_frames(audio, fe, frames))

    audio = jax.numpy.asarray(source[0]["audio"])[None]
    feats = np.asarray(features(state.params, state.model_state, audio))[0]
    expected = np.asarray(gmm_lib.predict_proba(fitted.gmm_state, feats))
    np.testing.assert_allclose(labels[0].astype(np.float32), expected, atol=2e-3)


def test_stage_one_trains_only_the_heads_from_the_pretrained_weights(finished):
    config, workdir, _ = finished
    pre = _restore(config, workdir, "round1/pretrain").params
    ft1 = _restore(config, workdir, "finetune1").params
    ft2 = _restore(config, workdir, "finetune2").params
    flat_pre = dict(jax.tree_util.tree_leaves_with_path(pre))
    changed_1, changed_2 = set(), set()
    for path, value in jax.tree_util.tree_leaves_with_path(ft1):
        name = jax.tree_util.keystr(path)
        if not np.array_equal(np.asarray(value), np.asarray(flat_pre[path])):
            changed_1.add(name)
    for path, value in jax.tree_util.tree_leaves_with_path(ft2):
        if not np.array_equal(np.asarray(value), np.asarray(dict(jax.tree_util.tree_leaves_with_path(ft1))[path])):
            changed_2.add(jax.tree_util.keystr(path))
    # stage 1's head group: out_norm too, as the reference's (sed_recipes.md row 16)
    assert changed_1 and all(any(h in n for h in ("classifier", "at_pool", "at_class_head", "out_norm"))
                             for n in changed_1)
    assert any("encoder" in n for n in changed_2) and any("context" in n for n in changed_2)
    assert not any("fusion_weight" in n for n in changed_2)


def test_a_second_run_skips_finished_stages(finished):
    config, workdir, final = finished
    marks = {s: os.path.getmtime(os.path.join(workdir, s, stages.DONE))
             for s in ("round1/prototypes", "round1/pretrain", "finetune1", "finetune2", "evaluation")}
    again = run(SYSTEM, config, workdir)
    assert again == final
    for stage, mtime in marks.items():
        assert os.path.getmtime(os.path.join(workdir, stage, stages.DONE)) == mtime
    with Checkpointer(os.path.join(workdir, "finetune2", "checkpoints"), async_save=False) as ckpt:
        assert ckpt.latest_step() == config.stages.finetune2.steps


@pytest.mark.slow
def test_interrupted_run_continues_from_its_stage_and_step(data_dir, tmp_path):
    """SIGTERM during round-1 pre-training, then the same command: the prototypes are not
    refitted and pre-training resumes from its checkpoint rather than from step 0."""
    import signal
    import subprocess
    import sys
    import time

    workdir = tmp_path / "run"
    cmd = [sys.executable, "experiments/run.py", "--exp=pmam", f"--workdir={workdir}", f"--data_dir={data_dir}",
           "--config.pretrain.rounds=1", "--config.stages.pretrain.steps=40", "--config.stages.finetune1.steps=2",
           "--config.stages.finetune2.steps=2", "--config.train.checkpoint_every=2", "--config.batch.eval=8"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpts = workdir / "round1" / "pretrain" / "checkpoints"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() and int(p.name) >= 4 for p in ckpts.iterdir()):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 143, out[-3000:]
    proto_done = os.path.getmtime(workdir / "round1" / "prototypes" / stages.DONE)
    stopped_at = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert not stages.is_done(str(workdir / "round1" / "pretrain"))

    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert f"resumed from step {stopped_at}" in log
    assert "fitting gmm" not in log
    assert os.path.getmtime(workdir / "round1" / "prototypes" / stages.DONE) == proto_done
    assert stages.is_done(str(workdir / "evaluation"))


def test_pretraining_keeps_the_epoch_of_lowest_validation_pseudo_label_bce(finished):
    """The smoke preset validates pre-training (as the paper preset, sed_recipes.md row 14): every
    validation is logged, the lowest BCE's checkpoint is the stage's result, and fine-tuning
    starts from it."""
    from jaxaudio.train.log import read_metrics

    config, workdir, _ = finished
    path = os.path.join(workdir, "round1/pretrain")
    evals = [r for r in read_metrics(os.path.join(path, "metrics.jsonl"), split="eval")]
    assert len(evals) == config.stages.pretrain.steps // config.stages.pretrain.eval_every
    scores = {int(r["step"]): r["student/pseudo_bce"] for r in evals}
    assert all(0.0 < v < 1.0 for v in scores.values())   # a BCE of soft targets, each prototype a probability
    best = stages.read_done(path)["best_checkpoint_step"]
    assert scores[best] == min(scores.values())
    selected = _restore(config, workdir, "round1/pretrain").params
    with Checkpointer(os.path.join(path, "checkpoints"), async_save=False) as ckpt:
        assert best in ckpt.all_steps()
    ft1 = _restore(config, workdir, "finetune1").params
    # what stage 1 froze is the selected pre-training checkpoint's
    frozen = [p for p, _ in jax.tree_util.tree_leaves_with_path(selected) if "encoder" in jax.tree_util.keystr(p)]
    flat_sel = dict(jax.tree_util.tree_leaves_with_path(selected))
    flat_ft1 = dict(jax.tree_util.tree_leaves_with_path(ft1))
    assert frozen and all(np.array_equal(np.asarray(flat_sel[p]), np.asarray(flat_ft1[p])) for p in frozen)
