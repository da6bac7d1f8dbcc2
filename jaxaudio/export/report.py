"""Deployment report: size, ops, latency, peak memory, per-output parity and metric per variant, plus advice.

Latency and memory are measured in a separate process (``measure.py``) that imports only the
LiteRT runtime, so JAX/TensorFlow in this process do not inflate the memory figure; the
runtime's own footprint is measured the same way with no model and reported as the baseline.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from jaxaudio.errors import ExportError
from jaxaudio.io import paths
from jaxaudio.export.tflite import require_toolchain

_MEASURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measure.py")


def model_facts(model_bytes: bytes) -> dict:
    """Ops used (with counts), whether all are builtin, and how many run on int8 inputs."""
    _, Interpreter = require_toolchain()
    interpreter = Interpreter(model_content=model_bytes)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    counts, int8_ops, total = {}, 0, 0
    for op in interpreter._get_ops_details():  # the public API lists tensors, not ops
        name = op["op_name"]
        counts[name] = counts.get(name, 0) + 1
        total += 1
        inputs = [tensors[i] for i in op["inputs"] if i >= 0 and i in tensors]
        if inputs and inputs[0]["dtype"] == np.int8:
            int8_ops += 1
    custom = sorted(name for name in counts if name.startswith("Flex") or name in ("CUSTOM", "DELEGATE"))
    return {"size_bytes": len(model_bytes), "ops": dict(sorted(counts.items())), "op_count": total,
            "int8_ops": int8_ops, "loop_body_ops": _loop_body_ops(model_bytes), "builtin_only": not custom,
            "non_builtin_ops": custom}


def _loop_body_ops(model_bytes: bytes) -> int:
    """Ops in subgraphs other than the main one (WHILE conditions and bodies), which the
    interpreter's op list leaves out."""
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    return sum(len(graph.operators or []) for graph in flat.subgraphs[1:])


def measure(path: str, threads: int, runs: int, warmup: int = 3) -> dict:
    """Latency p50/p95 (ms) and peak RSS (MiB) of a child process running ``path`` ('-': none)."""
    proc = subprocess.run([sys.executable, _MEASURE, path, str(threads), str(runs), str(warmup)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise ExportError(f"{path}: the measuring process failed: {proc.stderr.strip().splitlines()[-1:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    out = {"threads": threads, "peak_rss_mib": raw["peak_rss_kb"] / 1024.0}
    if "latency_ms" in raw:
        lat = np.asarray(raw["latency_ms"])
        out.update(p50_ms=float(np.percentile(lat, 50)), p95_ms=float(np.percentile(lat, 95)), runs=len(lat),
                   first_run_ms=raw["first_run_seconds"] * 1e3, load_ms=raw["load_seconds"] * 1e3)
    return out


def recommend(variants: dict, metric: str, tolerance: float = 0.02, jax_value: float | None = None,
              higher_is_better: bool = True) -> str:
    """Smallest variant whose ``metric`` is no more than ``tolerance`` worse than JAX's; ties go to
    the faster one. ``higher_is_better`` False for error rates (CER, WER)."""
    sign = 1.0 if higher_is_better else -1.0
    if jax_value is not None and higher_is_better and jax_value <= 0.0:
        return (f"No recommendation: the JAX model itself scores {metric} = {jax_value:.4f} on these examples, so "
                "the metric cannot tell the variants apart; train longer (or verify on more examples) first.")
    ok = [(v["size_bytes"], v["latency"][0]["p50_ms"], fmt) for fmt, v in variants.items()
          if v.get("verify") and sign * v["verify"]["metric_deltas"][metric] >= -tolerance]
    if not ok:
        return (f"No variant keeps {metric} within {tolerance} of the JAX model; ship float32 and investigate "
                "before using a smaller one.")
    size, p50, fmt = min(ok)
    ref = variants.get("float32")
    ratio = f", {size / ref['size_bytes']:.2f}x the float32 file" if ref else ""
    delta = variants[fmt]["verify"]["metric_deltas"][metric]
    return (f"Ship {fmt}: the smallest variant ({size / 1e6:.2f} MB{ratio}) whose {metric} stays within "
            f"{tolerance} of the JAX model ({delta:+.4f}); it runs in {p50:.2f} ms per example (p50, 1 thread).")


def _mb(n):
    return f"{n / 1e6:.2f}"


def _figure(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "-"


def to_markdown(report: dict) -> str:
    m = report["primary_metric"]
    rate = f" at {report['sample_rate']} Hz" if report.get("sample_rate") else ""
    shape = ", ".join(str(n) for n in [1, *report["input_shape"]])
    outputs = ", ".join(f"`{o['name']}` ({o['kind']}{', ' + str(len(o['labels'])) + ' labels' if o['labels'] else ''})"
                        for o in report["outputs"])
    lines = [f"# Deployment report: {report['name']}", "",
             f"Source: {report['source']}. Input: `{report['input_name']}` ({shape}) float32{rate}; "
             f"{report['params']:,} parameters. Outputs: {outputs}. Verified on {report['verify_examples']} "
             "held-out examples.", "",
             f"JAX {m}: {report['jax_metrics'][m]:.4f} ({'higher' if report['higher_is_better'] else 'lower'} is "
             f"better). Runtime baseline (LiteRT, no model): {report['runtime_baseline_rss_mib']:.1f} MiB peak RSS.",
             ""]
    threads = report["threads"]
    head = ["variant", "size MB", "x float32", "ops (int8)", "builtin", "max abs err", "agreement", m,
            f"d{m}"] + [f"p50/p95 ms @{t}t" for t in threads] + ["peak RSS MiB"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = report["variants"].get("float32", {}).get("size_bytes")
    for fmt, v in report["variants"].items():
        ver = v.get("verify", {})
        row = [fmt, _mb(v["size_bytes"]), f"{v['size_bytes'] / base:.2f}" if base else "-",
               f"{v['op_count']} ({v['int8_ops']})", "yes" if v["builtin_only"] else "NO",
               _figure(ver, "max_abs", ".2e"), _figure(ver, "agreement", ".4f"),
               _figure(ver.get("metrics", {}), m, ".4f"), _figure(ver.get("metric_deltas", {}), m, "+.4f")]
        row += [f"{lat['p50_ms']:.2f} / {lat['p95_ms']:.2f}" for lat in v["latency"]]
        row += [f"{max(lat['peak_rss_mib'] for lat in v['latency']):.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    others = report.get("report_metrics") or []
    if others:
        lines += ["", "Further metrics on the same examples (JAX first; d: variant - JAX):", "",
                  "| model | " + " | ".join(f"{k} | d{k}" for k in others) + " |", "|---|" + "---|---|" * len(others),
                  "| JAX | " + " | ".join(f"{_figure(report['jax_metrics'], k, '.4f')} | -" for k in others) + " |"]
        for fmt, v in report["variants"].items():
            ver = v.get("verify", {})
            cells = [f"{_figure(ver.get('metrics', {}), k, '.4f')} | {_figure(ver.get('metric_deltas', {}), k, '+.4f')}"
                     for k in others]
            lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
    lines += _references_markdown(report)
    lines += ["", "Per output (agreement: decisions at 0.5 for probabilities, exact sequences for token ids):", "",
              "| variant | output | max abs | mean abs | agreement |", "|---|---|---|---|---|"]
    for fmt, v in report["variants"].items():
        for name, row in v.get("verify", {}).get("outputs", {}).items():
            agree = row.get("decision_agreement", row.get("exact_match"))
            lines.append(f"| {fmt} | {name} | {_figure(row, 'max_abs', '.2e')} | {_figure(row, 'mean_abs', '.2e')} "
                         f"| {'-' if agree is None else format(agree, '.4f')} |")
    lines += ["", "Ops per variant:", ""]
    for fmt, v in report["variants"].items():
        body = f" (+{v['loop_body_ops']} ops in loop bodies, run once per step)" if v.get("loop_body_ops") else ""
        lines.append(f"- {fmt}: " + ", ".join(f"{k} x{n}" for k, n in v["ops"].items()) + body)
    lines += ["", f"**Recommendation.** {report['recommendation']}", ""]
    return "\n".join(lines)


def _comparison_row(model: str, fmt: str, params: int, facts: dict, metric: str) -> str:
    value = facts.get("verify", {}).get("metrics", {}).get(metric)
    cells = [model, fmt, f"{params:,}", _mb(facts["size_bytes"]), "-" if value is None else f"{value:.4f}"]
    cells += [f"{lat['p50_ms']:.2f}" for lat in facts["latency"]]
    cells += [f"{max(lat['peak_rss_mib'] for lat in facts['latency']):.1f}"]
    return "| " + " | ".join(cells) + " |"


def _references_markdown(report: dict) -> list[str]:
    """The variants beside the reference models (a student's teachers, float32), and for the int8
    variant (else the smallest) its size and 1-thread latency as fractions of each reference's."""
    refs = report.get("references") or []
    if not refs:
        return []
    m = report["primary_metric"]
    head = ["model", "variant", "parameters", "size MB", m] + [f"p50 ms @{t}t" for t in report["threads"]] + \
        ["peak RSS MiB"]
    counts = ", ".join(str(ref["verify_examples"]) for ref in refs)
    lines = ["", f"Against the reference models (float32, timed the same way; held-out examples: "
             f"{report['verify_examples']} here, {counts} for the references):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fmt, v in report["variants"].items():
        lines.append(_comparison_row(report["name"], fmt, report["params"], v, m))
    for ref in refs:
        for fmt, v in ref["variants"].items():
            lines.append(_comparison_row(ref["name"], fmt, ref["params"], v, m))
    variants = report["variants"]
    fmt = "int8" if "int8" in variants else min(variants, key=lambda k: variants[k]["size_bytes"])
    ours = variants[fmt]
    lines.append("")
    for ref in refs:
        r = ref["variants"]["float32"]
        size = ours["size_bytes"] / r["size_bytes"]
        latency = ours["latency"][0]["p50_ms"] / r["latency"][0]["p50_ms"]
        a, b = ours["verify"]["metrics"][m], r["verify"]["metrics"][m]
        lines.append(f"- {report['name']} {fmt} vs {ref['name']} float32: {size:.3f}x the size, {latency:.2f}x the "
                     f"latency (1 thread, p50), {m} {a:.4f} vs {b:.4f} ({a - b:+.4f}).")
    return lines


def write(report: dict, out_dir: str) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    with paths.open_atomic(json_path) as f:
        json.dump(report, f, indent=2, default=float)
    with paths.open_atomic(md_path) as f:
        f.write(to_markdown(report))
    return json_path, md_path
