"""The SED recipe's claims on the built-in set: MAT-SED with vs without masked-reconstruction
pre-training, with vs without global-local fusion; PMAM tiny before vs after the recipe fixes of
``spec/sed_recipes.md``; AST-SED (FTE + LGD) vs AST-GRU; CRNN, PMAM, MAT-SED and AST-SED side by
side. Same data, same labelled budget, several seeds, PSDS1 and PSDS2, mean ± std and paired
per-seed differences.

    python benchmarks/sed_ablations.py                         # every arm, seeds 0 1 2 (hours on 2 cores)
    python benchmarks/sed_ablations.py --arms pmam pmam_before --seeds 0
    python benchmarks/sed_ablations.py --report                # the table from the runs finished so far
    python benchmarks/sed_ablations.py --dry-run               # each run's stages and workdir, nothing trained

Every arm is a System's ``tiny`` preset run through the trainer (as ``experiments/run.py``), in
its own workdir under ``--root``; a finished run is skipped and a stopped one resumes, so the
benchmark can be run arm by arm over several sessions. The report reads every finished run under
``--root`` and writes ``benchmarks/results/sed_ablations.{json,md}``: a comparison appears once
both of its arms have finished for at least one common seed.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import ablation_runs  # noqa: E402

METRICS = ("validation/teacher/psds1", "validation/teacher/psds2", "eval/teacher/psds1", "eval/teacher/psds2")


def _set(section, key, value):
    """``section[key] = value`` even when the type changes (ConfigDict refuses that in place)."""
    if key in section:
        del section[key]
    section[key] = value


def pmam_before_fixes(c) -> None:
    """PMAM's tiny preset as it was measured before the recipe fixes (jaxaudio at ce08faf): one
    5-frame median window, no weak mask, temperature 1; the DCASE FilterAugment, mixup Beta(0.2, 0.2)
    with a coin per source and every source mixed, no pre-training mixup, no frequency distortion,
    one view for student and teacher; a sigmoid stage-2 ramp; clip losses over every labelled clip;
    last checkpoints; out_norm and mask_token outside the head group; round 2 warm-started; 80 of
    100 masked blocks; the GMM from k-means++ seeds with reg 1e-4; synthetic strong rows only."""
    p, f1, f2 = c.stages.pretrain, c.stages.finetune1, c.stages.finetune2
    c.pretrain.gmm_init, c.pretrain.gmm_reg_covar = "kmeans++", 1e-4
    c.pretrain.mask_reference_count, c.pretrain.restart_rounds = False, False
    p.groups = (("heads", r"^(mlm_hidden|mlm_out|at_pool|at_prototype_head)/", 1e-3, 1e-4),)
    p.frame_shift_sigma, p.mixup_prob, p.freq_distortion, p.eval_every, p.select = 10.0, 0.0, 0.0, 0, "last"
    _set(p, "filter_augment", True)
    f1.groups = (("heads", r"^(classifier|at_pool|at_class_head)/", 2e-3, 1e-4),)
    f2.groups = (("encoder", r"^encoder/", 1e-3, 1e-4), ("heads", r"^(classifier|at_pool|at_class_head)/", 2e-3, 1e-4))
    f2.rampup = "sigmoid"
    for f in (f1, f2):
        f.frame_shift_sigma, f.freq_distortion, f.two_views = 10.0, 0.0, False
        f.mixup_alpha, f.mixup_beta, f.mixup_coin = 0.2, 0.2, "segment"
        f.mixup_sources = ("strong", "weak", "unlabeled")
        _set(f, "filter_augment", True)
        f.weak_subset_only, f.eval_every, f.select = False, 0, "last"
    c.data.train_strong_real = ""
    c.batch.pretrain_strong_real, c.batch.strong_real = 0, 0
    _set(c.eval, "median_window", 5)
    c.eval.weak_mask, c.eval.temperature = False, 1.0


def no_matsed_pretraining(c) -> None:
    c.pretrain.enabled = False


def global_local(c) -> None:
    """The paper's windows in seconds at tiny's 25 frames/s: 5.12 s windows (128 frames), steps
    of 0.49 s for the stage-2 teacher and 0.31 s at inference (12 and 8 frames)."""
    c.model.global_local.window, c.model.global_local.teacher_step, c.model.global_local.eval_step = 128, 12, 8


def rounds_carry_on(c) -> None:
    """Today's tiny PMAM, but each pre-training round continues from the previous round's weights.
    The reference restarts every round from the AudioSet PaSST checkpoint; at tiny sizes the start
    is random, so a restart throws round 1's training away (the suspect for tiny's lower PSDS)."""
    c.pretrain.restart_rounds = False


def synthetic_strong(c) -> None:
    """Today's tiny PMAM with every strong row synthetic. The reference's real strong clips
    (AudioSet) share their domain with DESED's real validation set; the built-in set's real
    stand-in has other recording conditions than its synthetic validation and eval clips, so
    there it may take in-domain rows away instead (4 of the 6 strong rows per batch)."""
    c.data.train_strong_real = ""
    c.batch.pretrain_strong_real, c.batch.strong_real = 0, 0


def pmam_encoder(c, run_of) -> None:
    """MAT-SED's recipe assumes an AudioSet-pretrained PaSST, which tiny sizes lack: its encoder is
    random and frozen through pre-training and stage 1. Here it starts from the encoder of the
    same seed's PMAM run after PMAM's label-free pre-training (round 2), on the same audio."""
    c.model.encoder_from = os.path.join(run_of("pmam"), "round2", "pretrain")


def fine_time_patches(c) -> None:
    """Tiny MAT-SED with encoder time patches every 0.2 s (5 frames) instead of 0.4 s: the paper's
    PaSST steps 0.1 s. Tests whether tiny's coarse time grid is why its ViT-only path does not
    localise; a masked block stays one time patch (5 frames)."""
    c.model.vit_time_stride = 5
    c.pretrain.mask_block = 5


def ast_gru(c) -> None:
    """AST-SED's baseline (AST-GRU, Xiao et al. 2022): the same AST, frequency mean pooling instead
    of the FTE, the same Bi-GRU at the AST patch rate instead of the local decoder, same training."""
    c.model.freq_pool, c.model.decoder = "mean", "gru"


def fte_only(c) -> None:
    """AST-SED with the patch-rate Bi-GRU of AST-GRU in place of the local decoder: what the FTE alone does."""
    c.model.decoder = "gru"


def lgd_only(c) -> None:
    """AST-SED with AST-GRU's frequency mean pooling in place of the FTE: what the local decoder alone does."""
    c.model.freq_pool = "mean"


# arm -> (experiment, edit of its tiny config or None, the arm whose run of the same seed it needs)
ARMS = {
    "crnn": ("crnn", None, None),
    "pmam": ("pmam", None, None),
    "pmam_before": ("pmam", pmam_before_fixes, None),
    "pmam_rounds_carry_on": ("pmam", rounds_carry_on, None),
    "pmam_synthetic_strong": ("pmam", synthetic_strong, None),
    "matsed": ("matsed", None, None),
    "matsed_no_pretrain": ("matsed", no_matsed_pretraining, None),
    "matsed_global_local": ("matsed", global_local, None),
    "matsed_pmam_encoder": ("matsed", pmam_encoder, "pmam"),
    "matsed_fine_time": ("matsed", fine_time_patches, None),
    "astsed": ("astsed", None, None),
    "astgru": ("astsed", ast_gru, None),
    "astsed_fte_gru": ("astsed", fte_only, None),
    "astsed_mean_lgd": ("astsed", lgd_only, None),
}
# (name, arm, baseline, what the paper claims)
COMPARISONS = (
    ("MAT-SED pre-training", "matsed", "matsed_no_pretrain", "masked-reconstruction pre-training helps"),
    ("MAT-SED global-local fusion", "matsed_global_local", "matsed", "global-local fusion helps"),
    ("PMAM recipe fixes", "pmam", "pmam_before", "the authors' recipe helps"),
    ("PMAM rounds restarting", "pmam", "pmam_rounds_carry_on",
     "restarting each round from the start weights helps (the reference starts from PaSST)"),
    ("PMAM real strong subset", "pmam", "pmam_synthetic_strong",
     "the real strong subset helps (on DESED it shares the validation set's domain)"),
    ("PMAM vs CRNN", "pmam", "crnn", "PMAM beats the CRNN baseline"),
    ("MAT-SED vs CRNN", "matsed", "crnn", "MAT-SED beats the CRNN baseline"),
    ("MAT-SED on a pretrained encoder", "matsed_pmam_encoder", "matsed",
     "MAT-SED's recipe needs a pretrained encoder"),
    ("MAT-SED with 0.2-s time patches", "matsed_fine_time", "matsed",
     "tiny's 0.4-s encoder time patches are why MAT-SED tiny does not localise"),
    ("MAT-SED (PMAM encoder) vs PMAM", "matsed_pmam_encoder", "pmam",
     "MAT-SED's fine-tuning matches PMAM's on the same encoder"),
    ("AST-SED vs AST-GRU", "astsed", "astgru",
     "the frequency-wise Transformer encoder and the local GRU decoder beat mean pooling + a patch-rate GRU"),
    ("AST-SED vs CRNN", "astsed", "crnn", "AST-SED beats the CRNN baseline"),
    ("FTE alone (patch-rate GRU)", "astsed_fte_gru", "astgru", "the FTE beats frequency mean pooling"),
    ("LGD alone (mean pooling)", "astsed_mean_lgd", "astgru", "the local GRU decoder beats a patch-rate GRU"),
)


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = ["# SED ablations on the built-in set (tiny presets)", "",
             "Teacher after fine-tuning stage 2; mean ± sample std over the seeds that finished; PSDS on the "
             "validation and eval subsets of the built-in set.", "",
             "| arm | seeds | val PSDS1 | val PSDS2 | eval PSDS1 | eval PSDS2 |", "|---|---|---|---|---|---|"]
    for arm, m in s["arms"].items():
        cells = [f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in METRICS]
        lines.append(f"| {arm} | {m[METRICS[0]]['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison (arm − baseline) | seeds | val PSDS1 per seed | mean | better in | val PSDS2 mean |",
              "|---|---|---|---|---|---|"]
    for c in s["comparisons"]:
        v, v2 = c["validation/teacher/psds1"], c["validation/teacher/psds2"]
        lines.append(f"| {c['name']}: {c['arm']} − {c['baseline']} | {len(c['seeds'])} | "
                     f"{', '.join(f'{d:+.3f}' for d in v['differences'])} | {v['mean']:+.3f} | "
                     f"{v['better_in']} of {len(c['seeds'])} | {v2['mean']:+.3f} |")
    lines += ["", "| arm | seed | val PSDS1 | eval PSDS1 | minutes |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['arm']} | {ablation_runs.seed_cell(r)} | {r['validation/teacher/psds1']:.3f} | "
                     f"{r['eval/teacher/psds1']:.3f} | {r['minutes']:.1f} |")
    if any("from" in r for r in result["runs"]):
        lines += ["", ablation_runs.EARLIER_NOTE]
    return "\n".join(lines) + "\n"



ABLATION = ablation_runs.Ablation(
    name="sed_ablations", arms=ARMS, comparisons=COMPARISONS, metrics=METRICS,
    compared=("validation/teacher/psds1", "validation/teacher/psds2", "eval/teacher/psds1"),
    markdown=markdown, default_root="workdirs/sed_ablations")


if __name__ == "__main__":
    sys.exit(ablation_runs.main(ABLATION, __doc__))
