"""benchmarks/sed_ablations.py: every arm resolves through the registry (``--dry-run``), the
"before" arm is the tiny preset as it was measured, and the report pairs seeds correctly."""
import json
import os

from benchmarks import ablation_runs, sed_ablations as bench
from jaxaudio.train import stages as stage_files


def test_dry_run_lists_every_arm(tmp_path, capsys):
    argv = ["--dry-run", "--seeds", "3", "--root", str(tmp_path)]
    assert ablation_runs.main(bench.ABLATION, bench.__doc__, argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" seed")[0] for line in lines] == list(bench.ARMS)
    by_arm = dict(zip(bench.ARMS, lines))
    assert by_arm["matsed_no_pretrain"].endswith(": finetune1 (150 steps), finetune2 (800 steps)")
    assert by_arm["matsed"].split(": ")[-1].startswith("pretrain (400 steps)")
    assert "round2/pretrain" in by_arm["pmam"] and "round2/pretrain" in by_arm["pmam_before"]
    assert by_arm["astsed"].endswith(": finetune1 (150 steps), finetune2 (3000 steps)")
    assert not any(tmp_path.iterdir())


def test_before_arm_is_the_earlier_tiny_recipe():
    _, before, _ = ablation_runs.arm_config(bench.ABLATION, "pmam_before", 0, "r")
    _, after, _ = ablation_runs.arm_config(bench.ABLATION, "pmam", 0, "r")
    assert before.eval.median_window == 5 and (before.eval.weak_mask, before.eval.temperature) == (False, 1.0)
    assert after.eval.weak_mask and after.eval.temperature == 0.5 and len(after.eval.median_window) == 10
    f = before.stages.finetune2
    assert (f.mixup_alpha, f.mixup_beta, f.rampup, f.filter_augment, f.two_views) == (0.2, 0.2, "sigmoid", True, False)
    assert before.batch.strong_real == 0 and after.batch.strong_real > 0
    # sizes are untouched by the edit
    assert before.model.to_json() == after.model.to_json()
    assert before.stages.finetune2.steps == after.stages.finetune2.steps


def test_report_pairs_finished_runs_by_seed(tmp_path):
    def finished(arm, seed, psds1):
        workdir = tmp_path / f"{arm}_seed{seed}"
        os.makedirs(workdir / "evaluation")
        stage_files.mark_done(str(workdir / "evaluation"), {})
        metrics = {k: psds1 for k in bench.METRICS}
        (workdir / "metrics.json").write_text(json.dumps({"final_eval": metrics, "total_wall_seconds": 60.0}))

    finished("pmam", 0, 0.5)
    finished("pmam_before", 0, 0.4)
    finished("pmam", 1, 0.6)          # no baseline for seed 1: not paired
    os.makedirs(tmp_path / "pmam_seed2")   # unfinished: ignored
    rows = ablation_runs.finished_runs(bench.ABLATION, str(tmp_path))
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("pmam", 0), ("pmam", 1), ("pmam_before", 0)]
    summary = ablation_runs.summarise(bench.ABLATION, rows)
    (fixes,) = [c for c in summary["comparisons"] if c["name"] == "PMAM recipe fixes"]
    assert fixes["seeds"] == [0]
    assert abs(fixes["validation/teacher/psds1"]["mean"] - 0.1) < 1e-12
    assert summary["arms"]["pmam"]["validation/teacher/psds1"]["n"] == 2
    assert "| pmam | 2 |" in bench.markdown({"summary": summary, "runs": rows})


def test_pretrained_encoder_arm_starts_from_the_same_seeds_pmam_pretraining():
    _, config, workdir = ablation_runs.arm_config(bench.ABLATION, "matsed_pmam_encoder", 2, "r")
    assert config.model.encoder_from == os.path.join("r", "pmam_seed2", "round2", "pretrain")
    assert workdir == os.path.join("r", "matsed_pmam_encoder_seed2")
    _, plain, _ = ablation_runs.arm_config(bench.ABLATION, "matsed", 2, "r")
    assert plain.model.encoder_from == ""
    del config.model["encoder_from"], plain.model["encoder_from"]
    assert config.to_json() == plain.to_json()    # nothing else differs


def test_ast_gru_arm_changes_only_the_pooling_and_the_decoder():
    _, gru, _ = ablation_runs.arm_config(bench.ABLATION, "astgru", 1, "r")
    _, sed, _ = ablation_runs.arm_config(bench.ABLATION, "astsed", 1, "r")
    assert (gru.model.freq_pool, gru.model.decoder) == ("mean", "gru")
    assert (sed.model.freq_pool, sed.model.decoder) == ("fte", "lgd")
    gru.model.freq_pool, gru.model.decoder = "fte", "lgd"
    assert gru.to_json() == sed.to_json()
