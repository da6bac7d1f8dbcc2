"""TFLite export of trained workdirs: float32, float16, int8_dynamic and int8 (float front end),
verified in the LiteRT interpreter and summarised in a deployment report.

    python -m jaxaudio.export --workdir W --formats float32,float16,int8_dynamic,int8

An experiment takes part by providing ``inference_model(config, workdir) -> InferenceModel``
in its runner module or in a sibling ``<runner>_inference`` module (see ``model.py``).
"""
from __future__ import annotations

import importlib
import json
import os
import time
from typing import Iterable, Sequence

from jaxaudio.errors import CheckpointError, ExportError
from jaxaudio.export.model import HeldOut, InferenceModel
from jaxaudio.export.tflite import FORMATS, parse_formats

__all__ = ["FORMATS", "HeldOut", "InferenceModel", "export_model", "export_workdir", "load_inference_model",
           "parse_formats", "find_hook"]


def find_hook(experiment: str):
    """The experiment's ``inference_model`` function, found through the experiment registry."""
    try:
        from experiments import configs as registry
    except ImportError as err:
        raise ExportError("the experiments package is not importable; run from the repository root") from err
    if experiment not in registry.EXPERIMENTS:
        raise ExportError(f"experiment {experiment!r} is not registered; known: {', '.join(sorted(registry.EXPERIMENTS))}")
    runner = registry.EXPERIMENTS[experiment][1]
    for module_name in (runner + "_inference", runner):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        if hasattr(module, "inference_model"):
            return module.inference_model
    raise ExportError(f"experiment {experiment!r} cannot be exported: neither {runner} nor {runner}_inference "
                      "defines inference_model(config, workdir)")


def load_inference_model(workdir: str) -> InferenceModel:
    """Rebuild the trained model of ``workdir`` from its config.json and latest checkpoint."""
    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing; {workdir} is not a training workdir (experiments/run.py writes it)")
    with open(path) as f:
        saved = json.load(f)
    config = ml_collections.ConfigDict(saved["config"])
    return find_hook(saved["exp"])(config, workdir)


def export_model(model: InferenceModel, formats: Sequence[str], out_dir: str, *,
                 calibration_clips: int = 32) -> dict[str, dict]:
    """Convert ``model`` to each format and write ``<out_dir>/<name>_<fmt>.tflite``.

    Returns ``{fmt: {"path", "bytes", "convert_seconds"}}``.
    """
    from jaxaudio.export.tflite import convert

    formats = parse_formats(formats)
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


def export_workdir(workdir: str, formats: str | Iterable[str] = FORMATS, out_dir: str | None = None, *,
                   calibration_clips: int = 32, eval_clips: int = 0, threads: Sequence[int] = (1, 2),
                   runs: int = 20, log=print) -> dict:
    """Export, verify, measure and write report.{json,md}; returns the report dict."""
    from jaxaudio.export import report as reporting
    from jaxaudio.export.verify import verify

    formats = parse_formats(formats)
    out_dir = out_dir or os.path.join(workdir, "export")
    model = load_inference_model(workdir)
    log(f"{model.name}: {model.n_params:,} parameters from {model.source}")
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
        log(f"  {fmt}: max |dp| {facts['verify']['max_abs']:.2e}, {model.metric} "
            f"{facts['verify']['metrics'][model.metric]:.4f} (JAX {checks['jax'][model.metric]:.4f}), "
            f"p50 {facts['latency'][0]['p50_ms']:.1f} ms")
    result = {
        "experiment": model.name, "source": model.source, "params": model.n_params,
        "sample_rate": model.sample_rate, "clip_samples": model.clip_samples, "class_names": list(model.class_names),
        "metric": model.metric, "verify_clips": checks["clips"], "jax_metrics": checks["jax"],
        "threads": list(threads), "runtime_baseline_rss_mib": reporting.measure("-", 1, 0)["peak_rss_mib"],
        "variants": variants,
    }
    result["recommendation"] = reporting.recommend(variants, model.metric, jax_value=checks["jax"][model.metric])
    result["report_paths"] = list(reporting.write(result, out_dir))
    return result
