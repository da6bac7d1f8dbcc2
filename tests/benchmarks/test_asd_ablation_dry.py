"""benchmarks/asd_ablation.py: every arm resolves through the registry and changes only what it
names, and the per-anomaly-kind AUC is each kind's clips against the same IDs' normals."""
import csv
import os

import ml_collections

from benchmarks import ablation_runs, asd_ablation as bench
from jaxaudio.metrics.asd import roc_auc


def test_dry_run_lists_every_arm(tmp_path, capsys):
    argv = ["--dry-run", "--seeds", "1", "--root", str(tmp_path)]
    assert ablation_runs.main(bench.ABLATION, bench.__doc__, argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" seed")[0] for line in lines] == list(bench.ARMS)
    by_arm = dict(zip(bench.ARMS, lines))
    assert by_arm["id_classifier"].split(": ")[-1].startswith("extractor")     # no PAE stage
    assert by_arm["geco"].split(": ")[-1].startswith("pae")
    assert not any(tmp_path.iterdir())


def test_arms_change_only_what_they_name():
    _, geco, _ = ablation_runs.arm_config(bench.ABLATION, "geco", 0, "r")
    for arm, key, value in (("id_classifier", "reconstructions", False), ("geco_no_supcon", "supcon_weight", 0.0),
                            ("geco_no_recon_head", "recon_weight", 0.0),
                            ("geco_ce_on_recon", "ce_on_reconstructions", True)):
        _, edited, _ = ablation_runs.arm_config(bench.ABLATION, arm, 0, "r")
        assert edited.geco[key] == value != geco.geco[key]
        edited.geco[key] = geco.geco[key]
        assert edited.to_json() == geco.to_json(), arm


def test_close_id_arms_are_their_arm_on_the_close_id_set():
    for arm, base in (("geco_close_ids", "geco"), ("id_classifier_close_ids", "id_classifier"),
                      ("asd_ae_close_ids", "asd_ae")):
        _, plain, _ = ablation_runs.arm_config(bench.ABLATION, base, 0, "r")
        _, close, _ = ablation_runs.arm_config(bench.ABLATION, arm, 0, "r")
        assert close.data.synth_preset == "tiny_close_ids" and close.data.synth_dir != plain.data.synth_dir
        close.data.synth_preset, close.data.synth_dir = plain.data.synth_preset, plain.data.synth_dir
        assert close.to_json() == plain.to_json(), arm


def test_per_kind_auc_is_each_kind_against_its_ids_normals(tmp_path):
    data, workdir = tmp_path / "data", tmp_path / "run"
    os.makedirs(data)
    os.makedirs(workdir / "evaluation")
    clips = [  # (type, id, label, kind, severity, score)
        ("fan", "id_00", 0, "", "", 0.1), ("fan", "id_00", 0, "", "", 0.5),
        ("fan", "id_00", 1, "clicks", 0.2, 0.3), ("fan", "id_00", 1, "drift", 0.9, 0.9),
        ("fan", "id_02", 0, "", "", 0.2), ("fan", "id_02", 1, "clicks", 0.8, 0.1),
    ]
    with open(data / "synth_clips.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "kind", "severity"])
        for i, (t, mid, label, kind, sev, _) in enumerate(clips):
            w.writerow([f"dev_data/{t}/test/{'anomaly' if label else 'normal'}_{mid}_{i:08d}.wav", kind, sev])
    with open(workdir / "evaluation" / "test_student_scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "machine_type", "machine_id", "label", "score"])
        for i, (t, mid, label, _, _, score) in enumerate(clips):
            w.writerow([f"/x/dev_data/{t}/test/{'anomaly' if label else 'normal'}_{mid}_{i:08d}.wav", t, mid, label,
                        score])
    config = ml_collections.ConfigDict({"data": {"data_dir": "", "synth_dir": str(data)}})
    got = bench.per_kind_auc("geco", str(workdir), config)
    clicks = (roc_auc([0, 0, 1], [0.1, 0.5, 0.3]) + roc_auc([0, 1], [0.2, 0.1])) / 2    # 0.5 and 0.0
    assert got["anomaly/kind/clicks/auc"] == clicks == 0.25
    assert got["anomaly/kind/drift/auc"] == 1.0
    assert got["anomaly/severity/mild/auc"] == 0.5                      # id_00's clicks at 0.2 only
    assert got["anomaly/severity/clear/auc"] == (1.0 + 0.0) / 2          # id_00's drift, id_02's clicks
