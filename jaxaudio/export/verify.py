"""Parity of exported variants with JAX, run in the LiteRT interpreter on held-out examples.

Every declared output is compared by name, read through the model's signature. Why each figure:
max/mean absolute error says how far a probability or score moved; the agreement of decisions at
0.5 (probability kinds) says how often a deployed detector or classifier would decide differently;
the exact-match rate (token ids, integers) says how often a decoded sequence (or a token count)
changed at all; the system's own metric (``HeldOut.score``: PSDS1, AUC, accuracy, CER ...) says
whether what the model is for survived.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from jaxaudio.errors import ExportError
from jaxaudio.export.model import (FLOAT_KINDS, INPUT_NAME, INTEGER_KINDS, PROBABILITY_KINDS, TOKEN_IDS, HeldOut,
                                   InferenceModel)
from jaxaudio.export.tflite import SIGNATURE_KEY, check_signature, require_toolchain


def run_tflite(model_bytes: bytes, inputs: np.ndarray, threads: Optional[int] = None) -> dict[str, np.ndarray]:
    """Run a ``(1, *input_shape)`` model one example at a time through its signature.

    Returns ``{output name: (n, ...) array}`` for every output of the signature.
    """
    _, Interpreter = require_toolchain()
    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    if SIGNATURE_KEY not in interpreter.get_signature_list():
        raise ExportError(f"the model has no {SIGNATURE_KEY!r} signature (signatures: "
                          f"{list(interpreter.get_signature_list())}); export it with jaxaudio.export")
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    rows: dict[str, list[np.ndarray]] = {}
    for example in inputs:
        out = runner(**{INPUT_NAME: np.asarray(example, np.float32)[None]})
        for name, value in out.items():
            rows.setdefault(name, []).append(np.array(value[0]))
    return {name: np.stack(values) for name, values in rows.items()}


def compare(model: InferenceModel, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
            threshold: float = 0.5) -> dict:
    """Errors of ``candidate`` against ``reference``, per declared output.

    ``{"outputs": {name: {max_abs, mean_abs[, decision_agreement][, exact_match, token_agreement (token ids)
    or value_agreement (integers)]}},
    "max_abs": worst max_abs over float outputs, "agreement": worst decision agreement or exact-match
    rate over all outputs (1.0 when no output has one)}``.
    """
    per_output = {}
    for out in model.outputs:
        want, got = np.asarray(reference[out.name]), np.asarray(candidate[out.name])
        if want.shape != got.shape:
            raise ExportError(f"{model.name}: output {out.name!r} has shape {got.shape} in TFLite but {want.shape} "
                              "in JAX")
        row = {}
        if out.kind in FLOAT_KINDS:
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            row["max_abs"] = float(diff.max()) if diff.size else 0.0
            row["mean_abs"] = float(diff.mean()) if diff.size else 0.0
        if out.kind in PROBABILITY_KINDS:
            row["decision_agreement"] = float(np.mean((got > threshold) == (want > threshold)))
        if out.kind in INTEGER_KINDS:
            same = got == want
            row["exact_match"] = float(np.mean(same.reshape(len(same), -1).all(axis=1)))
            row["token_agreement" if out.kind == TOKEN_IDS else "value_agreement"] = float(np.mean(same))
        per_output[out.name] = row
    max_abs = [row["max_abs"] for row in per_output.values() if "max_abs" in row]
    agreement = [row[key] for row in per_output.values() for key in ("decision_agreement", "exact_match")
                 if key in row]
    return {"outputs": per_output, "max_abs": max(max_abs, default=0.0), "agreement": min(agreement, default=1.0)}


def _score(model: InferenceModel, held: HeldOut, outputs: dict[str, np.ndarray], where: str) -> dict[str, float]:
    metrics = held.score({name: outputs[name] for name in model.output_names})
    if not isinstance(metrics, dict) or model.primary_metric not in metrics:
        keys = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise ExportError(f"{model.name}: HeldOut.score on the {where} outputs gave {keys}; expected a dict with "
                          f"the primary metric {model.primary_metric!r}")
    return {key: float(value) for key, value in metrics.items()}


def verify(model: InferenceModel, variants: dict[str, bytes], max_examples: int = 0) -> dict:
    """Run JAX and each variant on the held-out examples, compare by name, and score.

    Returns ``{"examples", "jax": {metric: value}, "variants": {fmt: {"outputs", "max_abs",
    "agreement", "metrics", "metric_deltas": {metric: variant - JAX}}}}``.
    """
    if model.held_out is None:
        raise ExportError(f"{model.name}: no held-out data (InferenceModel.held_out) to verify on")
    held = model.held_out(max_examples)
    inputs = np.asarray(held.inputs, np.float32)
    if inputs.ndim < 1 or len(inputs) == 0 or inputs.shape[1:] != model.input_shape:
        raise ExportError(f"{model.name}: held-out inputs have shape {inputs.shape}; expected "
                          f"(n >= 1, {', '.join(map(str, model.input_shape))})")
    if len(held.ids) != len(inputs):
        raise ExportError(f"{model.name}: HeldOut has {len(held.ids)} ids for {len(inputs)} inputs")
    reference = model.predict(inputs)
    jax_metrics = _score(model, held, reference, "JAX")
    result = {"examples": len(inputs), "jax": jax_metrics, "variants": {}}
    for fmt, model_bytes in variants.items():
        check_signature(model, model_bytes, fmt)
        try:
            outputs = run_tflite(model_bytes, inputs)
        except (RuntimeError, ValueError) as err:
            raise ExportError(f"{model.name} ({fmt}): the LiteRT interpreter failed on a held-out example: {err}") \
                from err
        row = compare(model, reference, outputs)
        row["metrics"] = _score(model, held, outputs, fmt)
        row["metric_deltas"] = {key: row["metrics"][key] - jax_metrics[key] for key in jax_metrics
                                if key in row["metrics"]}
        result["variants"][fmt] = row
    return result
