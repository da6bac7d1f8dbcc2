"""Intersection, collar and segment F1 against sed_scores_eval and hand-worked cases."""

import numpy as np
import pytest
from sed_scores_eval import collar_based, intersection_based, segment_based
from sed_scores_eval.base_modules.scores import create_score_dataframe

from jaxaudio.metrics.sed import collar_f1, intersection_f1, segment_f1


import random_sed  # noqa: E402  (on the path via conftest.py)
RANDOM_SETS = [(0, {}), (1, dict(decimals=2)), (2, dict(variable_length=True))]


def _references(data, threshold):
    frames = data.sse_scores()
    return {
        "intersection": intersection_based.fscore(
            frames, data.ground_truth, threshold, dtc_threshold=0.5, gtc_threshold=0.5)[0],
        "collar": collar_based.fscore(
            frames, data.ground_truth, threshold, onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2)[0],
        "segment": segment_based.fscore(
            frames, data.ground_truth, data.durations, threshold, segment_length=1.0)[0],
    }


def _ours(data, threshold):
    return {
        "intersection": intersection_f1(*data.args(), threshold=threshold, dtc=0.5, gtc=0.5, cttc=0.3),
        "collar": collar_f1(*data.args(), threshold=threshold, onset_collar=0.2, offset_collar=0.2,
                            offset_collar_rate=0.2),
        "segment": segment_f1(*data.args(), threshold=threshold, segment_length=1.0),
    }


@pytest.mark.parametrize("seed,kwargs", RANDOM_SETS)
def test_f1_variants_match_sed_scores_eval(seed, kwargs):
    data = random_sed.random_sed_set(seed, 100, **kwargs)
    ours, refs = _ours(data, 0.5), _references(data, 0.5)
    for metric, (macro, per_class) in ours.items():
        print(f"{metric} F1: ours {macro:.6f}, sed_scores_eval {refs[metric]['macro_average']:.6f}")
        assert 0.02 < macro < 0.98
        assert abs(macro - refs[metric]["macro_average"]) < 1e-3
        for name in data.classes:
            assert per_class[name]["f1"] == pytest.approx(refs[metric][name], abs=1e-9)


def test_per_class_thresholds_match_sed_scores_eval():
    data = random_sed.random_sed_set(4, 60, gain=0.8)
    thresholds = {name: 0.2 + 0.06 * k for k, name in enumerate(data.classes)}
    ours, refs = _ours(data, thresholds), _references(data, thresholds)
    for metric, (macro, _) in ours.items():
        assert macro == pytest.approx(refs[metric]["macro_average"], abs=1e-9)


def test_hand_worked_case():
    # At threshold 0.5 (strictly greater): class a detects [2,6) and [7,8); class b detects
    # only [0,1) -- its frames at exactly 0.5 stay off.
    # Intersection: a: [2,6) is the event -> TP 1, [7,8) FP 1: P 1/2, R 1, F1 2/3; b: TP 0 -> 0.
    # Collar: the same matches -> a 2/3, b 0.
    # Segments (1 s = one frame): a detects 2,3,4,5,7 of active 2..5 -> P 4/5, R 1, F1 8/9;
    # b detects segment 0 only, active 7, 8 -> 0.
    args = random_sed.hand_case()
    macro, per_class = intersection_f1(*args)
    assert (per_class["a"]["tp"], per_class["a"]["fp"], per_class["b"]["fp"]) == (1, 1, 1)
    assert per_class["a"]["f1"] == pytest.approx(2 / 3) and macro == pytest.approx(1 / 3)
    assert collar_f1(*args)[0] == pytest.approx(1 / 3)
    macro, per_class = segment_f1(*args)
    assert per_class["a"]["f1"] == pytest.approx(8 / 9) and macro == pytest.approx(4 / 9)


def test_collar_uses_a_maximum_one_to_one_matching():
    # Events g1 = [1.0, 1.3), g2 = [1.4, 1.6); detections d2 = [0.9, 1.1) and d1 = [1.2, 1.45).
    # d2 fits only g1; d1 fits both (onsets within 0.2 s, offsets within 0.2 s). Matching d1 to
    # g1 first would leave one TP; the maximum matching d2-g1, d1-g2 gives 2 TP, F1 = 1.
    hop = 0.05
    ts = np.arange(201) * hop
    frame_scores = np.zeros((200, 1))
    frame_scores[18:22, 0] = 0.9  # [0.9, 1.1)
    frame_scores[24:29, 0] = 0.9  # [1.2, 1.45)
    gt = {"clip": [(1.0, 1.3, "a"), (1.4, 1.6, "a")]}
    args = ({"clip": frame_scores}, ts, gt, {"clip": 10.0}, ["a"])
    macro, per_class = collar_f1(*args)
    assert (per_class["a"]["tp"], per_class["a"]["fp"]) == (2, 0) and macro == pytest.approx(1.0)
    ref = collar_based.fscore({"clip": create_score_dataframe(frame_scores, ts, ["a"])}, gt, 0.5,
                              onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2)
    assert ref[0]["a"] == pytest.approx(1.0)


def test_no_detections_and_no_events():
    scores, ts, gt, durations, classes = random_sed.hand_case()
    silent = {"clip": np.zeros((10, 2))}
    for metric in (intersection_f1, collar_f1, segment_f1):
        macro, per_class = metric(silent, ts, gt, durations, classes)
        assert macro == 0.0 and per_class["a"]["precision"] == 1.0 and per_class["a"]["recall"] == 0.0
    # A class without reference events has no recall: NaN, and left out of the macro average.
    gt_without_b = {"clip": [(2.0, 6.0, "a")]}
    macro, per_class = intersection_f1(scores, ts, gt_without_b, durations, classes)
    assert np.isnan(per_class["b"]["f1"]) and macro == pytest.approx(2 / 3)
