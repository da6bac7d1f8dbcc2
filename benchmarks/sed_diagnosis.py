"""Why a tiny SED run scores what it scores, from finished runs of ``benchmarks/sed_ablations.py``
(no training): the final teacher's validation PSDS under other post-processing (weak soft mask
and temperature off), and how much of the context network's input each encoder branch carries
(RMS, and the spread over time that localisation needs).

    python benchmarks/sed_diagnosis.py --root /tmp/sed_runs matsed_seed0 pmam_seed0

Writes ``benchmarks/results/sed_diagnosis.{json,md}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import registry  # noqa: E402
from experiments.pmam.model import frontend_config, mel_frames  # noqa: E402
from experiments.sed import task  # noqa: E402
from jaxaudio.train import run_record  # noqa: E402
from jaxaudio.train.trainer import Trainer  # noqa: E402

POST_PROCESSING = {"run's settings": {}, "no weak mask": {"weak_mask": False}, "temperature 1": {"temperature": 1.0}}
METRICS = ("psds1", "psds2", "frame_auc")


def final_teacher(workdir: str):
    """(system, config, graphdef, state, shardings) of a finished run, restored once: the weights do
    not depend on the post-processing settings."""
    exp, _, config = run_record.load(workdir)
    system = registry.load(exp)
    graphdef, state, shardings = Trainer(system, config, workdir).model_of(system.final_stage(config))
    return system, config, graphdef, state, shardings


def post_processing(workdir: str, system, config, graphdef, state, shardings) -> dict:
    out = {}
    teacher = state.teacher
    for name, edit in POST_PROCESSING.items():
        c = copy.deepcopy(config)
        for key, value in edit.items():
            c.eval[key] = value
        predict = Trainer(system, c, workdir).predict_step(graphdef, shardings)
        metrics = system.evaluators(c)[c.eval.validation_split].run(
            lambda batch: predict(teacher["params"], teacher["model_state"], batch))
        out[name] = {k: float(metrics[k]) for k in METRICS}
    return out


def branches(config, graphdef, state, clips: int = 16) -> dict:
    """The encoder branches as the context network receives them (PMAM: PaSST and CNN; MAT-SED:
    PaSST only), on validation clips. The CNN part is the fused input less the PaSST part, so the
    model's own ``encode`` is the only place the branches are combined."""
    model = nnx.merge(graphdef, state.teacher["params"], state.teacher["model_state"])
    model.eval()
    source = task.SEDData(config, config.model.frames).split("validation")
    step = max(1, len(source) // clips)
    audio = jnp.asarray(np.stack([source[i]["audio"] for i in range(0, step * clips, step)]))
    enc = model.encode(mel_frames(audio, frontend_config(config), config.model.frames), train=False)
    passt = model.passt_proj(enc["passt_frames"]) if model.cfg.passt_proj else enc["passt_frames"]

    def describe(a):
        return {"rms": float(jnp.sqrt(jnp.mean(jnp.square(a)))), "std_over_time": float(jnp.mean(jnp.std(a, axis=1)))}

    out: dict = {"clips": clips, "passt": describe(passt)}
    if model.cfg.cnn is not None:
        out.update(fusion_weight=float(model.fusion_weight[...]), cnn=describe(enc["fused"] - passt))
    return out


def markdown(result: dict) -> str:
    lines = ["# SED diagnosis of finished tiny runs", "",
             "Final teacher, validation subset of the built-in set; no training.", "",
             "| run | post-processing | PSDS1 | PSDS2 | frame AUC |", "|---|---|---|---|---|"]
    for run, r in result["runs"].items():
        for name, m in r["post_processing"].items():
            lines.append(f"| {run} | {name} | {m['psds1']:.3f} | {m['psds2']:.3f} | {m['frame_auc']:.3f} |")
    lines += ["", "| run | branch | RMS | std over time |", "|---|---|---|---|"]
    for run, r in result["runs"].items():
        if "branches" in r:
            for branch in ("passt", "cnn"):
                if branch in r["branches"]:
                    b = r["branches"][branch]
                    scale = f" (x fusion weight {r['branches']['fusion_weight']:.2f})" if branch == "cnn" else ""
                    lines.append(f"| {run} | {branch}{scale} | {b['rms']:.3f} | {b['std_over_time']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="workdir names under --root")
    parser.add_argument("--root", default="workdirs/sed_ablations")
    args = parser.parse_args(argv)
    result = {"benchmark": "sed_diagnosis", "root": args.root, "runs": {}}
    for name in args.runs:
        workdir = os.path.join(args.root, name)
        system, config, graphdef, state, shardings = final_teacher(workdir)
        entry = {"post_processing": post_processing(workdir, system, config, graphdef, state, shardings),
                 "branches": branches(config, graphdef, state)}
        result["runs"][name] = entry
    out = os.path.join(ROOT, "benchmarks", "results", "sed_diagnosis")
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
