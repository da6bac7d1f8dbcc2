"""Does PMAM pre-training help? PSDS1 of the pre-trained model vs the same network fine-tuned
from scratch, at the same labelled budget, over several seeds.

    python benchmarks/pmam_ablation.py                      # tiny preset, seeds 0 1 2
    python benchmarks/pmam_ablation.py --seeds 0 1 2 --set pretrain.rounds=1 stages.finetune2.steps=400
    python benchmarks/pmam_ablation.py --dry-run            # each arm's stages and workdir, no training

Both arms run the PMAM System through the trainer (``jaxaudio.train.trainer.run``, as
``experiments/run.py --exp=pmam`` does) with the same config and seed; the baseline only sets
``pretrain.rounds=0`` (no prototypes, no masked-model training). The seed changes the
initialisation, the data order, the masks and the augmentations; the data set is the same. Each
run lives in its own workdir under ``--root`` and resumes or is skipped when started again, so
the benchmark can be stopped and continued. Writes ``benchmarks/results/pmam_ablation.json``
and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from experiments import registry  # noqa: E402
from experiments.overrides import apply_overrides  # noqa: E402
from jaxaudio.train import run_record, trainer  # noqa: E402

EXP = "pmam"

METRICS = ("validation/teacher/psds1", "validation/teacher/psds2", "eval/teacher/psds1", "eval/teacher/psds2",
           "validation/student/psds1", "eval/student/psds1")


def arm_config(arm: str, seed: int, args):
    """(config, workdir) of one arm and seed: the preset, the shared overrides, the seed, and
    for the baseline no pre-training rounds."""
    config = registry.load_config(EXP, args.preset)
    config = apply_overrides(config, dict(kv.split("=", 1) for kv in args.set))
    config.seed = seed
    if arm == "scratch":
        config.pretrain.rounds = 0
    return config, os.path.join(args.root, f"{arm}_seed{seed}")


def run_arm(arm: str, seed: int, args) -> dict:
    config, workdir = arm_config(arm, seed, args)
    started = time.time()
    run_record.save(workdir, EXP, args.preset, config)  # so the workdir exports and predicts like any run
    final = trainer.run(registry.load(EXP), config, workdir)
    return {"arm": arm, "seed": seed, "workdir": workdir, "rounds": config.pretrain.rounds,
            "seconds": time.time() - started, **{k: final[k] for k in METRICS}}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for arm in ("pretrained", "scratch"):
        picked = [r for r in rows if r["arm"] == arm]
        out[arm] = {k: {"mean": float(np.mean([r[k] for r in picked])),
                        "std": float(np.std([r[k] for r in picked], ddof=1)) if len(picked) > 1 else 0.0,
                        "values": [r[k] for r in picked]} for k in METRICS}
    seeds = sorted({r["seed"] for r in rows})
    key = "validation/teacher/psds1"
    diffs = [next(r[key] for r in rows if r["arm"] == "pretrained" and r["seed"] == s)
             - next(r[key] for r in rows if r["arm"] == "scratch" and r["seed"] == s) for s in seeds]
    out["paired_difference_val_psds1"] = {"values": diffs, "mean": float(np.mean(diffs)),
                                          "pretrained_better_in": int(sum(d > 0 for d in diffs)),
                                          "of": len(diffs)}
    return out


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"# PMAM pre-training ablation ({result['preset']} preset, seeds {result['seeds']})", "",
             f"Overrides: {result['overrides'] or 'none'}. Teacher model after fine-tuning stage 2; "
             "mean ± std over seeds (sample std).", "",
             "| arm | val PSDS1 | val PSDS2 | eval PSDS1 | eval PSDS2 | val PSDS1 (student) |",
             "|---|---|---|---|---|---|"]
    for arm in ("pretrained", "scratch"):
        cells = [f"{s[arm][k]['mean']:.3f} ± {s[arm][k]['std']:.3f}" for k in
                 ("validation/teacher/psds1", "validation/teacher/psds2", "eval/teacher/psds1", "eval/teacher/psds2",
                  "validation/student/psds1")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    d = s["paired_difference_val_psds1"]
    lines += ["", f"Paired difference in validation PSDS1 (pretrained − scratch) per seed: "
              f"{', '.join(f'{v:+.3f}' for v in d['values'])} (mean {d['mean']:+.3f}); "
              f"pre-training better in {d['pretrained_better_in']} of {d['of']} seeds.", ""]
    lines += ["| arm | seed | val PSDS1 | eval PSDS1 | minutes |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['validation/teacher/psds1']:.3f} | "
                     f"{r['eval/teacher/psds1']:.3f} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default="workdirs/pmam_ablation")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for both arms")
    parser.add_argument("--name", default="pmam_ablation", help="result file name under benchmarks/results/")
    parser.add_argument("--dry-run", action="store_true", help="print each run's stages and workdir; train nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        system = registry.load(EXP)
        for seed in args.seeds:
            for arm in ("pretrained", "scratch"):
                config, workdir = arm_config(arm, seed, args)
                names = [f"{stage.name} ({stage.steps} steps)" if stage.trains else stage.name
                         for stage in system.stages(config, workdir)]
                print(f"{arm} seed {seed}: {workdir}: {', '.join(names)}")
        return 0
    rows = []
    for seed in args.seeds:
        for arm in ("pretrained", "scratch"):
            rows.append(run_arm(arm, seed, args))
            print(f"{arm} seed {seed}: val PSDS1 {rows[-1]['validation/teacher/psds1']:.4f}", flush=True)
    result = {"benchmark": "pmam_ablation", "preset": args.preset, "seeds": args.seeds, "overrides": args.set,
              "runs": rows, "summary": summarise(rows)}
    out_dir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{args.name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(result)
    with open(os.path.join(out_dir, f"{args.name}.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
