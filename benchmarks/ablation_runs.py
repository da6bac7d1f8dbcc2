"""What every ablation benchmark shares: arms as edits of a System's preset, one workdir per
(arm, seed) under a root, finished runs skipped and stopped ones resumed, and the summary
(mean ± sample std per arm, paired per-seed differences per comparison).

Why shared: the SED and ASD ablations ask the same kind of question (does this part of the
recipe help, over several seeds, on the same data), so they should answer it the same way.
A benchmark declares an ``Ablation`` and hands it to ``main``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Callable, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from experiments import registry  # noqa: E402
from jaxaudio.train import run_record, stages as stage_files, trainer  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Ablation:
    """arms: arm -> (experiment, edit of its preset config or None, the arm whose run of the same
    seed the edit needs or None; an edit with a needed arm is called ``edit(config, run_of)``);
    comparisons: (name, arm, baseline, what the paper claims); metrics: the final-evaluation keys
    a run reports; compared: those the comparisons difference; markdown(result) -> the report."""

    name: str
    arms: dict
    comparisons: tuple
    metrics: tuple[str, ...]
    compared: tuple[str, ...]
    markdown: Callable[[dict], str]
    default_root: str
    after_run: Optional[Callable[[str, str, object], dict]] = None   # (arm, workdir, config) -> extra row values


def workdir_of(root: str, arm: str, seed: int) -> str:
    return os.path.join(root, f"{arm}_seed{seed}")


def arm_config(ablation: Ablation, arm: str, seed: int, root: str, preset: str = "tiny"):
    exp, edit, needs = ablation.arms[arm]
    config = registry.load_config(exp, preset)
    if edit is not None:
        if needs is None:
            edit(config)
        else:
            edit(config, lambda other: workdir_of(root, other, seed))
    config.seed = seed
    return exp, config, workdir_of(root, arm, seed)


def run_arm(ablation: Ablation, arm: str, seed: int, root: str, preset: str) -> dict:
    """Train (or resume) one run; a finished run is read back, not trained again."""
    needs = ablation.arms[arm][2]
    if needs is not None:   # finished runs are skipped, so this only trains what is missing
        run_arm(ablation, needs, seed, root, preset)
    exp, config, workdir = arm_config(ablation, arm, seed, root, preset)
    if not stage_files.is_done(os.path.join(workdir, "evaluation")):
        system = registry.load(exp)
        if system.finalize_config is not None:
            system.finalize_config(config)
        run_record.save(workdir, exp, preset, config)
        started = time.time()
        trainer.run(system, config, workdir)
        print(f"{arm} seed {seed}: trained in {(time.time() - started) / 60:.1f} min", flush=True)
    (row,) = [r for r in finished_runs(ablation, root) if (r["arm"], r["seed"]) == (arm, seed)]
    return row


def finished_runs(ablation: Ablation, root: str) -> list[dict]:
    """Every finished run under ``root`` (its evaluation done), with its final metrics and time."""
    rows = []
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    for arm in ablation.arms:
        for name in names:
            if not name.startswith(f"{arm}_seed") or not name[len(arm) + 5:].isdigit():
                continue
            workdir = os.path.join(root, name)
            if not stage_files.is_done(os.path.join(workdir, "evaluation")):
                continue
            with open(os.path.join(workdir, "metrics.json")) as f:
                summary = json.load(f)
            row = {"arm": arm, "seed": int(name[len(arm) + 5:]),
                   "minutes": summary.get("total_wall_seconds", 0.0) / 60.0,
                   **{k: summary["final_eval"][k] for k in ablation.metrics}}
            if ablation.after_run is not None:
                row.update(ablation.after_run(arm, workdir, run_record.load(workdir)[2]))
            rows.append(row)
    return rows


def stats(values) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values], "n": len(values)}


def summarise(ablation: Ablation, rows: list[dict], metrics: Optional[tuple[str, ...]] = None) -> dict:
    """Per arm, mean ± std of ``metrics``; per comparison with a common seed, the paired differences."""
    metrics = metrics or ablation.metrics
    arms = {arm: {k: stats([r[k] for r in rows if r["arm"] == arm]) for k in metrics}
            for arm in ablation.arms if any(r["arm"] == arm for r in rows)}
    comparisons = []
    for name, arm, base, claim in ablation.comparisons:
        seeds = sorted({r["seed"] for r in rows if r["arm"] == arm} & {r["seed"] for r in rows if r["arm"] == base})
        if not seeds:
            continue
        entry = {"name": name, "arm": arm, "baseline": base, "claim": claim, "seeds": seeds}
        for k in ablation.compared:
            pick = {s: {r["arm"]: r[k] for r in rows if r["seed"] == s and r["arm"] in (arm, base)} for s in seeds}
            diffs = [pick[s][arm] - pick[s][base] for s in seeds]
            entry[k] = {"differences": diffs, "mean": float(np.mean(diffs)),
                        "better_in": int(sum(d > 0 for d in diffs))}
        comparisons.append(entry)
    return {"arms": arms, "comparisons": comparisons}


def with_earlier_runs(ablation: Ablation, rows: list[dict], path: str) -> list[dict]:
    """``rows`` plus the runs an earlier report at ``path`` holds that are not under the root any
    more (workdirs are scratch: a later session's root starts empty). A run found again under
    the root replaces its earlier row; each kept row says where it came from."""
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        earlier = json.load(f).get("runs", [])
    have = {(r["arm"], r["seed"]) for r in rows}
    kept = [{**r, "from": r.get("from", "earlier report")} for r in earlier
            if r["arm"] in ablation.arms and (r["arm"], r["seed"]) not in have]
    return sorted(rows + kept, key=lambda r: (list(ablation.arms).index(r["arm"]), r["seed"]))


EARLIER_NOTE = "† run recorded by an earlier report (its workdir is no longer under the root)."


def seed_cell(row: dict) -> str:
    """A run's seed for the per-run table, marked † when the row comes from an earlier report."""
    return f"{row['seed']}{' †' if 'from' in row else ''}"


def report(ablation: Ablation, root: str, preset: str, name: str, summary_metrics=None,
           keep_earlier: bool = True) -> dict:
    out_dir = os.path.join(ROOT, "benchmarks", "results")
    rows = finished_runs(ablation, root)
    if keep_earlier:
        rows = with_earlier_runs(ablation, rows, os.path.join(out_dir, f"{name}.json"))
    result = {"benchmark": ablation.name, "preset": preset, "root": root, "load_average": list(os.getloadavg()),
              "runs": rows, "summary": summarise(ablation, rows, summary_metrics)}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(ablation.markdown(result))
    return result


def main(ablation: Ablation, doc: str, argv=None, summary_metrics=None) -> int:
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ablation.arms), choices=list(ablation.arms))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--root", default=ablation.default_root)
    parser.add_argument("--name", default=ablation.name, help="result file name under benchmarks/results/")
    parser.add_argument("--report", action="store_true", help="only write the table of the finished runs")
    parser.add_argument("--fresh", action="store_true",
                        help="report only the runs under --root (default: also keep the earlier report's other runs)")
    parser.add_argument("--dry-run", action="store_true", help="print each run's stages and workdir; train nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        for seed in args.seeds:
            for arm in args.arms:
                exp, config, workdir = arm_config(ablation, arm, seed, args.root, args.preset)
                names = [f"{stage.name} ({stage.steps} steps)" if stage.trains else stage.name
                         for stage in registry.load(exp).stages(config, workdir)]
                print(f"{arm} seed {seed}: {workdir}: {', '.join(names)}")
        return 0
    if not args.report:
        for seed in args.seeds:
            for arm in args.arms:
                row = run_arm(ablation, arm, seed, args.root, args.preset)
                first = ablation.metrics[0]
                print(f"{arm} seed {seed}: {first} {row[first]:.4f} ({row['minutes']:.1f} min)", flush=True)
    print(ablation.markdown(report(ablation, args.root, args.preset, args.name, summary_metrics,
                                   keep_earlier=not args.fresh)))
    return 0
