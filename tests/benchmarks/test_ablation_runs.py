"""benchmarks/ablation_runs.py: a report keeps the runs an earlier report recorded whose workdirs
are gone, marks them, and lets a run found again under the root replace its earlier row."""
import json

from benchmarks import ablation_runs


def _ablation():
    return ablation_runs.Ablation(name="t", arms={"a": ("x", None, None), "b": ("x", None, None)},
                                  comparisons=(("b vs a", "b", "a", "b helps"),), metrics=("m",), compared=("m",),
                                  markdown=lambda r: "", default_root="/nonexistent")


def test_earlier_runs_are_kept_marked_and_replaced_by_new_ones(tmp_path):
    path = tmp_path / "t.json"
    earlier = [{"arm": "a", "seed": 0, "m": 0.1}, {"arm": "b", "seed": 0, "m": 0.3},
               {"arm": "gone_arm", "seed": 0, "m": 9.0}]
    path.write_text(json.dumps({"runs": earlier}))
    new = [{"arm": "b", "seed": 0, "m": 0.5}, {"arm": "a", "seed": 1, "m": 0.2}]
    rows = ablation_runs.with_earlier_runs(_ablation(), new, str(path))
    assert [(r["arm"], r["seed"], r["m"], "from" in r) for r in rows] == [
        ("a", 0, 0.1, True), ("a", 1, 0.2, False), ("b", 0, 0.5, False)]    # b seed 0 replaced; unknown arm dropped
    assert [ablation_runs.seed_cell(r) for r in rows] == ["0 †", "1", "0"]
    summary = ablation_runs.summarise(_ablation(), rows)
    assert summary["comparisons"][0]["m"]["differences"] == [0.5 - 0.1]      # paired on seed 0 only
    assert ablation_runs.with_earlier_runs(_ablation(), new, str(tmp_path / "none.json")) == new
