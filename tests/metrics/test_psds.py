"""PSDS against sed_scores_eval (exact, threshold-free), closed forms and a hand-worked case."""
import pathlib
import time

import numpy as np
import pytest
from sed_scores_eval import intersection_based
from sed_scores_eval.base_modules.scores import create_score_dataframe

from jaxaudio.errors import ConfigError, DataFormatError
from jaxaudio.metrics.psds import score_runs
from jaxaudio.metrics.sed import plot_psd_roc, psds, psds1, psds2


import random_sed  # noqa: E402  (on the path via conftest.py)

SCENARIO_1 = dict(dtc_threshold=0.7, gtc_threshold=0.7, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)
SCENARIO_2 = dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0,
                  max_efpr=100.0)

# Three kinds of set: smooth scores, scores rounded to 2 decimals (many ties), clips of 4-10 s.
RANDOM_SETS = [(0, {}), (1, dict(decimals=2)), (2, dict(variable_length=True))]


def _compare(data, ours_fn, reference_params):
    start = time.perf_counter()
    ours = ours_fn(*data.args())
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = intersection_based.psds(data.sse_scores(), data.ground_truth, data.durations, **reference_params)
    ref_s = time.perf_counter() - start
    print(f"{ours_fn.__name__}: ours {ours.value:.6f} ({ours_s:.2f} s), sed_scores_eval {ref[0]:.6f} ({ref_s:.2f} s)")
    return ours, ref


@pytest.mark.parametrize("seed,kwargs", RANDOM_SETS)
def test_psds1_and_psds2_match_sed_scores_eval(seed, kwargs):
    data = random_sed.random_sed_set(seed, 100, **kwargs)
    for ours_fn, params in [(psds1, SCENARIO_1), (psds2, SCENARIO_2)]:
        ours, (ref_value, _, (ref_tpr, ref_efpr), ref_classes) = _compare(data, ours_fn, params)
        assert 0.05 < ours.value < 0.99  # a non-trivial curve, not a corner case
        assert abs(ours.value - ref_value) < 1e-3
        np.testing.assert_allclose(ours.efpr, ref_efpr, rtol=1e-9)
        np.testing.assert_allclose(ours.effective_tpr, ref_tpr, atol=1e-9)
        for name, (efpr, tpr) in ours.per_class.items():
            np.testing.assert_allclose(efpr, ref_classes[name][1], rtol=1e-9)
            np.testing.assert_allclose(tpr, ref_classes[name][0], atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("ours_fn,params", [(psds1, SCENARIO_1), (psds2, SCENARIO_2)])
def test_psds_matches_sed_scores_eval_on_1000_clips(ours_fn, params):
    data = random_sed.random_sed_set(7, 1000)
    ours, ref = _compare(data, ours_fn, params)
    assert abs(ours.value - ref[0]) < 1e-3


def _grid_set(events_by_clip, classes, frames=100, hop=0.1):
    """Scores that are exactly 1 inside events (aligned to the frame grid) and 0 elsewhere."""
    ts = np.arange(frames + 1) * hop
    scores = {}
    for clip, events in events_by_clip.items():
        s = np.zeros((frames, len(classes)))
        for onset, offset, label in events:
            s[int(round(onset / hop)): int(round(offset / hop)), classes.index(label)] = 1.0
        scores[clip] = s
    durations = {clip: frames * hop for clip in events_by_clip}
    return scores, ts, events_by_clip, durations, classes


def _aligned_events(seed, num_clips=30):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    events = {}
    for i in range(num_clips):
        clip_events = []
        for k, label in enumerate(classes):
            if rng.random() < 0.5 or i == k:  # overlapping classes allowed; every class appears
                onset = int(rng.integers(0, 60)) / 10
                clip_events.append((onset, onset + int(rng.integers(5, 40)) / 10, label))
        events[f"c{i}"] = clip_events if i % 7 != 6 else []  # some clips without events
    return events, classes


def test_perfect_system_scores_one():
    events, classes = _aligned_events(0)
    result = psds1(*_grid_set(events, classes))
    assert result.value == pytest.approx(1.0, abs=1e-12)
    assert result.effective_tpr[0] == pytest.approx(1.0)  # already at eFPR 0


def test_system_that_detects_nothing_scores_zero():
    events, classes = _aligned_events(1)
    scores, ts, gt, durations, _ = _grid_set(events, classes)
    silent = {clip: np.zeros_like(s) for clip, s in scores.items()}
    result = psds1(silent, ts, gt, durations, classes)
    assert result.value == 0.0
    assert np.all(result.effective_tpr == 0.0)


def test_hand_worked_case():
    # Class a (event [2, 6)), dtc = gtc = 0.7:
    #   s = 0.9: runs [2,3) and [5,6) lie inside the event but cover only 2/4 < 0.7 -> TP 0, FP 0
    #   s = 0.8: run [2,6) covers the event                                        -> TP 1, FP 0
    #   s = 0.6: also [7,8), outside every event                                   -> TP 1, FP 1
    #   s = 0  : the whole clip [0,10) has only 4/10 inside the event (< dtc)      -> TP 0, FP 1
    #   so class a reaches TPR 1 at eFPR 0.
    # Class b (event [7, 9)):
    #   s = 0.6: [0,1) is a false positive                                          -> TPR 0, eFPR 0.1
    #   s = 0.5: [7,9) equals the event                                             -> TPR 1, eFPR 0.1
    #   s = 0.2: [7,10) has 2/3 < 0.7 inside the event, [0,1) still false           -> TPR 0, eFPR 0.2
    #   so class b: TPR 0 on [0, 0.1), 1 from 0.1.
    # Effective curve with alpha_st = 1: eFPR 0: mean 0.5 - std 0.5 = 0; from 0.1: 1 - 0 = 1.
    # Area up to max_efpr 0.5: 1 * (0.5 - 0.1) = 0.4 -> PSDS = 0.4 / 0.5 = 0.8.
    # With alpha_st = 0: 0.5 * 0.1 + 1 * 0.4 = 0.45 -> PSDS = 0.9.
    args = random_sed.hand_case()
    params = dict(dtc_threshold=0.7, gtc_threshold=0.7, max_efpr=0.5, unit_of_time="second")
    result = psds(*args, alpha_st=1.0, **params)
    assert result.value == pytest.approx(0.8, abs=1e-12)
    np.testing.assert_allclose(result.per_class["a"][1], [1.0])
    np.testing.assert_allclose(result.per_class["b"][0], [0.0, 0.1])
    np.testing.assert_allclose(result.per_class["b"][1], [0.0, 1.0])
    assert psds(*args, alpha_st=0.0, **params).value == pytest.approx(0.9, abs=1e-12)
    # sed_scores_eval agrees on the same case.
    scores, ts, gt, durations, classes = args
    frames = {"clip": create_score_dataframe(scores["clip"], ts, classes)}
    ref = intersection_based.psds(frames, gt, durations, alpha_st=1.0, **params)
    assert ref[0] == pytest.approx(0.8, abs=1e-12)


def test_class_without_events_is_left_out_with_a_warning():
    scores, ts, gt, durations, classes = random_sed.hand_case()
    scores = {"clip": np.concatenate([scores["clip"], np.full((10, 1), 0.3)], axis=1)}
    params = dict(dtc_threshold=0.7, gtc_threshold=0.7, max_efpr=0.5, unit_of_time="second")
    with pytest.warns(UserWarning, match="'c'"):
        result = psds(scores, ts, gt, durations, classes + ["c"], **params)
    assert result.value == pytest.approx(0.8, abs=1e-12)
    assert result.params["classes_without_events"] == ["c"]


def test_bad_inputs_raise_errors_that_name_the_problem():
    scores, ts, gt, durations, classes = random_sed.hand_case()
    with pytest.raises(ConfigError, match="cttc_threshold"):
        psds(scores, ts, gt, durations, classes, dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=0.3)
    with pytest.raises(DataFormatError, match="ground_truth"):
        psds1(scores, ts, {}, durations, classes)
    with pytest.raises(DataFormatError, match="overlap"):
        psds1(scores, ts, {"clip": [(1.0, 3.0, "a"), (2.0, 4.0, "a")]}, durations, classes)
    with pytest.raises(DataFormatError, match="timestamps"):
        psds1(scores, ts[:-1], gt, durations, classes)


def test_score_runs_match_a_sweep_over_all_thresholds():
    # Brute force: at every distinct score s, the maximal runs of frames with score >= s.
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(40, 23)).astype(float)  # small integers: many ties
    scores[::3, 17:] = -np.inf  # shorter rows, padded
    row, first, stop, low, neighbour = score_runs(scores, max_chunk_size=100)  # several chunks
    found = set()
    for r, f, s, m, n in zip(row, first, stop, low, neighbour):
        assert scores[r, m] == scores[r, f:s].min() and np.all(scores[r, f:m] > scores[r, m])
        lo = scores[r, n] if n >= 0 else -np.inf
        found.add((r, f, s, scores[r, m], lo))
    expected = set()
    for r, x in enumerate(scores):
        for s_value in np.unique(x[np.isfinite(x)]):
            active = np.r_[False, x >= s_value, False]
            starts = np.nonzero(active[1:] & ~active[:-1])[0]
            stops = np.nonzero(~active[1:] & active[:-1])[0]
            for f, s in zip(starts, stops):
                neighbours = [x[i] for i in (f - 1, s) if 0 <= i < len(x)]
                expected.add((r, f, s, x[f:s].min(), max(neighbours, default=-np.inf)))
    assert found == expected and len(found) == len(row)


def test_plot_writes_a_png(tmp_path):
    data = random_sed.random_sed_set(3, 30)
    result = psds2(*data.args())
    path = plot_psd_roc(result, tmp_path / "psd_roc.png", title="random set")
    content = pathlib.Path(path).read_bytes()
    assert content.startswith(b"\x89PNG") and len(content) > 5000
