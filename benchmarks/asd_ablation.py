"""GeCo's claim on the built-in machine-sound set: joint generative + contrastive learning beats
the discriminative baseline (the ID classifier: GeCo without its PAE, contrastive term and recon
head) and the generative one (the DCASE2020 autoencoder); and the values GeCo leaves open, each
tried both ways. Same data, several seeds, AUC / pAUC per machine type, mean ± std, paired
per-seed differences, and AUC per anomaly kind and severity (the built-in set records both).

    python benchmarks/asd_ablation.py                          # every arm, seeds 0 1 2
    python benchmarks/asd_ablation.py --arms geco id_classifier --seeds 0
    python benchmarks/asd_ablation.py --report                 # the table from the runs finished so far
    python benchmarks/asd_ablation.py --dry-run

Each arm is a System's ``tiny`` preset run through the trainer, in its own workdir under
``--root``; finished runs are skipped and stopped ones resume (``benchmarks/ablation_runs.py``).
Writes ``benchmarks/results/asd_ablation.{json,md}``.
"""
from __future__ import annotations

import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import ablation_runs  # noqa: E402
from jaxaudio.metrics.asd import roc_auc  # noqa: E402

TYPES = ("ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve")
METRICS = ("test/student/auc", "test/student/pauc", "test/student/pauc_raw",
           *(f"test/student/{t}/{m}" for t in TYPES for m in ("auc", "pauc")))
MILD = 0.5   # severities below this (on the generator's 0..1 scale) count as mild


def id_classifier(c) -> None:
    """GeCo without reconstructions: no PAE, no contrastive term, no recon head (the discriminative baseline)."""
    c.geco.reconstructions = False


def ce_on_reconstructions(c) -> None:
    """Our choice is CE on originals only; here reconstructions carry their ID in the CE too."""
    c.geco.ce_on_reconstructions = True


def no_supcon(c) -> None:
    """GeCo with its contrastive term off (the PAE's reconstructions still feed the recon head)."""
    c.geco.supcon_weight = 0.0


def no_recon_head(c) -> None:
    """GeCo with the real-vs-reconstruction BCE off (reconstructions reach the loss only via SupCon)."""
    c.geco.recon_weight = 0.0


def close_ids(edit=None):
    """The same arm on the built-in set with a type's IDs close together (``tiny_close_ids``): a
    test of why GeCo does not help at tiny, where one cue (the fundamental) tells the IDs apart."""
    def on_close_ids(c) -> None:
        if edit is not None:
            edit(c)
        c.data.synth_preset, c.data.synth_dir = "tiny_close_ids", "data/asd_synth_tiny_close_ids"

    on_close_ids.__doc__ = f"{(edit.__doc__ or '').strip()} On the tiny_close_ids set.".strip()
    return on_close_ids


ARMS = {
    "geco": ("geco", None, None),
    "id_classifier": ("geco", id_classifier, None),
    "asd_ae": ("asd_ae", None, None),
    "geco_ce_on_recon": ("geco", ce_on_reconstructions, None),
    "geco_no_supcon": ("geco", no_supcon, None),
    "geco_no_recon_head": ("geco", no_recon_head, None),
    "geco_close_ids": ("geco", close_ids(), None),
    "id_classifier_close_ids": ("geco", close_ids(id_classifier), None),
    "asd_ae_close_ids": ("asd_ae", close_ids(), None),
}
COMPARISONS = (
    ("GeCo vs ID classifier", "geco", "id_classifier", "the generative + contrastive parts help"),
    ("GeCo vs DCASE autoencoder", "geco", "asd_ae", "GeCo beats the generative baseline"),
    ("ID classifier vs autoencoder", "id_classifier", "asd_ae", "discriminative beats generative (STgram-MFN)"),
    ("CE on originals only", "geco", "geco_ce_on_recon", "our choice: reconstructions out of the CE"),
    ("SupCon term", "geco", "geco_no_supcon", "the contrastive term helps"),
    ("recon head", "geco", "geco_no_recon_head", "the real-vs-reconstruction head helps"),
    ("GeCo vs ID classifier, close IDs", "geco_close_ids", "id_classifier_close_ids",
     "the generative + contrastive parts help when IDs are alike"),
    ("GeCo vs DCASE autoencoder, close IDs", "geco_close_ids", "asd_ae_close_ids",
     "GeCo beats the generative baseline when IDs are alike"),
)


def _clip_facts(data_dir: str) -> dict:
    """``type/split/name`` -> (kind, severity) of the built-in set's anomaly clips (synth_clips.csv)."""
    path = os.path.join(data_dir, "synth_clips.csv")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {"/".join(r["path"].split("/")[-3:]): (r["kind"], float(r["severity"]))
                for r in csv.DictReader(f) if r["kind"]}


def per_kind_auc(arm: str, workdir: str, config) -> dict:
    """AUC of each anomaly kind (and of mild / clear severities) against the same IDs' normals,
    the mean over the IDs that have it: which anomalies each method hears."""
    scores_path = os.path.join(workdir, "evaluation", "test_student_scores.csv")
    facts = _clip_facts(config.data.synth_dir) if not config.data.data_dir else {}
    if not facts or not os.path.exists(scores_path):
        return {}
    with open(scores_path) as f:
        rows = list(csv.DictReader(f))
    by_id: dict = {}
    for r in rows:
        key = "/".join(r["path"].split("/")[-3:])
        by_id.setdefault((r["machine_type"], r["machine_id"]), []).append(
            (int(r["label"]), float(r["score"]), facts.get(key)))
    groups = {}
    for machine, clips in by_id.items():
        normals = [s for label, s, _ in clips if label == 0]
        for label, s, fact in clips:
            if label == 1 and fact is not None:
                kind, severity = fact
                for name in (f"kind/{kind}", f"severity/{'mild' if severity < MILD else 'clear'}"):
                    groups.setdefault(name, {}).setdefault(machine, (normals, []))[1].append(s)
    normal = [float(r["score"]) for r in rows if r["label"] == "0"]
    anomalous = [float(r["score"]) for r in rows if r["label"] == "1"]
    # how far apart the two lie on the score's own scale: for -log p(ID), a median near 0 is a
    # classifier sure of the ID whether or not the clip is anomalous (the score saturates)
    out = {"score/normal_median": float(np.median(normal)), "score/anomaly_median": float(np.median(anomalous))}
    for name, per_id in groups.items():
        aucs = [roc_auc([0] * len(n) + [1] * len(a), n + a) for n, a in per_id.values()]
        out[f"anomaly/{name}/auc"] = float(np.mean(aucs))
    return out


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = ["# ASD ablation on the built-in machine-sound set (tiny presets)", "",
             "Final model on the test clips; mean ± sample std over the seeds that finished. AUC and pAUC "
             "(p = 0.1, McClish-standardised as DCASE2020 published it) are the official means: over a type's "
             "IDs, then over types. pAUC raw = area / p.", "",
             "| arm | seeds | AUC | pAUC | pAUC raw | " + " | ".join(f"{t} AUC" for t in TYPES) + " |",
             "|---|---|---|---|---|" + "---|" * len(TYPES)]
    for arm, m in s["arms"].items():
        cells = [f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in METRICS[:3]]
        cells += [f"{m[f'test/student/{t}/auc']['mean']:.3f}" for t in TYPES]
        lines.append(f"| {arm} | {m[METRICS[0]]['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison (arm − baseline) | claim | seeds | AUC per seed | mean AUC | better in | mean pAUC |",
              "|---|---|---|---|---|---|---|"]
    for c in s["comparisons"]:
        a, p = c["test/student/auc"], c["test/student/pauc"]
        lines.append(f"| {c['name']}: {c['arm']} − {c['baseline']} | {c['claim']} | {len(c['seeds'])} | "
                     f"{', '.join(f'{d:+.3f}' for d in a['differences'])} | {a['mean']:+.3f} | "
                     f"{a['better_in']} of {len(c['seeds'])} | {p['mean']:+.3f} |")
    kinds = sorted({k for r in result["runs"] for k in r if k.startswith(("anomaly/", "score/"))})
    if kinds:
        lines += ["", "AUC per anomaly kind and severity (mean over seeds; each kind against its IDs' normals), "
                  "and the median test score of normal and anomalous clips on each arm's own scale:", "",
                  "| arm | " + " | ".join("/".join(k.split("/")[1:3]) for k in kinds) + " |",
                  "|---|" + "---|" * len(kinds)]
        for arm in s["arms"]:
            runs = [r for r in result["runs"] if r["arm"] == arm]
            lines.append(f"| {arm} | " + " | ".join(
                f"{np.mean([r[k] for r in runs if k in r]):.3g}" if any(k in r for r in runs) else "–"
                for k in kinds) + " |")
    lines += ["", "| arm | seed | AUC | pAUC | minutes |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['arm']} | {ablation_runs.seed_cell(r)} | {r['test/student/auc']:.3f} | "
                     f"{r['test/student/pauc']:.3f} | "
                     f"{r['minutes']:.1f} |")
    if any("from" in r for r in result["runs"]):
        lines += ["", ablation_runs.EARLIER_NOTE]
    return "\n".join(lines) + "\n"


ABLATION = ablation_runs.Ablation(
    name="asd_ablation", arms=ARMS, comparisons=COMPARISONS, metrics=METRICS,
    compared=("test/student/auc", "test/student/pauc"), markdown=markdown,
    default_root="workdirs/asd_ablation", after_run=per_kind_auc)


if __name__ == "__main__":
    sys.exit(ablation_runs.main(ABLATION, __doc__))
