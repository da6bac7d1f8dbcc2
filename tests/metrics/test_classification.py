"""Accuracy, per-class accuracy and the confusion matrix against scikit-learn, plus a hand case."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score

from jaxaudio.errors import ShapeError
from jaxaudio.metrics.classification import classification_metrics, per_class_markdown


def test_against_sklearn_on_random_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=300)
    logits = rng.normal(size=(300, 7)) + 2.0 * np.eye(7)[labels] * rng.random((300, 1))
    names = [f"c{i}" for i in range(7)]
    result = classification_metrics(labels, logits, names)
    predictions = logits.argmax(1)
    assert result.accuracy == pytest.approx(accuracy_score(labels, predictions))
    np.testing.assert_array_equal(result.confusion, confusion_matrix(labels, predictions, labels=range(7)))
    np.testing.assert_allclose(list(result.per_class.values()), recall_score(labels, predictions, average=None))
    assert result.average_accuracy == pytest.approx(balanced_accuracy_score(labels, predictions))


def test_hand_case_with_an_absent_class():
    # class 0: 2 of 3 right; class 1: 1 of 1; class 2: no examples (predicted once)
    result = classification_metrics(np.array([0, 0, 0, 1]), np.array([0, 2, 0, 1]), ["a", "b", "c"])
    assert result.accuracy == 0.75
    assert result.per_class["a"] == pytest.approx(2 / 3) and result.per_class["b"] == 1.0
    assert np.isnan(result.per_class["c"])
    assert result.average_accuracy == pytest.approx((2 / 3 + 1) / 2)
    assert result.confusion.tolist() == [[2, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert "| a | 3 | 0.667 |" in per_class_markdown(result)


def test_bad_shapes_refuse():
    with pytest.raises(ShapeError, match="4 scores per row for 3 classes"):
        classification_metrics(np.array([0]), np.zeros((1, 4)), ["a", "b", "c"])
    with pytest.raises(ShapeError, match="outside"):
        classification_metrics(np.array([5]), np.array([0]), ["a", "b"])
