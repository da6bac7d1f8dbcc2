"""Paraformer's export form (experiments/paraformer/export.py) and its TFLite variants.

* The closed-form CIF against ``nn/cif.py``'s ``lax.scan`` (and, through it, FunASR's rule): hand-made
  weights whose float32 sums are exact (fires in a row, exactly at the threshold, a residual split,
  the tail, a full buffer, padding), then random weights.
* A smoke-sized Paraformer with random weights (no corpus, no training): its export graph against
  the training-time graph in JAX, then the float32 TFLite model against JAX token for token, and
  the int8 model: it converts, runs, and keeps the masked attention's fill, the CIF and the head
  in float. Synthetic "utterances" (noise bursts of different lengths, zero-padded) are enough:
  the comparisons are of the same function in two runtimes.
* ``slow``: ``--mode=export`` of the session's smoke-trained workdir, CER on the test voices.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import registry
from experiments.paraformer import export as pexp
from experiments.paraformer import system as paraformer_system
from jaxaudio.data.tokenizer import SPECIALS
from jaxaudio.errors import ConfigError
from jaxaudio.export.model import InferenceModel
from jaxaudio.models import paraformer as paraformer_model
from jaxaudio.nn import cif

TOL = dict(rtol=1e-6, atol=1e-6)

closed_fire = jax.jit(pexp.closed_form_integrate_and_fire, static_argnames=("max_tokens",))
scan_fire = jax.jit(cif.integrate_and_fire, static_argnames=("max_tokens", "threshold"))
closed_infer = jax.jit(pexp.closed_form_cif_inference, static_argnames=("max_tokens", "threshold", "tail_threshold"))
scan_infer = jax.jit(cif.cif_inference, static_argnames=("max_tokens", "threshold", "tail_threshold"))


def both_fires(alpha, hidden=None, max_tokens=4):
    """(closed form, scan) of ``integrate_and_fire``; ``hidden`` defaults to ``eye(T)`` so that an
    embedding reads as its per-frame weights."""
    alpha = jnp.asarray(alpha, jnp.float32)
    alpha = alpha[None] if alpha.ndim == 1 else alpha
    if hidden is None:
        hidden = jnp.broadcast_to(jnp.eye(alpha.shape[1]), alpha.shape + (alpha.shape[1],))
    hidden = jnp.asarray(hidden, jnp.float32)
    closed = [np.asarray(x) for x in closed_fire(hidden, alpha, max_tokens=max_tokens)]
    scan = [np.asarray(x) for x in scan_fire(hidden, alpha, max_tokens=max_tokens)]
    return closed, scan


# (alpha, max_tokens, expected per-slot frame weights, expected fire frames); dyadic weights, so
# the cumulative sums and the scan's remainders are exact in float32.
HAND_MADE = {
    "fires_in_a_row": ([1.0, 1.0, 1.0, 0.5, 0.5], 5,
                       [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0.5, 0.5], [0] * 5],
                       [0, 1, 2, 4, -1]),
    "exactly_at_threshold": ([0.25, 0.75, 0.0, 0.5, 0.5, 0.125], 3,
                             [[0.25, 0.75, 0, 0, 0, 0], [0, 0, 0, 0.5, 0.5, 0], [0] * 6], [1, 4, -1]),
    "residual_split": ([0.75, 0.5, 0.75, 0.25, 0.5], 3,
                       [[0.75, 0.25, 0, 0, 0], [0, 0.25, 0.75, 0, 0], [0] * 5], [1, 2, -1]),
    "residual_split_then_exact": ([0.625, 0.625, 0.75, 0.75, 0.25], 3,
                                  [[0.625, 0.375, 0, 0, 0], [0, 0.25, 0.75, 0, 0], [0, 0, 0, 0.75, 0.25]],
                                  [1, 2, 4]),
    "never_fires": ([0.25, 0.25, 0.0, 0.25], 2, [[0] * 4, [0] * 4], [-1, -1]),
    "full_buffer_drops_later_fires": ([1.0, 0.5, 0.75, 1.0, 1.0, 1.0], 2,
                                      [[1, 0, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0, 0]], [0, 2]),
}


@pytest.mark.parametrize("case", sorted(HAND_MADE))
def test_closed_form_cif_equals_the_scan_on_hand_made_weights(case):
    alpha, max_tokens, weights, frames = HAND_MADE[case]
    (emb, mask, pos), (want_emb, want_mask, want_pos) = both_fires(alpha, max_tokens=max_tokens)
    np.testing.assert_allclose(emb[0], weights, **TOL)
    np.testing.assert_array_equal(pos[0], frames)
    np.testing.assert_array_equal(mask[0], np.asarray(frames) >= 0)
    np.testing.assert_array_equal(emb, want_emb)   # dyadic weights: the same numbers to the bit
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(pos, want_pos)


def test_closed_form_cif_inference_equals_the_scan_with_the_tail_and_padding():
    # A (length 2): 0.75 + 0.75 fires at frame 1, residual 0.5 + tail 0.5 = 1 fires exactly at the tail
    # frame (position 2); B (length 3): residual 0.25 + 0.5 < 1, no tail token; C (length 1): 0.5 + tail
    # fires at the tail (position 1). Padded frames carry garbage alpha and hidden states.
    alpha = jnp.array([[0.75, 0.75, 0.875, 0.5], [0.5, 0.25, 0.5, 0.0], [0.5, 0.75, 0.75, 0.75]])
    hidden = jax.random.normal(jax.random.key(3), (3, 4, 5))
    hidden = hidden.at[0, 2:].set(100.0).at[2, 1:].set(-50.0)
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], jnp.float32)
    closed = [np.asarray(x) for x in closed_infer(hidden, alpha, mask, max_tokens=3, tail_threshold=0.5)]
    scan = [np.asarray(x) for x in scan_infer(hidden, alpha, mask, max_tokens=3, tail_threshold=0.5)]
    emb, token_mask, num, pos = closed
    np.testing.assert_array_equal(num, [2, 1, 1])
    np.testing.assert_array_equal(pos, [[1, 2, -1], [2, -1, -1], [1, -1, -1]])
    np.testing.assert_array_equal(token_mask, pos >= 0)
    h = np.asarray(hidden)
    np.testing.assert_allclose(emb[0, 1], 0.5 * h[0, 1], **TOL)          # the residual; the tail adds zeros
    np.testing.assert_allclose(emb[2, 0], 0.5 * h[2, 0], **TOL)
    for got, want in zip(closed, scan):
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_cif_equals_the_scan_on_random_weights(seed):
    """Sigmoid-like weights in (0, 1) over padded utterances: the same fires and counts, the same
    embeddings to float32 rounding (the scan sums a remainder below 1, the closed form cumulative
    sums up to ~50, so a token's weights differ by a few ulp of 50, 4e-6 each, times |h| up to 4)."""
    batch, time, dim, max_tokens = 6, 90, 8, 64
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    lengths = np.array([90, 77, 60, 41, 20, 5])
    valid = jnp.asarray(np.arange(time)[None, :] < lengths[:, None], jnp.float32)
    alpha = jax.random.uniform(k1, (batch, time)) * valid
    alpha = jnp.where(jax.random.uniform(k3, (batch, time)) < 0.1, 1.0, alpha) * valid   # some weights of 1
    hidden = jax.random.normal(k2, (batch, time, dim))
    (emb, mask, pos), (want_emb, want_mask, want_pos) = both_fires(alpha * valid, hidden, max_tokens)
    assert 0 < mask.sum(axis=1).min() and mask.sum(axis=1).max() < max_tokens
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(emb, want_emb, rtol=0, atol=1e-4)
    closed = [np.asarray(x) for x in closed_infer(hidden, alpha, valid, max_tokens=max_tokens)]
    scan = [np.asarray(x) for x in scan_infer(hidden, alpha, valid, max_tokens=max_tokens)]
    for i, (got, want) in enumerate(zip(closed, scan)):
        if i == 0:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        else:
            np.testing.assert_array_equal(got, want)


def test_closed_form_cif_refuses_a_threshold_other_than_one():
    with pytest.raises(ConfigError, match="threshold 1"):
        pexp.closed_form_cif_inference(jnp.zeros((1, 3, 2)), jnp.zeros((1, 3)), jnp.ones((1, 3)), 2, threshold=0.9)


def test_audio_length_is_one_past_the_last_nonzero_sample():
    wave = np.zeros((3, 10), np.float32)
    wave[0, [0, 3, 6]] = [0.5, -0.1, 1e-6]
    wave[1, :] = 0.2
    got = np.asarray(pexp.audio_length(jnp.asarray(wave)))
    np.testing.assert_array_equal(got, [7, 10, 0])


def test_first_argmax_is_jnp_argmax_ties_included():
    x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (3, 7, 6)), jnp.float32)   # many ties
    np.testing.assert_array_equal(np.asarray(pexp.first_argmax(x)), np.asarray(jnp.argmax(x, axis=-1)))


# ----------------------------------------------------------------------------- a smoke-sized model

SAMPLE_RATE, SAMPLES = 16000, 24000   # 1.5 s of input
LENGTHS = (24000, 19100, 12345, 8000, 5000)   # the utterances; the rest of each input is zeros


def smoke_config():
    config = registry.load_config("paraformer", "smoke")
    config.data.tokens = SPECIALS + tuple("0123456789")
    rng = np.random.default_rng(0)   # what finalize would measure: fbank of int16-scaled audio
    config.data.cmvn_mean = tuple(float(v) for v in 12.0 + rng.uniform(-1, 1, 80))
    config.data.cmvn_std = tuple(float(v) for v in 3.0 + rng.uniform(0, 1, 80))
    return config


def utterances(lengths, seed):
    """Noise with a syllable-rate envelope and a few harmonics, zero past each length."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / SAMPLE_RATE
    out = np.zeros((len(lengths), SAMPLES), np.float32)
    for i, n in enumerate(lengths):
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6))
        pitch = rng.uniform(100, 250)
        voiced = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 6))
        wave = envelope * (0.1 * voiced + 0.05 * rng.standard_normal(SAMPLES)) * rng.uniform(0.3, 1.0)
        out[i, :n] = wave[:n]
    return out


@pytest.fixture(scope="module")
def smoke():
    config = smoke_config()
    model = paraformer_model.Paraformer(paraformer_system.model_config(config), rngs=nnx.Rngs(0))
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    waves = utterances(LENGTHS, seed=1)

    def build(export):
        return InferenceModel(
            name="paraformer_smoke", fn=pexp.forward(config, graphdef, export=export),
            variables={"params": params, "model_state": model_state}, input_shape=(SAMPLES,),
            outputs=pexp.declared_outputs(config.data.tokens), primary_metric="cer", higher_is_better=False,
            sample_rate=SAMPLE_RATE, calibration=lambda n: utterances(LENGTHS[::-1][:n], seed=2),
            **pexp.INT8_OPTIONS)

    exported, training_graph = build(True), build(False)
    return {"config": config, "model": exported, "training_graph": training_graph, "waves": waves,
            "jax": exported.predict(waves)}


def test_export_graph_decodes_as_the_training_graph_in_jax(smoke):
    got, want = smoke["jax"], smoke["training_graph"].predict(smoke["waves"])
    lengths = got[pexp.TOKEN_LEN]
    assert lengths.min() >= 2 and lengths.max() < smoke["config"].data.max_tokens   # tokens fire, none dropped
    assert len(set(lengths.tolist())) > 1                                          # the lengths were read
    for name in (pexp.TOKENS, pexp.TOKEN_LEN, pexp.FIRE_FRAMES):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # The input length does not change the decode: the same utterances padded to twice the length.
    longer = dataclasses.replace(smoke["model"], input_shape=(2 * SAMPLES,))
    padded = longer.predict(np.pad(smoke["waves"], ((0, 0), (0, SAMPLES))))
    for name in (pexp.TOKENS, pexp.TOKEN_LEN, pexp.FIRE_FRAMES):
        np.testing.assert_array_equal(padded[name], got[name], err_msg=name)


@pytest.fixture(scope="module")
def float32(smoke):
    from jaxaudio.export.tflite import convert

    return convert(smoke["model"], "float32")


def test_float32_tflite_gives_jax_token_ids_fire_frames_and_counts(smoke, float32):
    from jaxaudio.export.report import model_facts
    from jaxaudio.export.tflite import signature
    from jaxaudio.export.verify import run_tflite

    sig = signature(float32)
    assert sorted(sig["outputs"]) == sorted([pexp.TOKENS, pexp.TOKEN_LEN, pexp.FIRE_FRAMES])
    facts = model_facts(float32)
    assert facts["builtin_only"] and facts["loop_body_ops"] == 0, facts["ops"]   # no WHILE: the closed-form CIF
    assert "CUMSUM" in facts["ops"] and "WHILE" not in facts["ops"]
    got = run_tflite(float32, smoke["waves"])
    for name in (pexp.TOKENS, pexp.TOKEN_LEN, pexp.FIRE_FRAMES):
        assert got[name].dtype == np.int32, name
        np.testing.assert_array_equal(got[name], smoke["jax"][name], err_msg=name)


def test_float16_decodes_as_jax(smoke):
    """Float16 weights (dequantized at load) with the empty token slots filled: a LayerNorm of a zero
    slot would divide by sqrt(1e-12), a constant float16 stores as 0, and its NaN would reach every
    slot through the attention (``fill_empty_slots``)."""
    from jaxaudio.export.tflite import convert
    from jaxaudio.export.verify import run_tflite

    got = run_tflite(convert(smoke["model"], "float16"), smoke["waves"])
    np.testing.assert_array_equal(got[pexp.TOKEN_LEN], smoke["jax"][pexp.TOKEN_LEN])
    valid = np.arange(got[pexp.TOKENS].shape[1])[None, :] < got[pexp.TOKEN_LEN][:, None]
    assert np.mean((got[pexp.TOKENS] == smoke["jax"][pexp.TOKENS])[valid]) > 0.9   # without the fill: 0


def test_verification_scores_cer_and_compares_the_integer_outputs_exactly(smoke, float32):
    """``verify`` with an ASR score: references are JAX's own decodes with one utterance's last token
    dropped, so JAX and float32 both score the same nonzero CER; token counts and fire frames are
    compared by exact match."""
    from jaxaudio.evaluators.asr import hypotheses, score_texts
    from jaxaudio.export.model import HeldOut
    from jaxaudio.export.verify import verify

    decode = lambda ids: "".join(smoke["config"].data.tokens[i] for i in ids if i >= len(SPECIALS))  # noqa: E731
    refs = hypotheses(smoke["jax"], decode)
    refs[0] = refs[0][:-1] or "0"
    ids = tuple(f"utt{i}" for i in range(len(refs)))
    held = HeldOut(smoke["waves"], ids, lambda outputs: score_texts(refs, hypotheses(outputs, decode)))
    model = dataclasses.replace(smoke["model"], held_out=lambda n: held)
    result = verify(model, {"float32": float32})
    assert 0 < result["jax"]["cer"] < 0.5
    row = result["variants"]["float32"]
    assert row["metrics"]["cer"] == result["jax"]["cer"] and row["metric_deltas"]["cer"] == 0.0
    assert row["agreement"] == 1.0
    assert row["outputs"][pexp.TOKEN_LEN] == {"exact_match": 1.0, "value_agreement": 1.0}
    assert row["outputs"][pexp.TOKENS] == {"exact_match": 1.0, "token_agreement": 1.0}


def int8_ranges(model_bytes):
    """The widest range an int8 tensor can hold (255 * scale), and ``{op: input dtypes}`` of the
    CIF's cumulative sum and the reductions of the head's argmax."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    widest = max(255.0 * float(np.max(d["quantization_parameters"]["scales"]))
                 for d in tensors.values() if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]))
    inputs = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CUMSUM", "REDUCE_MAX", "ARG_MAX") and op["inputs"][0] in tensors:
            inputs.setdefault(op["op_name"], set()).add(tensors[op["inputs"][0]]["dtype"])
    return widest, inputs


def test_int8_converts_runs_and_keeps_the_mask_fill_cif_and_head_in_float(smoke):
    from jaxaudio.export.report import model_facts
    from jaxaudio.export.tflite import convert
    from jaxaudio.export.verify import run_tflite

    model = smoke["model"]
    calibration = model.calibration(4)
    int8 = convert(model, "int8", calibration)
    facts = model_facts(int8)
    assert facts["builtin_only"] and facts["int8_ops"] > facts["op_count"] // 2, facts
    widest, inputs = int8_ranges(int8)
    assert widest <= 2 * pexp.FLOAT_RANGE_LIMIT       # the attention's lowest-float fill stayed float
    # the CIF's cumulative sum and the head's argmax (a max, then the first index reaching it) read float
    assert inputs["CUMSUM"] == {np.float32} and np.float32 in inputs["REDUCE_MAX"] and "ARG_MAX" not in inputs
    assert np.int8 not in inputs["REDUCE_MAX"]
    got = run_tflite(int8, smoke["waves"])
    assert got[pexp.TOKENS].shape == smoke["jax"][pexp.TOKENS].shape
    assert (got[pexp.TOKEN_LEN] > 0).all()
    # Without the range rule the fill's SELECT is int8, one scale for -3.4e38 and the logits.
    unguarded = convert(dataclasses.replace(model, float_range_limit=None), "int8", calibration)
    assert int8_ranges(unguarded)[0] > 1e30


# ----------------------------------------------------------------------------- --mode=export end to end

@pytest.mark.slow
def test_export_mode_reports_cer_on_the_test_voices(trained, tmp_path):
    from experiments import run

    system, config, workdir, final = trained("paraformer")
    out = str(tmp_path / "export")
    argv = ["--exp=paraformer", "--mode=export", "--workdir", workdir, "--formats", "float32,int8", "--out", out,
            "--calibration-clips", "8", "--threads", "1", "--runs", "2"]
    assert run.main(argv) == 0
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    test = system.evaluators(config)["test"].source
    assert report["verify_examples"] == len(test)
    assert [o["name"] for o in report["outputs"]] == [pexp.TOKENS, pexp.TOKEN_LEN, pexp.FIRE_FRAMES]
    assert report["primary_metric"] == "cer" and report["higher_is_better"] is False
    # JAX's export graph on every test utterance scores the run's own final test CER
    assert report["jax_metrics"]["cer"] == pytest.approx(final["test/student/cer"], abs=1e-9)
    f32 = report["variants"]["float32"]["verify"]
    assert f32["metric_deltas"]["cer"] == 0.0 and f32["agreement"] == 1.0
    assert report["variants"]["int8"]["verify"]["metrics"]["cer"] >= 0.0
    assert report["variants"]["int8"]["builtin_only"]
