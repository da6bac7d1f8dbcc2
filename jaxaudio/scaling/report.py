"""Write a study's JSON, Markdown table and PNG plots."""
from __future__ import annotations

import json

from jaxaudio.io import paths as io_paths
from jaxaudio.scaling import plots
from jaxaudio.scaling.hlo import KINDS

_SHORT = {"all-reduce": "AR", "all-gather": "AG", "reduce-scatter": "RS", "all-to-all": "A2A",
          "collective-permute": "CP"}


def markdown_table(result: dict) -> str:
    """One row per mesh: compiled figures, collective MB by kind, then predicted step ms / efficiency per chip."""
    chips = list(result["points"][0]["predicted"]) if result["points"] else []
    head = (["strategy", "n", "mesh (d,f,t)", "batch", "GFLOP/dev", "mem MB/dev"]
            + [f"{_SHORT[k]} MB" for k in KINDS] + ["measured ms", "MFU"]
            + [f"{c} ms (eff)" for c in chips])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in result["points"]:
        mesh = p["mesh"]
        row = [p["strategy"], str(p["devices"]), f"{mesh['data']},{mesh['fsdp']},{mesh['tensor']}",
               str(p["global_batch"]), f"{p['flops'] / 1e9:.2f}",
               f"{p['memory'].get('peak_estimate', 0) / 1e6:.1f}"]
        row += [f"{p['collective_bytes'][k] / 1e6:.2f}" for k in KINDS]
        row += [f"{p['measured_step_s'] * 1e3:.2f}" if p.get("measured_step_s") else "-",
                f"{p['measured_mfu']:.1%}" if p.get("measured_mfu") else "-"]
        row += [f"{p['predicted'][c]['step_s'] * 1e3:.3f} ({p['predicted'][c]['efficiency']:.2f})" for c in chips]
        lines.append("| " + " | ".join(row) + " |")
    notes = [
        "",
        f"Case `{result['case']}`, {result['per_device_batch']} samples per device (weak scaling); compiled with "
        f"jax {result['jax_version']} on {result['platform']} ({result['device_kind']}).",
        "Collective MB: payload per device per step from the optimized HLO (loop bodies x trip count; "
        "all-gather counts the gathered result, reduce-scatter its input). On CPU, XLA emits gradient "
        "reduce-scatters as all-reduce + slice, so FSDP rows show them under AR.",
        f"Predicted: max(compute at {result['mfu_assumption']:.0%} MFU, HBM floor) + ring-algorithm "
        "communication over one direction of the chip's interconnect (see jaxaudio/scaling/cost_model.py); "
        "eff = weak-scaling efficiency against the same strategy's smallest mesh.",
    ]
    if result.get("note"):
        notes.append(result["note"])
    if result.get("compiler_options"):
        notes.append(f"Compiled with XLA options {result['compiler_options']} (code generation only: the optimized "
                     "HLO, and so every figure above, is unchanged).")
    return "\n".join(lines + notes) + "\n"


def write(result: dict, out_dir: str, stem: str) -> dict[str, str]:
    """``<stem>.json``, ``<stem>.md``, ``<stem>.png`` (curves) and ``<stem>_collectives.png``;
    ``out_dir`` may be a ``gs://`` URL."""
    io_paths.makedirs(out_dir)
    paths = {ext: io_paths.join(out_dir, f"{stem}.{ext}") for ext in ("json", "md", "png")}
    paths["collectives_png"] = io_paths.join(out_dir, f"{stem}_collectives.png")
    clean = dict(result, points=[{k: v for k, v in p.items() if k != "hlo_text"} for p in result["points"]])
    io_paths.write_text_atomic(paths["json"], json.dumps(clean, indent=1))
    io_paths.write_text_atomic(paths["md"], markdown_table(result))
    with io_paths.open_atomic(paths["png"], binary=True) as f:
        plots.plot_scaling(result, f)
    with io_paths.open_atomic(paths["collectives_png"], binary=True) as f:
        plots.plot_collectives(result, f)
    return paths
