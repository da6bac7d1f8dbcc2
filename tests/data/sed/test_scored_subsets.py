"""Validation and eval score every clip, as DESED_task and sed_scores_eval count them: a clip the
strong tsv does not list has no events, and its detections are false positives."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from sed_scores_eval import intersection_based
from sed_scores_eval.base_modules.scores import create_score_dataframe

from jaxaudio.data.sed.clips import ClipSource
from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, DESED_CLASSES, load_subset, read_classes
from jaxaudio.data.sed.labels import FrameLabelEncoder
from jaxaudio.errors import DataFormatError
from jaxaudio.evaluators.sed import score_clips

SPEC = DEFAULT_LAYOUT["validation"]
SR, SECONDS, FRAMES = 8000, 10.0, 156
PSDS1 = dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)
PSDS2 = dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _layout(root, names, strong_rows, durations=None):
    audio = root / SPEC.audio_dir
    audio.mkdir(parents=True, exist_ok=True)
    for name in names:
        sf.write(audio / name, np.zeros(SR // 10, np.float32), SR)
    _write(root / SPEC.strong_tsv, "filename\tonset\toffset\tevent_label\n" + "".join(r + "\n" for r in strong_rows))
    if durations is not None:
        _write(root / SPEC.durations_tsv, "filename\tduration\n" + "".join(f"{n}\t{d}\n" for n, d in durations))


def test_clips_the_strong_tsv_leaves_out_are_scored_without_events(tmp_path):
    names = ["a.wav", "b.wav", "c.wav", "d.wav"]
    _layout(tmp_path, names, ["a.wav\t0.5\t1.5\tDog", "c.wav\t\t\t"], [(n, 10.0) for n in names])
    records = {r.clip_id: r for r in load_subset(tmp_path, SPEC)}
    assert sorted(records) == ["a", "b", "c", "d"]  # b and d are in no strong row
    assert records["a"].events == ((0.5, 1.5, "Dog"),)
    assert records["b"].events == records["c"].events == records["d"].events == ()
    assert all(r.duration == 10.0 for r in records.values())


def test_without_a_durations_tsv_the_audio_folder_lists_the_clips(tmp_path):
    _layout(tmp_path, ["a.wav", "b.wav"], ["a.wav\t0.5\t1.5\tDog"])
    records = load_subset(tmp_path, SPEC)
    assert [(r.clip_id, r.events, r.duration) for r in records] == [("a", ((0.5, 1.5, "Dog"),), None),
                                                                    ("b", (), None)]


def test_audio_without_a_duration_is_named(tmp_path):
    _layout(tmp_path, ["a.wav", "b.wav"], ["a.wav\t0.5\t1.5\tDog"], [("a.wav", 10.0)])
    with pytest.raises(DataFormatError, match=r"validation_durations.tsv: no duration for clip 'b.wav'"):
        load_subset(tmp_path, SPEC)


def test_a_duration_without_audio_is_named_with_its_row(tmp_path):
    _layout(tmp_path, ["a.wav"], ["a.wav\t0.5\t1.5\tDog"], [("a.wav", 10.0), ("gone.wav", 10.0)])
    with pytest.raises(DataFormatError, match=r"row 3: lists clip 'gone.wav', which has no audio file"):
        load_subset(tmp_path, SPEC)


def test_a_strong_row_without_audio_is_named_with_its_row(tmp_path):
    _layout(tmp_path, ["a.wav"], ["a.wav\t0.5\t1.5\tDog", "gone.wav\t1\t2\tCat"], [("a.wav", 10.0)])
    with pytest.raises(DataFormatError, match=r"validation.tsv, row 3: references audio file .*gone.wav"):
        load_subset(tmp_path, SPEC)


def test_training_subsets_keep_to_their_tsv(tmp_path):
    """Only scored subsets take every clip: a training tsv still chooses its clips."""
    spec = DEFAULT_LAYOUT["synthetic_train"]
    (tmp_path / spec.audio_dir).mkdir(parents=True)
    for name in ("a.wav", "extra.wav"):
        sf.write(tmp_path / spec.audio_dir / name, np.zeros(80, np.float32), SR)
    _write(tmp_path / spec.strong_tsv, "filename\tonset\toffset\tevent_label\na.wav\t0\t1\tCat\n")
    assert [r.clip_id for r in load_subset(tmp_path, spec)] == ["a"]


@pytest.mark.parametrize("text,problem", [("", "lists no class"), ("a\nb\na\n", r"lists \['a'\] more than once"),
                                          ("a,b\n", r"class names \['a,b'\] contain a comma")])
def test_a_bad_classes_file_is_named(tmp_path, text, problem):
    _write(tmp_path / "metadata/classes.txt", text)
    with pytest.raises(DataFormatError, match=rf"classes.txt: {problem}"):
        read_classes(tmp_path)


def test_psds_with_event_free_clips_equals_sed_scores_eval_on_the_same_clips(tmp_path):
    """60 clips: 30 with events, 15 with empty rows and 15 that no strong row names. Our evaluator,
    reading the folder, must give sed_scores_eval's PSDS on all 60 clips; leaving the 15 unlisted
    clips out (the old reader) gives a different value, so this test can tell them apart."""
    rng = np.random.default_rng(0)
    names = [f"clip{i:02d}.wav" for i in range(60)]
    truth = {n[:-4]: [] for n in names}
    for i in range(30):
        for k in (i % 10, (i + 3) % 10):  # every class has events, same-class events never overlap
            onset = round(float(rng.uniform(0, 7)), 3)
            truth[names[i][:-4]].append((onset, round(onset + float(rng.uniform(0.5, 2.5)), 3), DESED_CLASSES[k]))
    rows = [f"{n}\t{on}\t{off}\t{label}" for n in names[:30] for on, off, label in truth[n[:-4]]]
    rows += [f"{n}\t\t\t" for n in names[30:45]]
    _layout(tmp_path, names, rows, [(n, SECONDS) for n in names])

    encoder = FrameLabelEncoder(DESED_CLASSES, SECONDS, FRAMES)
    source = ClipSource(load_subset(tmp_path, SPEC), SR, int(SR * SECONDS), encoder, cache=False)
    timestamps = encoder.timestamps()
    scores = {}
    for clip, events in truth.items():  # a mediocre system: noisy, with false alarms in event-free clips
        target = encoder.encode_strong(events)
        noise = np.apply_along_axis(lambda x: np.convolve(x, np.ones(9) / 3, "same"), 0,
                                    rng.normal(0, 1.0, target.shape))
        logits = 2.0 * (2 * target - 1) + noise
        scores[clip] = 1 / (1 + np.exp(-logits))

    ours = score_clips(scores, source)
    frames = {c: create_score_dataframe(s, timestamps, list(DESED_CLASSES)) for c, s in scores.items()}
    durations = {c: SECONDS for c in truth}
    reference = {name: intersection_based.psds(frames, truth, durations, **params)[0]
                 for name, params in (("psds1", PSDS1), ("psds2", PSDS2))}
    print(f"ours {ours['psds1']:.9f} / {ours['psds2']:.9f}, sed_scores_eval {reference}")
    assert 0.05 < reference["psds1"] < 0.95  # a curve with something to rank
    assert abs(ours["psds1"] - reference["psds1"]) <= 1e-6
    assert abs(ours["psds2"] - reference["psds2"]) <= 1e-6

    listed = [c for c in truth if c < "clip45"]
    without_unlisted = intersection_based.psds({c: frames[c] for c in listed}, {c: truth[c] for c in listed},
                                               {c: SECONDS for c in listed}, **PSDS1)[0]
    assert abs(without_unlisted - reference["psds1"]) > 1e-3


def test_max_filter_psds2_is_sed_scores_evals_psds2_of_max_filtered_scores(tmp_path):
    """MAT-SED's PSDS2 post-processing: the evaluator's psds2_max_filter equals sed_scores_eval's
    PSDS2 of the scores after scipy's class-wise maximum filter (windows 3 and 9 frames)."""
    from scipy import ndimage

    from jaxaudio.evaluators.sed import SEDEvaluator

    rng = np.random.default_rng(1)
    names = [f"clip{i:02d}.wav" for i in range(20)]
    truth = {n[:-4]: [] for n in names}
    for i in range(20):
        onset = round(float(rng.uniform(0, 6)), 3)
        truth[names[i][:-4]].append((onset, round(onset + float(rng.uniform(0.5, 2.0)), 3), DESED_CLASSES[i % 10]))
    rows = [f"{n}\t{on}\t{off}\t{label}" for n in names for on, off, label in truth[n[:-4]]]
    _layout(tmp_path, names, rows, [(n, SECONDS) for n in names])
    encoder = FrameLabelEncoder(DESED_CLASSES, SECONDS, FRAMES)
    source = ClipSource(load_subset(tmp_path, SPEC), SR, int(SR * SECONDS), encoder, cache=False)
    scores = {}
    for clip, events in truth.items():
        logits = 2.0 * (2 * encoder.encode_strong(events) - 1) + rng.normal(0, 1.5, (FRAMES, len(DESED_CLASSES)))
        scores[clip] = (1 / (1 + np.exp(-logits))).astype(np.float32)
    windows = (3, 9) * 5

    def predict(batch):
        ids = [source.records[i].clip_id if i >= 0 else None for i in batch["index"]]
        stacked = np.stack([scores[c] if c else np.zeros((FRAMES, 10), np.float32) for c in ids])
        return {"strong": stacked, "index": batch["index"]}

    metrics = SEDEvaluator(lambda: source, 8, windows, max_filter_psds2=True).run(predict)
    widened = {c: np.stack([ndimage.maximum_filter(s[:, k], size=windows[k], mode="reflect") for k in range(10)], 1)
               for c, s in scores.items()}
    timestamps = encoder.timestamps()
    frames = {c: create_score_dataframe(s, timestamps, list(DESED_CLASSES)) for c, s in widened.items()}
    reference = intersection_based.psds(frames, truth, {c: SECONDS for c in truth}, **PSDS2)[0]
    assert 0.02 < reference < 0.98
    assert abs(metrics["psds2_max_filter"] - reference) <= 1e-6
    assert metrics["psds2_max_filter"] != metrics["psds2"]
