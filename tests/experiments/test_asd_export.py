"""TFLite export of a trained ASD system (GeCo), run in the LiteRT interpreter.

The workdir is the session's GeCo smoke run (``trained`` in conftest.py). ``--mode=export`` runs
once for the module (float32 and int8); the tests read its files and report.

References: the system's own final evaluation of that workdir (its per-clip scores CSV and its
test AUC, computed by the trainer's compiled predict: ``features.log_mel``, ``segment_clip``,
``clip_score`` with each clip's class), and the training-time JAX graph
(``inference_model(export=False)``: the stored-DFT log-mel), which shares no front-end code with
the exported graph.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from experiments import run  # noqa: E402
from experiments.asd import export as asd_export  # noqa: E402
from experiments.asd.data import ASDData  # noqa: E402
from jaxaudio.export.report import model_facts  # noqa: E402
from jaxaudio.export.verify import run_tflite  # noqa: E402

EVAL_CLIPS = 8   # a multiple of the 8 simulated devices, and one normal + one anomaly of each of the 4 IDs


@pytest.fixture(scope="module")
def geco(trained, tmp_path_factory):
    system, config, workdir, final = trained("geco")
    out = str(tmp_path_factory.mktemp("geco_export"))
    argv = ["--exp=geco", "--mode=export", "--workdir", workdir, "--formats", "float32,int8", "--out", out,
            "--calibration-clips", "8", "--eval-clips", str(EVAL_CLIPS), "--threads", "1", "--runs", "2"]
    assert run.main(argv) == 0
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    variants = {fmt: open(os.path.join(out, f"geco_{fmt}.tflite"), "rb").read() for fmt in ("float32", "int8")}
    model = system.inference_model(config, workdir, export=True)
    test = system.evaluators(config)["test"].source
    return {"system": system, "config": config, "workdir": workdir, "final": final, "report": report, "out": out,
            "variants": variants, "model": model, "held": model.held_out(0),
            "class_of": {str(f.path): int(c) for f, c in zip(test.files, test.class_ids)}}


def evaluation_scores(workdir: str) -> dict[str, float]:
    """Per-clip scores of the run's final evaluation (ASDEvaluator's CSV), by file path."""
    with open(os.path.join(workdir, "evaluation", "test_student_scores.csv")) as f:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(f)}


def test_report_names_the_output_classes_and_auc_per_format(geco):
    report, config = geco["report"], geco["config"]
    assert report["name"] == "geco" and report["verify_examples"] == EVAL_CLIPS
    assert report["input_shape"] == [int(config.data.clip_seconds * config.data.sample_rate)]
    (out,) = report["outputs"]
    assert out["name"] == asd_export.SCORE_PER_CLASS and out["kind"] == "anomaly_score"
    assert out["labels"] == ASDData(config).classes == ["ToyCar/id_01", "ToyCar/id_02", "fan/id_00", "fan/id_02"]
    assert report["primary_metric"] == "auc" and report["report_metrics"] == ["pauc", "pauc_raw"]
    for fmt in ("float32", "int8"):
        metrics = report["variants"][fmt]["verify"]["metrics"]
        assert all(np.isfinite(metrics[k]) for k in ("auc", "pauc", "pauc_raw")), (fmt, metrics)
    assert report["variants"]["float32"]["verify"]["metric_deltas"] == {k: 0.0 for k in report["jax_metrics"]}
    with open(os.path.join(geco["out"], "report.md")) as f:
        assert "| model | pauc | dpauc | pauc_raw | dpauc_raw |" in f.read()   # pAUC next to JAX's


def test_float32_matches_jax_and_the_evaluator_within_1e4_of_the_score_scale(geco):
    """The float32 model's scores for every class against the training-time JAX graph, and its
    picked entry (the clip's own class) against the run's own evaluation of the same clip. The
    tolerance: 1e-4 of the largest score (float32 rounding of a different summation order in the
    front end; the report's figure is JAX's export form against the same file)."""
    held = geco["held"]
    clips = held.inputs[:EVAL_CLIPS]
    got = run_tflite(geco["variants"]["float32"], clips)[asd_export.SCORE_PER_CLASS]
    reference = geco["system"].inference_model(geco["config"], geco["workdir"], export=False).predict(clips)
    want = reference[asd_export.SCORE_PER_CLASS]
    n_classes = len(geco["model"].output(asd_export.SCORE_PER_CLASS).labels)
    assert got.shape == want.shape == (EVAL_CLIPS, n_classes)
    scale = float(np.abs(want).max())
    assert scale > 0.1   # -log p over 4 classes: O(1)
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=0)
    assert geco["report"]["variants"]["float32"]["verify"]["max_abs"] < 1e-4 * scale

    paths = held.ids[:EVAL_CLIPS]
    picked = asd_export.picked_scores(got, [geco["class_of"][p] for p in paths])
    evaluated = evaluation_scores(geco["workdir"])
    np.testing.assert_allclose(picked, [evaluated[p] for p in paths], atol=1e-4 * scale, rtol=0)


def test_float32_auc_on_every_test_clip_equals_jax_and_the_final_evaluation(geco):
    model, held, config = geco["model"], geco["held"], geco["config"]
    assert len(held.inputs) == len(evaluation_scores(geco["workdir"]))   # every labelled test clip
    tflite = held.score(run_tflite(geco["variants"]["float32"], held.inputs))
    jax_outputs = model.predict(held.inputs)
    jax_metrics = held.score(jax_outputs)
    for key in ("auc", "pauc", "pauc_raw"):
        assert tflite[key] == jax_metrics[key], key
    split = config.eval.validation_split
    assert tflite["auc"] == pytest.approx(geco["final"][f"{split}/student/auc"], abs=1e-12)
    assert tflite["pauc"] == pytest.approx(geco["final"][f"{split}/student/pauc"], abs=1e-12)
    # three held-out clips: a normal and an anomaly of the first ID, then a lone normal of the
    # second; the lone one's ID has no AUC and is left out, so the subset's AUC is the first ID's
    few = model.held_out(3)
    assert few.ids == held.ids[:3]
    classes = [geco["class_of"][p] for p in few.ids]
    assert classes[0] == classes[1] != classes[2]
    normal, anomaly = asd_export.picked_scores(jax_outputs[asd_export.SCORE_PER_CLASS][:2], classes[:2])
    expected = 1.0 if anomaly > normal else 0.5 if anomaly == normal else 0.0
    assert few.score({k: v[:3] for k, v in jax_outputs.items()})["auc"] == expected


def test_int8_keeps_the_waveform_branch_and_the_score_head_in_float(geco):
    data = geco["variants"]["int8"]
    facts = model_facts(data)
    assert facts["builtin_only"] and facts["int8_ops"] > 0
    assert len(data) < len(geco["variants"]["float32"])
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    win = geco["config"].frontend.win_length

    def in_dtypes(op):
        return [tensors[i]["dtype"] for i in op["inputs"] if i in tensors]

    log_softmax = [op for op in ops if op["op_name"] == "LOG_SOFTMAX"]
    assert log_softmax and all(np.float32 in in_dtypes(op) for op in log_softmax)
    # the Tgram's strided conv (a window-long kernel on the waveform) runs on the float waveform
    tgram = [op for op in ops if "CONV" in op["op_name"]
             and any(win in tuple(tensors[i]["shape"]) for i in op["inputs"][1:2] if i in tensors)]
    assert len(tgram) == 1 and all(d == np.float32 for d in in_dtypes(tgram[0])[:2])
    assert np.isfinite(geco["report"]["variants"]["int8"]["verify"]["max_abs"])


def test_held_out_order_pairs_each_class():
    class_ids = np.array([0, 0, 0, 1, 1, 1, 2, -1])
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    order = asd_export.held_out_order(class_ids, labels)
    assert order.tolist() == [0, 2, 3, 4, 6, 1, 5]   # (0 normal, 0 anomaly, 1 normal, 1 anomaly, 2 normal), ...
    scores = np.array([[0.1, 0.9, 0.5], [0.2, 0.1, 0.5]])
    np.testing.assert_array_equal(asd_export.picked_scores(scores, [1, 2]), [0.9, 0.5])
