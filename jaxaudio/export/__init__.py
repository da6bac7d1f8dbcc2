"""TFLite export of a trained model: float32, float16, int8_dynamic and int8 (float front end),
verified output by output in the LiteRT interpreter and summarised in a deployment report.

The caller builds the ``InferenceModel`` (``experiments/run.py --mode=export`` does it from a
workdir through the experiment's System) and hands it to ``export_workdir``; nothing here knows
which task the model solves or where its data lives.
"""
from __future__ import annotations

import os
import time
from typing import Iterable, Sequence

from jaxaudio.export.model import (ANOMALY_SCORE, CLASS_PROBS, CLIP_PROBS, FRAME_PROBS, INPUT_NAME, INTEGERS, KINDS,
                                   TOKEN_IDS, HeldOut, InferenceModel, Output)
from jaxaudio.export.tflite import FORMATS, parse_formats

__all__ = ["ANOMALY_SCORE", "CLASS_PROBS", "CLIP_PROBS", "FORMATS", "FRAME_PROBS", "INPUT_NAME", "INTEGERS", "KINDS",
           "TOKEN_IDS", "HeldOut", "InferenceModel", "Output", "export_model", "export_workdir", "parse_formats"]


def export_model(model: InferenceModel, formats: str | Iterable[str], out_dir: str, *,
                 calibration_clips: int = 32) -> dict[str, dict]:
    """Convert ``model`` to each format and write ``<out_dir>/<name>_<fmt>.tflite``.

    Returns ``{fmt: {"path", "bytes", "convert_seconds"}}``.
    """
    from jaxaudio.export.tflite import convert

    formats = parse_formats(formats)
    model.check_outputs()  # fail on a missing or undeclared output before any conversion
    calibration = None
    if "int8" in formats and model.calibration is not None:
        calibration = model.calibration(calibration_clips)
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for fmt in formats:
        started = time.perf_counter()
        data = convert(model, fmt, calibration)
        path = os.path.join(out_dir, f"{model.name}_{fmt}.tflite")
        with open(path, "wb") as f:
            f.write(data)
        written[fmt] = {"path": path, "bytes": data, "convert_seconds": time.perf_counter() - started}
    return written


def _describe(output) -> dict:
    row = {"name": output.name, "kind": output.kind, "labels": list(output.labels)}
    if output.frame_timestamps is not None:
        row["frames"] = output.frames
        row["frame_seconds"] = float(output.frame_timestamps[-1] - output.frame_timestamps[0]) / output.frames
    return row


def _exported_variants(model: InferenceModel, formats, out_dir: str, *, calibration_clips: int, eval_clips: int,
                       threads: Sequence[int], runs: int, log) -> tuple[dict, dict]:
    """Convert, verify and time each format of ``model``: ``(verify checks, {fmt: facts})``."""
    from jaxaudio.export import report as reporting
    from jaxaudio.export.verify import verify

    metric = model.primary_metric
    log(f"{model.name}: {model.n_params:,} parameters from {model.source or 'an unnamed source'}")
    written = export_model(model, formats, out_dir, calibration_clips=calibration_clips)
    for fmt, item in written.items():
        log(f"  {fmt}: {len(item['bytes']) / 1e6:.2f} MB in {item['convert_seconds']:.1f} s -> {item['path']}")
    checks = verify(model, {fmt: item["bytes"] for fmt, item in written.items()}, eval_clips)
    variants = {}
    for fmt, item in written.items():
        facts = reporting.model_facts(item["bytes"])
        facts["path"] = item["path"]
        facts["convert_seconds"] = item["convert_seconds"]
        facts["verify"] = checks["variants"][fmt]
        facts["latency"] = [reporting.measure(item["path"], t, runs) for t in threads]
        variants[fmt] = facts
        log(f"  {fmt}: max |d| {facts['verify']['max_abs']:.2e}, agreement {facts['verify']['agreement']:.4f}, "
            f"{metric} {facts['verify']['metrics'][metric]:.4f} (JAX {checks['jax'][metric]:.4f}), "
            f"p50 {facts['latency'][0]['p50_ms']:.2f} ms")
    return checks, variants


def export_workdir(model: InferenceModel, out_dir: str, formats: str | Iterable[str] = FORMATS, *,
                   calibration_clips: int = 32, eval_clips: int = 0, threads: Sequence[int] = (1, 2),
                   runs: int = 20, log=print) -> dict:
    """Export ``model`` to ``formats`` in ``out_dir``, verify every variant against JAX by output
    name on ``eval_clips`` held-out examples (0: all), time it at each thread count, and write
    ``out_dir/report.{json,md}``. Each of ``model.references`` (a student's teachers) is exported
    as float32 into ``out_dir/references/`` and measured the same way. Returns the report dict.
    """
    from jaxaudio.export import report as reporting

    formats = parse_formats(formats)
    metric = model.primary_metric
    options = dict(calibration_clips=calibration_clips, eval_clips=eval_clips, threads=threads, runs=runs, log=log)
    checks, variants = _exported_variants(model, formats, out_dir, **options)
    references = []
    for ref in model.references:
        ref_checks, ref_variants = _exported_variants(ref, ("float32",), os.path.join(out_dir, "references"),
                                                      **options)
        references.append({"name": ref.name, "source": ref.source, "params": ref.n_params,
                           "verify_examples": ref_checks["examples"], "jax_metrics": ref_checks["jax"],
                           "variants": ref_variants})
    result = {
        "name": model.name, "source": model.source, "params": model.n_params, "sample_rate": model.sample_rate,
        "input_name": INPUT_NAME, "input_shape": list(model.input_shape),
        "outputs": [_describe(o) for o in model.outputs],
        "primary_metric": metric, "higher_is_better": model.higher_is_better,
        "report_metrics": [m for m in model.report_metrics if m != metric],
        "verify_examples": checks["examples"], "jax_metrics": checks["jax"],
        "threads": list(threads), "runtime_baseline_rss_mib": reporting.measure("-", 1, 0)["peak_rss_mib"],
        "variants": variants, "references": references,
    }
    result["recommendation"] = reporting.recommend(variants, metric, jax_value=checks["jax"][metric],
                                                   higher_is_better=model.higher_is_better)
    result["report_paths"] = list(reporting.write(result, out_dir))
    return result
