"""Parity of exported variants with JAX, run in the LiteRT interpreter on held-out clips.

Why each figure: max/mean absolute error says how far probabilities moved; agreement of
frame decisions at 0.5 says how often a deployed detector would switch on/off differently;
the experiment's own metric (PSDS1 for SED) says whether the ranking of detections survived.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from jaxaudio.errors import ExportError
from jaxaudio.export.model import HeldOut, InferenceModel
from jaxaudio.export.tflite import require_toolchain


def run_tflite(model_bytes: bytes, waveforms: np.ndarray, threads: Optional[int] = None) -> dict[str, np.ndarray]:
    """Run a (1, samples) -> {strong (1, T, K), weak (1, K)} model clip by clip."""
    _, Interpreter = require_toolchain()
    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    # Outputs are told apart by rank: frame-level (3) and clip-level (2).
    outputs = {len(d["shape"]): d["index"] for d in interpreter.get_output_details()}
    strong, weak = [], []
    for wave in waveforms:
        interpreter.set_tensor(inp["index"], np.asarray(wave, np.float32)[None])
        interpreter.invoke()
        strong.append(interpreter.get_tensor(outputs[3])[0].copy())
        weak.append(interpreter.get_tensor(outputs[2])[0].copy())
    return {"strong": np.stack(strong), "weak": np.stack(weak)}


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], threshold: float = 0.5) -> dict:
    """Errors of ``candidate`` against ``reference`` probabilities (both {strong, weak})."""
    out = {}
    for key in ("strong", "weak"):
        diff = np.abs(candidate[key].astype(np.float64) - reference[key].astype(np.float64))
        out[f"{key}_max_abs"] = float(diff.max())
        out[f"{key}_mean_abs"] = float(diff.mean())
    out["max_abs"] = max(out["strong_max_abs"], out["weak_max_abs"])
    out["frame_agreement"] = float(np.mean((candidate["strong"] > threshold) == (reference["strong"] > threshold)))
    return out


def _scores(held: HeldOut, strong: np.ndarray) -> dict[str, np.ndarray]:
    return {clip: strong[i] for i, clip in enumerate(held.clip_ids)}


def verify(model: InferenceModel, variants: dict[str, bytes], max_clips: int = 0) -> dict:
    """{"clips", "jax": {metrics}, "variants": {fmt: {errors..., metrics}}} on the held-out clips."""
    if model.held_out is None:
        raise ValueError(f"{model.name}: no held-out data (InferenceModel.held_out) to verify on")
    held = model.held_out(max_clips)
    reference = model.predict(held.waveforms)
    result = {"clips": len(held.clip_ids), "jax": held.score(_scores(held, reference["strong"])), "variants": {}}
    for fmt, model_bytes in variants.items():
        try:
            outputs = run_tflite(model_bytes, held.waveforms)
        except RuntimeError as err:
            raise ExportError(f"{model.name} ({fmt}): the LiteRT interpreter failed on a held-out clip: {err}") from err
        row = compare(reference, outputs)
        row["metrics"] = held.score(_scores(held, outputs["strong"]))
        row[f"{model.metric}_delta"] = row["metrics"][model.metric] - result["jax"][model.metric]
        result["variants"][fmt] = row
    return result
