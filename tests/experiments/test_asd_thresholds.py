"""Decision thresholds on the training normals (the gamma fit of the DCASE2021/2022 task-2
baselines, checked against scipy) and ``--mode=predict`` on the trained GeCo smoke workdir, whose
scores must be the evaluator's."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from experiments import run
from experiments.asd import thresholds as asd_thresholds
from experiments.asd.data import ASDData
from jaxaudio.data.asd import ASDFile
from jaxaudio.errors import CheckpointError
from jaxaudio.evaluators.asd import collect_clip_scores
from jaxaudio.train import stages as stage_files
from jaxaudio.train.trainer import Trainer


def test_gamma_threshold_is_scipys_fit_and_ppf():
    x = np.random.default_rng(0).gamma(2.5, 0.8, size=200) + 0.3
    fit = asd_thresholds.decision_threshold(x)
    a, loc, scale = scipy.stats.gamma.fit(x)
    assert fit["method"] == "gamma" and "warning" not in fit
    assert fit["threshold"] == pytest.approx(scipy.stats.gamma(a, loc, scale).ppf(0.9), rel=1e-12)
    assert fit["gamma"] == pytest.approx({"a": a, "loc": loc, "scale": scale}, rel=1e-12)
    assert (fit["count"], fit["mean"], fit["std"]) == (200, pytest.approx(np.mean(x)), pytest.approx(np.std(x)))
    assert asd_thresholds.decision_threshold(x, 0.5)["threshold"] == pytest.approx(
        scipy.stats.gamma(a, loc, scale).ppf(0.5), rel=1e-12)


@pytest.mark.parametrize("scores, why", [
    ([0.5, -0.2, 1.0, 2.0], "<= 0"),              # outside the gamma's support
    ([0.0, 1.0, 2.0, 3.0], "<= 0"),
    ([1.5, 1.5, 1.5], "gamma fit failed"),        # scipy: FitError
    ([1.0], "gamma fit failed"),
    ([1.0, np.inf, 2.0], "not finite"),
])
def test_threshold_falls_back_to_the_empirical_quantile(scores, why, caplog):
    fit = asd_thresholds.decision_threshold(scores)
    finite = np.asarray(scores)[np.isfinite(scores)]
    assert fit["method"] == "empirical" and fit["gamma"] is None and why in fit["warning"]
    assert fit["threshold"] == pytest.approx(np.quantile(finite, 0.9))
    files = [ASDFile(f"/d/fan/train/normal_id_00_{i:08d}.wav", "fan", "id_00", "train", "dev", 0)
             for i in range(len(scores))]
    asd_thresholds.fit_thresholds(files, scores)
    assert any("fan/id_00" in r.getMessage() and why in r.getMessage() for r in caplog.records)


def test_missing_thresholds_name_the_file_and_how_to_make_them(tmp_path):
    with pytest.raises(CheckpointError) as err:
        asd_thresholds.load_thresholds(str(tmp_path), ["fan/id_00"], exp="geco")
    message = str(err.value)
    assert os.path.join(str(tmp_path), "thresholds", "thresholds.json") in message
    assert f"python experiments/run.py --exp=geco --workdir={tmp_path}" in message and "skipped" in message
    stage_files.mark_done(stage_files.stage_dir(str(tmp_path), "thresholds"), {})   # done, but the file is gone
    with pytest.raises(CheckpointError, match="delete .*done.json"):
        asd_thresholds.load_thresholds(str(tmp_path), ["fan/id_00"], exp="geco")


@pytest.mark.parametrize("name, final", [("geco", "extractor"), ("asd_ae", "train")])
def test_trained_thresholds_and_predict_score_as_the_evaluator(name, final, trained, tmp_path):
    system, config, workdir, _ = trained(name)
    trainer = Trainer(system, config, workdir)
    assert system.final_stage(config) == final and trainer.stages[-1].name == "thresholds"
    assert stage_files.is_done(os.path.join(workdir, "thresholds"))
    graphdef, state, shardings = trainer.model_of(final)
    predict_step = trainer.predict_step(graphdef, shardings)

    def predict(batch):
        return predict_step(state.params, state.model_state, batch)

    # the thresholds: one gamma fit per class on its training normals' scores
    train_source = ASDData(config).source("train")
    train_scores = collect_clip_scores(train_source, predict, int(config.batch.eval))
    record = json.loads(Path(workdir, "thresholds", "thresholds.json").read_text())
    assert sorted(record["classes"]) == sorted(ASDData(config).classes) and record["model_stage"] == final
    for cls, fit in record["classes"].items():
        mine = train_scores[[f.class_name == cls for f in train_source.files]]
        assert fit["count"] == len(mine) and fit["threshold"] == pytest.approx(
            asd_thresholds.decision_threshold(mine)["threshold"], rel=1e-5)

    # predict on test clips (both path layouts) and two bad files, through the command line
    evaluator = system.evaluators(config)["test"]
    test_scores = evaluator.scores(predict)
    source = evaluator.source
    picked = [0, 5, len(source) // 2, len(source) - 1]
    inputs = [source.files[i].path for i in picked]
    copied = source.files[picked[1]]
    mine = tmp_path / "mine" / copied.machine_type
    mine.mkdir(parents=True)
    shutil.copy(copied.path, mine / f"{copied.machine_id}_recording.wav")
    (mine / f"{copied.machine_id}_text.wav").write_text("not audio\n")   # a known class, but no audio
    (mine / f"{copied.machine_id}_empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    rc = run.main([f"--exp={name}", "--mode=predict", "--workdir", workdir, "--input", *inputs, str(tmp_path / "mine"),
                   "--out", str(out)])
    assert rc == 1   # some files failed; the others are written
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(picked) + 1
    expected = {source.files[i].path: test_scores[i] for i in picked}
    expected[str(mine / f"{copied.machine_id}_recording.wav")] = test_scores[picked[1]]
    assert {r["file"] for r in rows} == set(expected)
    for r in rows:
        cls = f"{r['machine_type']}/{r['machine_id']}"
        assert float(r["score"]) == pytest.approx(expected[r["file"]], rel=1e-5, abs=1e-6), r["file"]
        assert float(r["threshold"]) == pytest.approx(record["classes"][cls]["threshold"], rel=1e-8)
        assert r["decision"] == ("anomaly" if float(r["score"]) > float(r["threshold"]) else "normal")
    summary = json.loads((out / "summary.json").read_text())
    failed = {f["path"]: f["error"] for f in summary["failed"]}
    assert sorted(failed) == [str(mine / f"{copied.machine_id}_{n}.wav") for n in ("empty", "text")]
    assert all("audio" in why for why in failed.values()), failed
    assert summary["thresholds_file"] == os.path.join(workdir, "thresholds", "thresholds.json")


def test_a_run_from_before_the_stage_gets_its_thresholds_by_training_again(trained, tmp_path, capsys):
    system, config, workdir, _ = trained("geco")
    old = str(tmp_path / "old_run")
    shutil.copytree(workdir, old)
    shutil.rmtree(os.path.join(old, "thresholds"))   # trained before the stage existed
    clip = ASDData(config).source("test").files[0].path
    assert run.main(["--exp=geco", "--mode=predict", "--workdir", old, "--input", clip]) == 2
    err = capsys.readouterr().err
    assert os.path.join(old, "thresholds", "thresholds.json") in err
    assert f"python experiments/run.py --exp=geco --preset=smoke --workdir={old}" in err

    Trainer(system, config, old).run()   # what that command does: the finished stages are skipped
    with open(os.path.join(old, "metrics.json")) as f:
        assert json.load(f)["invocations"][-1]["worked_on"] == ["thresholds"]
    again = json.loads(Path(old, "thresholds", "thresholds.json").read_text())
    first = json.loads(Path(workdir, "thresholds", "thresholds.json").read_text())
    for name, fit in first["classes"].items():
        assert again["classes"][name]["threshold"] == pytest.approx(fit["threshold"], rel=1e-6)
