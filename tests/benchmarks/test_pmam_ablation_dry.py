"""benchmarks/pmam_ablation.py resolves both arms through the registry and the PMAM System
(``--dry-run``: stages and workdirs, nothing trained), so the script does not rot."""
from benchmarks import pmam_ablation as bench


def test_dry_run_lists_each_arms_stages(tmp_path, capsys):
    argv = ["--dry-run", "--seeds", "0", "4", "--root", str(tmp_path), "--set", "stages.finetune2.steps=7"]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    pretrained = f"pretrained seed 4: {tmp_path / 'pretrained_seed4'}: round1/prototypes, round1/pretrain"
    assert lines[2].startswith(pretrained) and "round2/pretrain" in lines[2]
    assert lines[3] == f"scratch seed 4: {tmp_path / 'scratch_seed4'}: finetune1 (150 steps), finetune2 (7 steps)"
    assert not any(tmp_path.iterdir())  # nothing written


def test_arms_differ_only_in_rounds():
    args = bench.argparse.Namespace(preset="tiny", set=["stages.finetune1.steps=9"], root="r")
    (pre, _), (scratch, workdir) = bench.arm_config("pretrained", 2, args), bench.arm_config("scratch", 2, args)
    assert workdir == "r/scratch_seed2" and pre.seed == scratch.seed == 2
    assert pre.pretrain.rounds == 2 and scratch.pretrain.rounds == 0
    scratch.pretrain.rounds = pre.pretrain.rounds
    assert scratch.to_json() == pre.to_json() and pre.stages.finetune1.steps == 9
