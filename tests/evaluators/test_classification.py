"""ClassificationEvaluator: logits gathered through the eval batcher in source order (padding
dropped), the metrics of those logits, and the confusion PNG / table / CSV it writes."""
import csv

import numpy as np

from jaxaudio.data.source import padding_from_spec
from jaxaudio.evaluators.classification import ClassificationEvaluator
from jaxaudio.metrics.classification import classification_metrics


class _Items:
    def __init__(self, n):
        self.labels = np.arange(n) % 3
        self.files = [f"img_{i}.png" for i in range(n)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"x": np.full((2,), float(i), np.float32), "index": np.int32(i)}

    def batch_spec(self):
        return {"x": ((2,), np.float32), "index": ((), np.int32)}

    def padding_item(self):
        return padding_from_spec(self.batch_spec())


def test_evaluator_scores_every_item_once_and_writes_its_plots(tmp_path):
    source = _Items(11)                                   # 11 items in batches of 4: one padded batch

    def predict(batch):                                   # right for even items, class 0 for odd ones
        i = batch["x"][:, 0].astype(int)
        guess = np.where(i % 2 == 0, i % 3, 0)
        return {"logits": np.eye(3)[guess] * 5.0, "index": batch["index"]}

    evaluator = ClassificationEvaluator(lambda: source, batch_size=4, class_names=("a", "b", "c"))
    got = evaluator.run(predict, plot_dir=str(tmp_path), plot_prefix="test_student", title="T")
    i = np.arange(11)
    want = classification_metrics(source.labels, np.where(i % 2 == 0, i % 3, 0), ["a", "b", "c"]).to_dict()
    assert got == want and got["accuracy"] < 1.0
    assert (tmp_path / "test_student_confusion.png").stat().st_size > 1000
    assert "| **overall** | 11 |" in (tmp_path / "test_student_per_class.md").read_text()
    rows = list(csv.DictReader(open(tmp_path / "test_student_predictions.csv")))
    assert [r["path"] for r in rows] == source.files and rows[1]["predicted"] == "a"
