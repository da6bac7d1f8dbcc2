"""Every registered system, end to end on its smoke preset: train, then predict, then export.

Parametrised over the registry, so registering a system puts it under test. Each system must
learn something (its loss falls and its validation metric beats the untrained model's), and
predict mode must reproduce the run's own evaluation from the files it writes.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from experiments import registry, run
from jaxaudio.train.trainer import Trainer

SYSTEMS = sorted(registry.SYSTEMS)
# predict and export write and check SED outputs (score tsvs, strong/weak); other tasks test theirs
SED_SYSTEMS = [name for name in SYSTEMS if registry.load(name).task == "sed"]


def _train_records(workdir: str, stage: str) -> list[dict]:
    with open(os.path.join(workdir, stage, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("split") == "train"]


@pytest.mark.parametrize("name", SYSTEMS)
def test_smoke_run_learns(name, trained):
    system, config, workdir, final = trained(name)
    trainer = Trainer(system, config, workdir)
    for stage in (s for s in trainer.stages if s.trains):
        losses = [r["loss"] for r in _train_records(workdir, stage.name)]
        assert len(losses) >= 2, stage.name
    final_stage = system.final_stage(config)
    losses = [r["loss"] for r in _train_records(workdir, final_stage)]
    assert losses[-1] < losses[0], f"{name}/{final_stage}: loss went {losses[0]:.4f} -> {losses[-1]:.4f}"

    # the untrained network through the same evaluator
    evaluator = system.evaluators(config)[config.eval.validation_split]
    graphdef, state, shardings = trainer.model_of(None)
    predict = trainer.predict_step(graphdef, shardings)
    untrained = evaluator.run(lambda batch: predict(state.params, state.model_state, batch))
    metric = evaluator.primary_metric
    who = "teacher" if next(s for s in trainer.stages if s.name == final_stage).has_teacher else "student"
    after = final[f"{config.eval.validation_split}/{who}/{metric}"]
    sign = -1.0 if getattr(evaluator, "mode", "max") == "min" else 1.0   # an error rate falls
    assert sign * (after - untrained[metric]) > 0.05, \
        f"{name}: {metric} {untrained[metric]:.3f} untrained -> {after:.3f}"


def _write_eval_copies(source, out_dir, count):
    """The first ``count`` eval clips as wav files, plus their reference events."""
    os.makedirs(out_dir, exist_ok=True)
    for record in source.records[:count]:
        audio, rate = sf.read(record.path, dtype="float32")
        sf.write(os.path.join(out_dir, os.path.basename(record.path)), audio, rate)
    return source.records[:count]


@pytest.mark.parametrize("name", SED_SYSTEMS)
def test_predict_reproduces_the_runs_evaluation(name, trained, tmp_path):
    """Score tsvs of the eval clips, read back by sed_scores_eval, equal the evaluator's
    post-processed scores, and give the same PSDS as our own evaluation of the checkpoint."""
    from sed_scores_eval import intersection_based
    from sed_scores_eval import io as sse_io

    from jaxaudio.metrics.sed import psds

    system, config, workdir, _ = trained(name)
    evaluator = system.evaluators(config)["eval"]
    records = _write_eval_copies(evaluator.source, tmp_path / "in", len(evaluator.source))
    out = tmp_path / "out"
    assert run.main([f"--exp={name}", "--mode=predict", "--workdir", workdir, "--input", str(tmp_path / "in"),
                     "--out", str(out), "--plots", "1"]) == 0

    trainer = Trainer(system, config, workdir)
    graphdef, state, shardings = trainer.model_of(system.final_stage(config))
    predict = trainer.predict_step(graphdef, shardings)
    expected = evaluator.scores(lambda batch: predict(state.teacher["params"], state.teacher["model_state"], batch))
    classes = list(evaluator.source.encoder.classes)
    read = {}
    for record in records:
        frame = sse_io.read_sed_scores(str(out / "scores" / f"{record.clip_id}.tsv"))
        read[record.clip_id] = frame
        np.testing.assert_array_equal(frame[classes].to_numpy(np.float32), expected[record.clip_id])

    truth = {r.clip_id: [(on, off, label) for on, off, label in r.events or []] for r in records}
    durations = {r.clip_id: r.duration or config.data.clip_seconds for r in records}
    # A lenient eFPR axis: on a minute of smoke audio PSDS1's 100/h is spent by one false alarm.
    kwargs = dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0,
                  max_efpr=10_000.0)
    ref, *_ = intersection_based.psds(scores=read, ground_truth=truth, audio_durations=durations, **kwargs)
    ours = psds(expected, evaluator.source.encoder.timestamps(), truth, durations, classes, **kwargs)
    assert ours.value == pytest.approx(ref, abs=1e-6)
    assert (out / "events.tsv").exists() and len(list((out / "timelines").glob("*.png"))) == 1


@pytest.mark.parametrize("name", SED_SYSTEMS)
def test_predict_on_any_recording(name, trained, tmp_path):
    """A 45 s stereo 44.1 kHz file and a 3 s mono file are covered end to end; a corrupt file
    among them gives one error line and the others are still written."""
    _, config, workdir, _ = trained(name)
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(inputs / "long_stereo.wav", 0.1 * rng.standard_normal((45 * 44100, 2)).astype(np.float32), 44100)
    sf.write(inputs / "short.wav", 0.1 * rng.standard_normal(3 * 16000).astype(np.float32), 16000)
    (inputs / "broken.wav").write_bytes(rng.bytes(3000))
    out = tmp_path / "out"
    assert run.main([f"--exp={name}", "--mode=predict", "--workdir", workdir, "--input", str(inputs),
                     "--out", str(out), "--plots", "0"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 2 and [f["path"] for f in summary["failed"]] == [str(inputs / "broken.wav")]
    for stem, seconds in (("long_stereo", 45.0), ("short", 3.0)):
        rows = np.loadtxt(out / "scores" / f"{stem}.tsv", skiprows=1, usecols=(0, 1))
        frame = rows[0, 1] - rows[0, 0]
        assert rows[0, 0] == 0.0 and abs(rows[-1, 1] - seconds) <= frame, stem


@pytest.mark.parametrize("name", SED_SYSTEMS)
def test_float32_export_matches_jax(name, trained, tmp_path, capsys):
    """``--mode=export`` on the trained workdir: the float32 model's named outputs match JAX
    on held-out clips and the report says what was exported."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    _, config, workdir, _ = trained(name)
    argv = [f"--exp={name}", "--mode=export", "--workdir", workdir, "--formats", "float32", "--out", str(tmp_path),
            "--calibration-clips", "2", "--eval-clips", "4", "--threads", "1", "--runs", "2"]
    assert run.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    result = json.loads("\n".join(lines[len(lines) - 1 - lines[::-1].index("{"):]))
    assert sorted(os.path.basename(p) for p in result["report_paths"]) == ["report.json", "report.md"]
    assert (tmp_path / f"{name}_float32.tflite").is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["name"] == name and report["verify_examples"] == 4
    assert report["primary_metric"] == config.eval.primary_metric
    assert [o["name"] for o in report["outputs"]] == ["strong", "weak"]
    assert report["variants"]["float32"]["verify"]["max_abs"] < 1e-4
