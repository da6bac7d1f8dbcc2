"""Frame ROC AUC against scikit-learn's roc_auc_score, plus hand-worked cases."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxaudio.metrics.frame_auc import binary_auc, frame_auc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + 0.5 * labels, 1)  # rounding makes many ties
    assert binary_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_hand_worked():
    assert binary_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert binary_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert binary_auc([0.5, 0.5], [0, 1]) == 0.5            # a tie counts half
    assert np.isnan(binary_auc([0.1, 0.2], [0, 0]))            # no positive frame


def test_macro_mean_over_classes_with_both_kinds_of_frames():
    rng = np.random.default_rng(3)
    targets = {c: (rng.random((20, 3)) < 0.4).astype(np.float32) for c in "ab"}
    targets["a"][:, 2] = 0
    targets["b"][:, 2] = 0                                     # class 2 never active: left out
    scores = {c: rng.random((20, 3)) for c in "ab"}
    s = np.concatenate([scores["a"], scores["b"]])
    t = np.concatenate([targets["a"], targets["b"]])
    want = np.mean([roc_auc_score(t[:, k], s[:, k]) for k in range(2)])
    assert frame_auc(scores, targets) == pytest.approx(want, abs=1e-12)
