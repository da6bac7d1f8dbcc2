"""How much do float16 / int8 TFLite variants of a trained model cost in accuracy, and what do
they save in size, latency and memory? Every figure is next to the float32 variant (and the
primary metric next to the JAX model) measured in the same run.

    python benchmarks/export.py --workdir /tmp/crnn_tiny2        # a trained workdir
    python benchmarks/export.py --workdir W --eval-clips 50 --threads 1,2

The model comes from a ``build(workdir) -> InferenceModel`` callable (``main(argv, build=...)``);
by default ``build_from_workdir``: the workdir's config.json names the experiment, whose System
builds the export form of its trained model (as ``experiments/run.py --mode=export`` does).

Needs the 'export' extra (tensorflow-cpu, ai-edge-litert). Writes benchmarks/results/export.json
and export.md (the deployment report plus ratios to float32); conversion time is reported apart
from run time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxaudio.errors import ConfigError, JaxAudioError  # noqa: E402
from jaxaudio.export import FORMATS, InferenceModel, export_workdir  # noqa: E402
from jaxaudio.export.report import to_markdown  # noqa: E402


def build_from_workdir(workdir: str) -> InferenceModel:
    """The trained model of ``workdir`` in its export form, built by the experiment that trained
    it (``workdir/config.json``): the same path as ``experiments/run.py --mode=export``."""
    from experiments import registry
    from jaxaudio.train import run_record

    name, _preset, config = run_record.load(workdir)
    system = registry.load(name)
    if system.inference_model is None:
        raise ConfigError(f"{system.name} cannot be exported: its System has no inference_model")
    return system.inference_model(config, workdir, export=True)


def ratios(report: dict) -> dict:
    base = report["variants"]["float32"]
    out = {}
    for fmt, v in report["variants"].items():
        out[fmt] = {
            "size_vs_float32": v["size_bytes"] / base["size_bytes"],
            "p50_1t_vs_float32": v["latency"][0]["p50_ms"] / base["latency"][0]["p50_ms"],
            "rss_vs_float32": v["latency"][0]["peak_rss_mib"] / base["latency"][0]["peak_rss_mib"],
            "metric_delta_vs_jax": v["verify"]["metric_deltas"][report["primary_metric"]],
            "convert_seconds": v["convert_seconds"],
        }
    return out


def main(argv=None, build: Optional[Callable[[str], InferenceModel]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--calibration-clips", type=int, default=32)
    parser.add_argument("--eval-clips", type=int, default=0)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--name", default="export", help="results file stem")
    args = parser.parse_args(argv)
    try:
        model = (build or build_from_workdir)(args.workdir)
        report = export_workdir(model, os.path.join(args.workdir, "export"), args.formats,
                                calibration_clips=args.calibration_clips, eval_clips=args.eval_clips,
                                threads=[int(t) for t in args.threads.split(",")], runs=args.runs)
    except JaxAudioError as err:  # a workdir that is not a finished run, an unknown experiment, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["ratios_vs_float32"] = ratios(report)
    metric = report["primary_metric"]
    print(f"{'variant':14s} {'MB':>6s} {'x f32':>6s} {'p50 ms':>7s} {'x f32':>6s} {'RSS MiB':>8s} "
          f"{metric[:10]:>10s} {'d vs JAX':>8s} {'max|d|':>8s} {'agree':>6s} {'convert s':>9s}")
    for fmt, v in report["variants"].items():
        r = report["ratios_vs_float32"][fmt]
        print(f"{fmt:14s} {v['size_bytes'] / 1e6:6.2f} {r['size_vs_float32']:6.2f} {v['latency'][0]['p50_ms']:7.1f} "
              f"{r['p50_1t_vs_float32']:6.2f} {v['latency'][0]['peak_rss_mib']:8.1f} "
              f"{v['verify']['metrics'][metric]:10.4f} {r['metric_delta_vs_jax']:+8.4f} "
              f"{v['verify']['max_abs']:8.2e} {v['verify']['agreement']:6.4f} {r['convert_seconds']:9.1f}")
    print(f"JAX {metric} {report['jax_metrics'][metric]:.4f} on {report['verify_examples']} examples")
    print(report["recommendation"])
    results = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, f"{args.name}.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    with open(os.path.join(results, f"{args.name}.md"), "w") as f:
        f.write(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
