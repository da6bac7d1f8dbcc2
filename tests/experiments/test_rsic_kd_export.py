"""The distilled student's TFLite export (``--mode=export``) on the session's rsic_kd smoke run:
the float32 model against the training-time forward pass, each variant's accuracy against the run's
own evaluation, and the teacher exported beside it as the report's reference.

References: the trainer's evaluation (``final``, computed on normalised images by the training
graph) and the teachers stage's accuracy, neither of which shares code with the export form (which
normalises [0, 1] pixels inside the graph)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from flax import nnx  # noqa: E402

from experiments import run  # noqa: E402
from experiments.rsic_kd import export as kd_export  # noqa: E402
from experiments.rsic_kd import system as kd_system  # noqa: E402
from jaxaudio.export.verify import run_tflite  # noqa: E402
from jaxaudio.train import trainer  # noqa: E402


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    system, config, workdir, final = trained("rsic_kd")
    out = tmp_path_factory.mktemp("rsic_kd_export")
    assert run.main(["--exp=rsic_kd", "--mode=export", f"--workdir={workdir}", f"--out={out}",
                     "--formats=float32,int8", "--threads=1", "--runs=3", "--calibration-clips=8"]) == 0
    with open(out / "report.json") as f:
        report = json.load(f)
    return {"config": config, "workdir": workdir, "final": final, "out": out, "report": report}


def test_float32_student_matches_the_training_forward_pass(exported):
    config, workdir = exported["config"], exported["workdir"]
    graphdef, state, _ = trainer.restore_final(kd_system.SYSTEM, config, workdir)
    student = nnx.merge(graphdef, state.params, state.model_state)
    data = kd_system.scene_data.SceneData(config)
    normalised, plain = data.source("test"), data.source("test", plain=True)
    rows = range(6)
    logits = np.asarray(student(np.stack([normalised[i]["image"] for i in rows]), train=False), np.float64)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    with open(exported["report"]["variants"]["float32"]["path"], "rb") as f:
        got = run_tflite(f.read(), np.stack([plain[i]["image"] for i in rows]))[kd_export.PROBS]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_each_variants_accuracy_is_scored_on_the_whole_test_part(exported):
    report, final = exported["report"], exported["final"]
    n_test = len(kd_system.scene_data.SceneData(exported["config"]).source("test"))
    assert report["verify_examples"] == n_test
    assert report["jax_metrics"]["accuracy"] == pytest.approx(final["test/student/accuracy"])
    assert report["variants"]["float32"]["verify"]["metrics"]["accuracy"] == pytest.approx(
        final["test/student/accuracy"])
    int8 = report["variants"]["int8"]
    assert int8["int8_ops"] > 0.8 * int8["op_count"]   # the network runs in int8, the front end and softmax do not
    assert int8["size_bytes"] < 0.6 * report["variants"]["float32"]["size_bytes"]


def test_the_teacher_is_exported_as_the_reference_it_was_evaluated_as(exported):
    report, workdir = exported["report"], exported["workdir"]
    (teacher,) = exported["config"].model.teachers
    (ref,) = report["references"]
    assert ref["name"] == f"teacher_{teacher}"
    assert os.path.exists(ref["variants"]["float32"]["path"])
    assert ref["variants"]["float32"]["verify"]["metrics"]["accuracy"] == pytest.approx(
        kd_system.teacher_accuracies(workdir)[teacher])
    text = (exported["out"] / "report.md").read_text()
    assert f"| teacher_{teacher} | float32 |" in text
    assert f"student_{exported['config'].model.student} int8 vs teacher_{teacher} float32:" in text


def test_spread_takes_the_classes_in_turn():
    labels = np.array([0, 0, 0, 1, 2, 2])
    assert kd_export.spread(labels, 4).tolist() == [0, 3, 4, 1]
    assert sorted(kd_export.spread(labels, 0).tolist()) == list(range(6))
