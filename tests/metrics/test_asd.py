"""ASD metrics (AUC, pAUC McClish and raw, DCASE2020 aggregation) against scikit-learn and hand-worked cases."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxaudio.errors import ConfigError, DataFormatError
from jaxaudio.metrics.asd import (ScoreRecord, asd_metrics, partial_auc_mcclish, partial_auc_raw,
                                  per_id_table_markdown, roc_auc, roc_curve)
from jaxaudio.metrics.asd_plots import plot_roc_curves


def _random_case(seed, n=300, anomaly_rate=0.3, ties=False):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < anomaly_rate).astype(int)
    labels[:2] = [0, 1]                                     # both classes present
    scores = rng.normal(size=n) + 0.8 * labels
    if ties:
        scores = np.round(scores, 1)                        # many ties, also across classes
    return labels, scores


CASES = [(seed, n, rate, ties) for seed in range(4) for (n, rate) in [(300, 0.3), (200, 0.05), (120, 0.9)]
         for ties in (False, True)]


@pytest.mark.parametrize("seed,n,rate,ties", CASES)
def test_vs_sklearn(seed, n, rate, ties):
    labels, scores = _random_case(seed, n, rate, ties)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    for p in (0.1, 0.3, 1.0):
        assert partial_auc_mcclish(labels, scores, p) == pytest.approx(
            roc_auc_score(labels, scores, max_fpr=p), abs=1e-12)


@pytest.mark.parametrize("seed,n,rate,ties", CASES)
def test_mcclish_is_the_standardised_raw_area(seed, n, rate, ties):
    labels, scores = _random_case(seed, n, rate, ties)
    for p in (0.1, 0.3):
        raw = partial_auc_raw(labels, scores, p)
        want = 0.5 * (1 + (p * raw - p * p / 2) / (p - p * p / 2))
        assert partial_auc_mcclish(labels, scores, p) == pytest.approx(want, abs=1e-12)


def test_raw_hand_worked():
    # normals 0.7, 0.6, 0.2, 0.1 (N- = 4); anomalies 0.9, 0.6 (N+ = 2; 0.6 ties a normal).
    # Thresholds from the top: 0.9 (a) -> (FPR, TPR) = (0, .5); 0.7 (n) -> (.25, .5);
    # 0.6 (n and a together: one diagonal step) -> (.5, 1); 0.2 -> (.75, 1); 0.1 -> (1, 1).
    # Full area: .25*.5 + .25*(.5+1)/2 + .5*1 = .125 + .1875 + .5 = .8125
    #   (pairs: 0.9 beats 4 normals, 0.6 beats 2 and ties 1: (4 + 2.5) / 8 = .8125).
    # p = 0.1: TPR = .5 on [0, .1]: area .05, raw = .05/.1 = .5;
    #   McClish .5*(1 + (.05 - .005)/(.1 - .005)) = .5*(1 + 9/19) = 14/19.
    # p = 0.4: [0, .25] at .5 -> .125; on the diagonal TPR(.4) = .5 + (.15/.25)*.5 = .8,
    #   trapezoid .15*(.5 + .8)/2 = .0975; area .2225, raw = .2225/.4 = .55625;
    #   McClish .5*(1 + (.2225 - .08)/(.4 - .08)) = .5*(1 + .1425/.32) = .72265625.
    labels = [0, 0, 0, 0, 1, 1]
    scores = [0.7, 0.6, 0.2, 0.1, 0.9, 0.6]
    fpr, tpr = roc_curve(labels, scores)
    np.testing.assert_allclose(fpr, [0, 0, .25, .5, .75, 1])
    np.testing.assert_allclose(tpr, [0, .5, .5, 1, 1, 1])
    assert roc_auc(labels, scores) == pytest.approx(0.8125, abs=1e-15)
    assert partial_auc_raw(labels, scores, 0.1) == pytest.approx(0.5, abs=1e-15)
    assert partial_auc_mcclish(labels, scores, 0.1) == pytest.approx(14 / 19, abs=1e-15)
    assert partial_auc_raw(labels, scores, 0.4) == pytest.approx(0.55625, abs=1e-15)
    assert partial_auc_mcclish(labels, scores, 0.4) == pytest.approx(0.72265625, abs=1e-15)
    assert partial_auc_mcclish(labels, scores, 0.4) == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.4))


def _paper_pauc(labels, scores, p):
    """Koizumi et al. 2020: (1/(K N+)) sum_{x+} sum_{top-K x-} H(A(x+) - A(x-)), K = floor(p N-)."""
    pos = scores[labels == 1]
    neg = np.sort(scores[labels == 0])[::-1]
    k = int(math.floor(p * neg.size + 1e-9))
    top = neg[:k]
    return float(np.sum(pos[:, None] > top[None, :])) / (k * pos.size)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_neg,n_pos,p", [(50, 20, 0.1), (40, 7, 0.3), (100, 100, 0.1)])
def test_raw_vs_paper_pair_formula(seed, n_neg, n_pos, p):
    rng = np.random.default_rng(100 + seed)
    scores = rng.normal(size=n_neg + n_pos) + np.r_[np.zeros(n_neg), np.full(n_pos, 1.0)]
    labels = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    assert np.unique(scores).size == scores.size             # no ties
    assert partial_auc_raw(labels, scores, p) == pytest.approx(_paper_pauc(labels, scores, p), abs=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_perfect_inverted_constant(p):
    labels = np.r_[np.zeros(30, int), np.ones(10, int)]
    perfect = np.r_[np.linspace(0, 1, 30), np.linspace(2, 3, 10)]
    assert (roc_auc(labels, perfect), partial_auc_raw(labels, perfect, p),
            partial_auc_mcclish(labels, perfect, p)) == (1.0, 1.0, 1.0)
    inverted = -perfect
    assert roc_auc(labels, inverted) == 0.0
    assert partial_auc_raw(labels, inverted, p) == 0.0
    # McClish maps a zero area to 0.5 * (1 - (p/2) / (1 - p/2)), not 0.
    assert partial_auc_mcclish(labels, inverted, p) == pytest.approx(0.5 * (1 - (p / 2) / (1 - p / 2)), abs=1e-15)
    constant = np.full(40, 0.3)                               # the diagonal ROC: chance
    assert roc_auc(labels, constant) == 0.5
    assert partial_auc_raw(labels, constant, p) == pytest.approx(p / 2, abs=1e-15)
    assert partial_auc_mcclish(labels, constant, p) == pytest.approx(0.5, abs=1e-15)


def test_single_class_and_bad_inputs():
    assert math.isnan(roc_auc([0, 0], [0.1, 0.2]))
    assert math.isnan(partial_auc_raw([1, 1], [0.1, 0.2]))
    with pytest.raises(DataFormatError, match="row 1"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(DataFormatError, match="label"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ConfigError, match="max_fpr"):
        partial_auc_raw([0, 1], [0.1, 0.2], max_fpr=0.0)


def _records():
    """Two machine types, two IDs each, imbalanced, with ties in one group."""
    rng = np.random.default_rng(7)
    records, truth = [], {}
    for mtype, ids in (("fan", ("id_00", "id_02")), ("ToyCar", ("id_01", "id_03"))):
        for j, mid in enumerate(ids):
            n_norm, n_anom = 25 + 5 * j, 8 + 3 * j
            labels = np.r_[np.zeros(n_norm, int), np.ones(n_anom, int)]
            scores = rng.normal(size=labels.size) + (0.5 + j) * labels
            if mtype == "ToyCar" and j == 0:
                scores = np.round(scores)
            truth[(mtype, mid)] = (labels, scores)
            records += [ScoreRecord(f"{mtype}/test/{'anomaly' if y else 'normal'}_{mid}_{i:08d}.wav",
                                    mtype, mid, int(y), float(s)) for i, (y, s) in enumerate(zip(labels, scores))]
    order = rng.permutation(len(records))                    # input order must not matter
    return [records[i] for i in order], truth


def test_aggregation_vs_sklearn_and_hand_means():
    records, truth = _records()
    result = asd_metrics(records, max_fpr=0.1)
    assert list(result.per_id) == sorted(truth)
    for key, (labels, scores) in truth.items():
        got = result.per_id[key]
        assert got["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert got["pauc"] == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1), abs=1e-12)
        assert got["pauc_raw"] == pytest.approx(partial_auc_raw(labels, scores, 0.1), abs=1e-12)
        assert (got["n_normal"], got["n_anomaly"]) == (int((labels == 0).sum()), int(labels.sum()))
    for m in ("auc", "pauc", "pauc_raw"):
        fan = (result.per_id[("fan", "id_00")][m] + result.per_id[("fan", "id_02")][m]) / 2
        toy = (result.per_id[("ToyCar", "id_01")][m] + result.per_id[("ToyCar", "id_03")][m]) / 2
        assert result.per_type["fan"][m] == pytest.approx(fan, abs=1e-15)
        assert result.per_type["ToyCar"][m] == pytest.approx(toy, abs=1e-15)
        assert result.overall[m] == pytest.approx((fan + toy) / 2, abs=1e-15)
    flat = result.to_dict()
    assert flat["fan/id_00/auc"] == result.per_id[("fan", "id_00")]["auc"]
    assert flat["ToyCar/pauc_raw"] == result.per_type["ToyCar"]["pauc_raw"]
    assert flat["pauc"] == result.overall["pauc"]
    assert flat["fan/id_02/n_anomaly"] == 11
    assert len(flat) == 4 * 5 + 2 * 3 + 3


def test_overall_is_mean_over_types_not_over_ids():
    # One type with three IDs, one with one: the two means differ, and DCASE2020 averages types.
    recs = []
    for mtype, mid, good in (("a", "id_0", True), ("a", "id_1", True), ("a", "id_2", True), ("b", "id_0", False)):
        for i, y in enumerate([0, 0, 1, 1]):
            s = float(y if good else 1 - y)
            recs.append(ScoreRecord(f"{mtype}_{mid}_{i}.wav", mtype, mid, y, s))
    result = asd_metrics(recs)
    assert result.per_type == {"a": {"auc": 1.0, "pauc": 1.0, "pauc_raw": 1.0},
                               "b": {"auc": 0.0, "pauc": pytest.approx(0.5 * (1 - 0.05 / 0.95)), "pauc_raw": 0.0}}
    assert result.overall["auc"] == 0.5


def test_aggregation_errors_name_group_and_file():
    records, _ = _records()
    no_anomaly = [r for r in records if not (r.machine_id == "id_02" and r.label == 1)]
    with pytest.raises(DataFormatError, match=r"'fan', ID 'id_02' has 30 normal and 0 anomalous") as err:
        asd_metrics(no_anomaly)
    assert "normal_id_02_" in err.value.path
    bad = list(records)
    bad[5] = ScoreRecord(bad[5].path, bad[5].machine_type, bad[5].machine_id, bad[5].label, float("nan"))
    with pytest.raises(DataFormatError, match="score is nan") as err:
        asd_metrics(bad)
    assert err.value.path == bad[5].path
    with pytest.raises(DataFormatError, match="scored twice"):
        asd_metrics(records + records[:1])
    with pytest.raises(DataFormatError, match="no records"):
        asd_metrics([])


def test_table_rows():
    records, _ = _records()
    result = asd_metrics(records)
    table = per_id_table_markdown(result)
    lines = table.strip().splitlines()
    assert "pAUC (McClish, as in the official DCASE2020 code)" in lines[0]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[:2] for row in body] == [
        ["ToyCar", "id_01"], ["ToyCar", "id_03"], ["**ToyCar**", "**mean**"],
        ["fan", "id_00"], ["fan", "id_02"], ["**fan**", "**mean**"], ["**all types**", "**average**"]]
    fan00 = result.per_id[("fan", "id_00")]
    assert body[3][2:] == ["25", "8", f"{100 * fan00['auc']:.2f}", f"{100 * fan00['pauc']:.2f}",
                           f"{100 * fan00['pauc_raw']:.2f}"]
    assert body[-1][2:4] == [str(25 + 30 + 25 + 30), str(8 + 11 + 8 + 11)]
    assert body[-1][4] == f"{100 * result.overall['auc']:.2f}"


def test_plot_writes_png(tmp_path):
    records, _ = _records()
    out = plot_roc_curves(records, tmp_path / "roc.png", title="test")
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
