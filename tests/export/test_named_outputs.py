"""Export of a model that is not a SED model: a tone classifier with three named outputs.

The model (built here, no experiment) is log-mel (the export front end) -> mean over time ->
dense -> softmax, with three outputs of three kinds: ``class_probs`` (CLASS_PROBS),
``novelty`` (ANOMALY_SCORE, 1 - the top class probability) and ``frame_ids`` (TOKEN_IDS, the
per-frame argmax). Its dense weights are the mean log-mel templates of the three tones, so it
classifies clean tones with a wide margin: every variant must keep the accuracy (scored by the
model's own ``HeldOut.score`` against fixed labels) and stay within per-format tolerances of JAX,
output by output, read by name from the TFLite signature.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from jaxaudio.audio import features  # noqa: E402
from jaxaudio.export import (ANOMALY_SCORE, CLASS_PROBS, FORMATS, INPUT_NAME, TOKEN_IDS, HeldOut,  # noqa: E402
                             InferenceModel, Output, export_workdir)
from jaxaudio.export import frontend as export_frontend  # noqa: E402
from jaxaudio.export.verify import run_tflite  # noqa: E402

FE = dataclasses.replace(features.DCASE_16K, n_fft=256, win_length=256, hop_length=128, n_mels=32, fmax=8000.0)
SAMPLES = 4000  # 0.25 s at 16 kHz
TONES = (500.0, 1500.0, 4000.0)
CLASSES = ("low", "mid", "high")


def tones(labels, seed, noise=0.01):
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / FE.sample_rate
    amplitude = rng.uniform(0.05, 0.5, (len(labels), 1))
    phase = rng.uniform(0, 2 * np.pi, (len(labels), 1))
    freq = np.asarray(TONES)[np.asarray(labels)][:, None]
    wave = amplitude * np.sin(2 * np.pi * freq * t + phase) + noise * rng.standard_normal((len(labels), SAMPLES))
    return wave.astype(np.float32)


def fn(variables, inputs):
    """inputs (batch, samples) -> class_probs (batch, 3), novelty (batch,), frame_ids (batch, frames)."""
    feats = export_frontend.log_mel(inputs, FE)                       # (batch, frames, mel) dB
    feats = (feats - variables["mean"]) / variables["scale"]
    frame_logits = feats @ variables["w"] + variables["b"]            # (batch, frames, classes)
    probs = jax.nn.softmax(jnp.mean(frame_logits, axis=1), axis=-1)
    return {"class_probs": probs, "novelty": 1.0 - jnp.max(probs, axis=-1),
            "frame_ids": jnp.argmax(frame_logits, axis=-1).astype(jnp.int32)}


def build_variables():
    """Templates: the mean (standardised) log-mel of each clean tone, zero-mean over mels."""
    feats = np.asarray(features.log_mel(jnp.asarray(tones([0, 1, 2] * 4, seed=1, noise=0.0)), FE))
    mean, scale = float(feats.mean()), float(feats.std())
    per_class = ((feats - mean) / scale).mean(axis=1).reshape(4, 3, -1).mean(axis=0)  # (classes, mel)
    w = (per_class - per_class.mean(axis=1, keepdims=True)) / FE.n_mels
    return {"mean": np.float32(mean), "scale": np.float32(scale), "w": (4.0 * w.T).astype(np.float32),
            "b": np.zeros(3, np.float32)}


LABELS = np.array([0, 1, 2, 2, 1, 0, 0, 2, 1, 1, 2, 0])


def held_out(max_examples: int) -> HeldOut:
    count = len(LABELS) if max_examples <= 0 else min(max_examples, len(LABELS))
    labels = LABELS[:count]

    def score(outputs):
        probs = outputs["class_probs"]
        return {"accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
                "true_class_prob": float(np.mean(probs[np.arange(count), labels]))}

    return HeldOut(tones(labels, seed=2), tuple(f"tone{i}" for i in range(count)), score)


def classifier() -> InferenceModel:
    return InferenceModel(
        name="tones", fn=fn, variables=build_variables(), input_shape=(SAMPLES,),
        outputs=(Output("class_probs", CLASS_PROBS, CLASSES), Output("novelty", ANOMALY_SCORE),
                 Output("frame_ids", TOKEN_IDS, CLASSES)),
        primary_metric="accuracy", sample_rate=FE.sample_rate,
        calibration=lambda n: tones(np.arange(n) % 3, seed=3), held_out=held_out, source="built in the test")


# Largest |TFLite - JAX| allowed per float output and format (probabilities and 1 - p, in [0, 1]).
TOLERANCE = {"float32": 1e-5, "float16": 1e-2, "int8_dynamic": 5e-2, "int8": 5e-2}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tones"))
    model = classifier()
    report = export_workdir(model, out, FORMATS, calibration_clips=6, threads=(1,), runs=2, log=lambda *a: None)
    return {"model": model, "report": report, "out": out}


def test_the_reference_model_classifies_every_tone():
    model = classifier()
    held = held_out(0)
    assert held.score(model.predict(held.inputs))["accuracy"] == 1.0


def test_every_variant_has_the_declared_outputs_by_name(exported):
    held = held_out(4)
    for fmt in FORMATS:
        with open(os.path.join(exported["out"], f"tones_{fmt}.tflite"), "rb") as f:
            got = run_tflite(f.read(), held.inputs)
        assert sorted(got) == ["class_probs", "frame_ids", "novelty"], fmt
        assert got["class_probs"].shape == (4, 3) and got["novelty"].shape == (4,), fmt
        assert got["frame_ids"].shape == (4, FE.num_frames(SAMPLES)) and got["frame_ids"].dtype == np.int32, fmt


def test_float32_matches_jax_by_name(exported):
    model = exported["model"]
    held = held_out(0)
    reference = model.predict(held.inputs)
    with open(os.path.join(exported["out"], "tones_float32.tflite"), "rb") as f:
        got = run_tflite(f.read(), held.inputs)
    np.testing.assert_allclose(got["class_probs"], reference["class_probs"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["novelty"], reference["novelty"], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got["frame_ids"], reference["frame_ids"])


def test_outputs_and_metric_agree_in_every_format(exported):
    report = exported["report"]
    assert report["jax_metrics"]["accuracy"] == 1.0 and report["verify_examples"] == len(LABELS)
    for fmt in FORMATS:
        ver = report["variants"][fmt]["verify"]
        assert set(ver["outputs"]) == {"class_probs", "novelty", "frame_ids"}, fmt
        for name in ("class_probs", "novelty"):
            assert ver["outputs"][name]["max_abs"] <= TOLERANCE[fmt], (fmt, name, ver["outputs"][name])
        assert ver["outputs"]["class_probs"]["decision_agreement"] == 1.0, fmt
        assert ver["metrics"]["accuracy"] == 1.0 and ver["metric_deltas"]["accuracy"] == 0.0, fmt
    assert report["variants"]["float32"]["verify"]["outputs"]["frame_ids"]["exact_match"] == 1.0
    assert report["variants"]["float32"]["verify"]["agreement"] == 1.0


def test_report_describes_outputs_and_recommends(exported):
    report = exported["report"]
    assert report["input_name"] == INPUT_NAME and report["input_shape"] == [SAMPLES]
    assert [o["name"] for o in report["outputs"]] == ["class_probs", "novelty", "frame_ids"]
    assert report["outputs"][0]["labels"] == list(CLASSES) and report["primary_metric"] == "accuracy"
    assert report["recommendation"].startswith("Ship ")
    json_path, md_path = report["report_paths"]
    with open(json_path) as f:
        assert json.load(f)["variants"].keys() == set(FORMATS)
    with open(md_path) as f:
        text = f.read()
    assert "| int8 | frame_ids |" in text and "accuracy" in text
