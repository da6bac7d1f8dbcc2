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
from jaxaudio.models.pmam import _resize_to  # noqa: E402
from jaxaudio.train import run_record  # noqa: E402
from jaxaudio.train.trainer import Trainer  # noqa: E402

POST_PROCESSING = {"run's settings": {}, "no weak mask": {"weak_mask": False}, "temperature 1": {"temperature": 1.0}}
METRICS = ("psds1", "psds2", "frame_auc")


def post_processing(workdir: str) -> dict:
    exp, _, config = run_record.load(workdir)
    system = registry.load(exp)
    out = {}
    for name, edit in POST_PROCESSING.items():
        c = copy.deepcopy(config)
        for key, value in edit.items():
            c.eval[key] = value
        trainer = Trainer(system, c, workdir)
        graphdef, state, shardings = trainer.model_of(system.final_stage(c))
        predict = trainer.predict_step(graphdef, shardings)
        teacher = state.teacher
        metrics = system.evaluators(c)[c.eval.validation_split].run(
            lambda batch: predict(teacher["params"], teacher["model_state"], batch))
        out[name] = {k: float(metrics[k]) for k in METRICS}
    return out


def branches(workdir: str, clips: int = 16) -> dict:
    """The encoder branches as the context network receives them (PMAM: PaSST and CNN; MAT-SED:
    PaSST only), on validation clips."""
    exp, _, config = run_record.load(workdir)
    trainer = Trainer(registry.load(exp), config, workdir)
    graphdef, state, _ = trainer.model_of(registry.load(exp).final_stage(config))
    model = nnx.merge(graphdef, state.teacher["params"], state.teacher["model_state"])
    model.eval()
    source = task.SEDData(config, config.model.frames).split("validation")
    step = max(1, len(source) // clips)
    audio = jnp.asarray(np.stack([source[i]["audio"] for i in range(0, step * clips, step)]))
    mel = mel_frames(audio, frontend_config(config), config.model.frames)
    passt = model.encode(mel, train=False)["passt_frames"]
    passt = model.passt_proj(passt) if model.cfg.passt_proj else passt

    def describe(a):
        return {"rms": float(jnp.sqrt(jnp.mean(jnp.square(a)))), "std_over_time": float(jnp.mean(jnp.std(a, axis=1)))}

    out: dict = {"clips": clips, "passt": describe(passt)}
    if model.cfg.cnn is not None:
        cnn = model.fusion_weight[...] * model.cnn_proj(_resize_to(model.cnn(mel, train=False), model.cfg.pred_len))
        out.update(fusion_weight=float(model.fusion_weight[...]), cnn=describe(cnn))
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
        entry = {"post_processing": post_processing(workdir), "branches": branches(workdir)}
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
