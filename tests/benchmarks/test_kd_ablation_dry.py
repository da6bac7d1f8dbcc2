"""benchmarks/kd_ablation.py: both arms resolve through the registry; the control differs from
the distilled run only in having no teachers (same student, data, split and schedule)."""
from benchmarks import ablation_runs, kd_ablation as bench


def test_dry_run_lists_both_arms(tmp_path, capsys):
    argv = ["--dry-run", "--seeds", "0", "--root", str(tmp_path)]
    assert ablation_runs.main(bench.ABLATION, bench.__doc__, argv) == 0
    lines = dict(line.split(" seed 0: ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["distilled"].split(": ")[-1].startswith("teacher_resnet50")
    assert lines["scratch"].split(": ")[-1] == "student (1000 steps)"


def test_the_control_changes_only_the_teachers():
    _, kd, _ = ablation_runs.arm_config(bench.ABLATION, "distilled", 0, "r")
    _, control, _ = ablation_runs.arm_config(bench.ABLATION, "scratch", 0, "r")
    assert control.kd.alpha == 1.0 and control.model.teachers == ()
    control.kd.alpha, control.model.teachers = kd.kd.alpha, kd.model.teachers
    assert control.to_json() == kd.to_json()
