"""The ASD evaluator: metrics of the scores it is given (the metrics themselves are checked against
scikit-learn in tests/metrics/test_asd.py), and the per-clip CSV it writes is those very scores."""
import csv

import numpy as np

from jaxaudio.data.asd import ASDFile
from jaxaudio.evaluators.asd import ASDEvaluator
from jaxaudio.metrics.asd import roc_auc


class _Files:
    """What the evaluator reads of a source when it is handed the scores: the files, in order."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)


def _source():
    files = []
    for mid in ("id_00", "id_02"):
        for i, label in enumerate([0, 0, 0, 1, 1]):
            files.append(ASDFile(f"/d/fan/test/{'anomaly' if label else 'normal'}_{mid}_{i:08d}.wav", "fan", mid,
                                 "test", "dev", label))
    files.append(ASDFile("/d/fan/test/id_00_unlabelled.wav", "fan", "id_00", "test", "eval", None))
    return _Files(files), files


def test_scores_become_per_id_metrics_and_a_csv_of_the_same_scores(tmp_path):
    source, files = _source()
    rng = np.random.default_rng(0)
    scores = rng.normal(size=len(files))
    evaluator = ASDEvaluator(lambda: source, batch_size=8)
    got = evaluator.score_arrays({"score": scores}, plot_dir=str(tmp_path), plot_prefix="test_student")
    for mid, rows in (("id_00", slice(0, 5)), ("id_02", slice(5, 10))):
        labels = [f.label for f in files[rows]]
        assert got[f"fan/{mid}/auc"] == roc_auc(labels, scores[rows])
    assert got["auc"] == np.mean([got["fan/id_00/auc"], got["fan/id_02/auc"]])
    with open(tmp_path / "test_student_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [f.path for f in files[:10]]      # the unlabelled clip is left out
    np.testing.assert_array_equal([float(r["score"]) for r in rows], scores[:10])   # exact (repr)
    assert [int(r["label"]) for r in rows] == [f.label for f in files[:10]]
    assert (tmp_path / "test_student_roc.png").stat().st_size > 0


def test_a_subset_of_clips_is_scored_alone():
    source, files = _source()
    evaluator = ASDEvaluator(lambda: source, batch_size=8)
    ids = list(range(5))                       # id_00's labelled clips only
    got = evaluator.score_arrays({"score": np.arange(5.0)}, ids)
    assert got["fan/id_00/auc"] == 1.0 and "fan/id_02/auc" not in got
