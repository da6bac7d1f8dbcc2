"""The remote-sensing paper's claim on the built-in scene set: a compact student distilled from
CNN-zoo teachers beats the same student trained from scratch. Same data, split and student,
several seeds; overall and average (per-class) test accuracy, mean ± std, paired per-seed
differences, and each teacher's accuracy in the distilled runs.

    python benchmarks/kd_ablation.py                         # both arms, seeds 0 1 2
    python benchmarks/kd_ablation.py --arms scratch --seeds 0
    python benchmarks/kd_ablation.py --report                # the table from the runs finished so far

Each arm is ``rsic_kd``'s ``tiny`` preset run through the trainer in its own workdir under
``--root``; finished runs are skipped and stopped ones resume (``benchmarks/ablation_runs.py``).
Writes ``benchmarks/results/kd_ablation.{json,md}``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import ablation_runs  # noqa: E402
from experiments.rsic_kd.system import teacher_accuracies  # noqa: E402

METRICS = ("test/student/accuracy", "test/student/average_accuracy")


def scratch(c) -> None:
    """The same student on cross-entropy alone: no teacher stages."""
    c.kd.alpha = 1.0
    c.model.teachers = ()


ARMS = {"distilled": ("rsic_kd", None, None), "scratch": ("rsic_kd", scratch, None)}
COMPARISONS = (("Distillation", "distilled", "scratch", "the teachers' soft targets help the student"),)


def with_teachers(arm: str, workdir: str, config) -> dict:
    return {f"teacher/{name}/accuracy": value for name, value in teacher_accuracies(workdir).items()}


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = ["# Distillation ablation on the built-in scene set (rsic_kd tiny)", "",
             "Student on the test part (half of each class); mean ± sample std over the seeds that finished. "
             "Average accuracy = the mean of the per-class accuracies.", "",
             "| arm | seeds | accuracy | average accuracy |", "|---|---|---|---|"]
    for arm, m in s["arms"].items():
        lines.append(f"| {arm} | {m[METRICS[0]]['n']} | " + " | ".join(
            f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in METRICS) + " |")
    lines += ["", "| comparison (arm − baseline) | claim | seeds | accuracy per seed | mean | better in |",
              "|---|---|---|---|---|---|"]
    for c in s["comparisons"]:
        a = c[METRICS[0]]
        lines.append(f"| {c['name']}: {c['arm']} − {c['baseline']} | {c['claim']} | {len(c['seeds'])} | "
                     f"{', '.join(f'{d:+.3f}' for d in a['differences'])} | {a['mean']:+.3f} | "
                     f"{a['better_in']} of {len(c['seeds'])} |")
    teachers = sorted({k for r in result["runs"] for k in r if k.startswith("teacher/")})
    lines += ["", "| arm | seed | accuracy | " + " | ".join(t.split("/")[1] for t in teachers) + " | minutes |",
              "|---|---|---|" + "---|" * len(teachers) + "---|"]
    for r in result["runs"]:
        cells = [f"{r[t]:.3f}" if t in r else "–" for t in teachers]
        lines.append(f"| {r['arm']} | {ablation_runs.seed_cell(r)} | {r[METRICS[0]]:.3f} | " + " | ".join(cells)
                     + f" | {r['minutes']:.1f} |")
    if any("from" in r for r in result["runs"]):
        lines += ["", ablation_runs.EARLIER_NOTE]
    return "\n".join(lines) + "\n"


ABLATION = ablation_runs.Ablation(
    name="kd_ablation", arms=ARMS, comparisons=COMPARISONS, metrics=METRICS, compared=METRICS,
    markdown=markdown, default_root="workdirs/kd_ablation", after_run=with_teachers)


if __name__ == "__main__":
    sys.exit(ablation_runs.main(ABLATION, __doc__))
