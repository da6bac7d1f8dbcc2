"""DESED tsv readers and subset loading on a small hand-written layout."""
import logging

import numpy as np
import pytest

from jaxaudio.audio.io import write_audio
from jaxaudio.data.sed.desed import (
    DEFAULT_LAYOUT,
    DESED_CLASSES,
    ClipRecord,
    SubsetSpec,
    list_audio,
    load_subset,
    read_durations_tsv,
    read_strong_tsv,
    read_weak_tsv,
)
from jaxaudio.errors import ConfigError, DataFormatError

STRONG = "filename\tonset\toffset\tevent_label\n"


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _wav(path):
    write_audio(path, np.zeros(160, np.float32), 16000)


def test_read_strong_tsv_with_empty_clip(tmp_path):
    tsv = _write(
        tmp_path / "s.tsv",
        "filename\tonset\toffset\tevent_label\n"
        "a.wav\t0.163\t0.665\tAlarm_bell_ringing\n"
        "a.wav\t1.0\t2.5\tDog\n"
        "b.wav\t\t\t\n",
    )
    got = read_strong_tsv(tsv)
    assert got == {"a.wav": [(0.163, 0.665, "Alarm_bell_ringing"), (1.0, 2.5, "Dog")], "b.wav": []}


def test_read_strong_accepts_pandas_nan_and_reordered_columns(tmp_path):
    tsv = _write(
        tmp_path / "s.tsv",
        "event_label\tfilename\toffset\tonset\nNaN\tc.wav\tNaN\tNaN\nCat\td.wav\t3\t2\n",
    )
    assert read_strong_tsv(tsv) == {"c.wav": [], "d.wav": [(2.0, 3.0, "Cat")]}


def test_read_weak_and_durations(tmp_path):
    weak = _write(
        tmp_path / "w.tsv", "filename\tevent_labels\nx.wav\tAlarm_bell_ringing,Dog\ny.wav\tSpeech\n"
    )
    assert read_weak_tsv(weak) == {"x.wav": ["Alarm_bell_ringing", "Dog"], "y.wav": ["Speech"]}
    dur = _write(tmp_path / "d.tsv", "filename\tduration\nx.wav\t10.0\ny.wav\t7.25\n")
    assert read_durations_tsv(dur) == {"x.wav": 10.0, "y.wav": 7.25}


@pytest.mark.parametrize(
    "row, problem",
    [
        ("a.wav\t-1\t2\tDog", "non-negative"),
        ("a.wav\tone\t2\tDog", "is not a number"),
        ("a.wav\t1\t\tDog", "all be set"),
        ("a.wav\tinf\t2\tDog", "finite"),
    ],
)
def test_bad_times_name_row_and_problem(tmp_path, row, problem):
    header = "filename\tonset\toffset\tevent_label\n"
    tsv = _write(tmp_path / "s.tsv", header + "ok.wav\t0\t1\tCat\n" + row + "\n")
    with pytest.raises(DataFormatError, match=problem) as err:
        read_strong_tsv(tsv)
    assert err.value.row == 3 and "s.tsv, row 3" in str(err.value)


def test_duplicate_weak_row_is_refused(tmp_path):
    weak = _write(tmp_path / "w.tsv", "filename\tevent_labels\nx.wav\tDog\nx.wav\tCat\n")
    with pytest.raises(DataFormatError, match="already listed at row 2") as err:
        read_weak_tsv(weak)
    assert err.value.row == 3


def test_list_audio_sorted_and_filtered(tmp_path):
    for name in ["b.wav", "a.flac", "c.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert list_audio(tmp_path) == ["a.flac", "b.wav"]


def _layout(root):
    """A miniature DESED tree with every DEFAULT_LAYOUT subset."""
    for name in ["s1.wav", "s2.wav"]:
        _wav(root / "audio/train/synthetic21_train/soundscapes" / name)
    _write(
        root / "metadata/train/synthetic21_train/soundscapes.tsv",
        "filename\tonset\toffset\tevent_label\ns2.wav\t0.5\t1.0\tDog\ns1.wav\t\t\t\n",
    )
    # AudioSet strong: r3.wav is listed but was never downloaded; r4.wav has no events.
    for name in ["r1.wav", "r2.wav", "r4.wav", "unlisted.wav"]:
        _wav(root / "audio/train/strong_label_real" / name)
    _write(
        root / "metadata/train/audioset_strong.tsv",
        STRONG + "r2.wav\t0.1\t0.9\tCat\nr1.wav\t1.0\t2.0\tDog\nr3.wav\t0\t1\tSpeech\n"
        "r1.wav\t3.0\t4.5\tBlender\nr4.wav\t\t\t\n",
    )
    for name in ["w1.wav", "w2.wav", "extra.wav"]:
        _wav(root / "audio/train/weak" / name)
    _write(
        root / "metadata/train/weak.tsv",
        "filename\tevent_labels\nw1.wav\tCat,Dog\nw2.wav\tSpeech\n",
    )
    for name in ["u2.wav", "u1.flac"]:
        _wav(root / "audio/train/unlabel_in_domain" / name)
    _wav(root / "audio/validation/validation/v1.wav")
    _write(root / "metadata/validation/validation.tsv", STRONG + "v1.wav\t0\t1\tFrying\n")
    _write(
        root / "metadata/validation/validation_durations.tsv",
        "filename\tduration\nv1.wav\t10.0\n",
    )
    _wav(root / "audio/eval/public/e1.wav")
    _write(root / "metadata/eval/public.tsv", STRONG + "e1.wav\t2\t3\tBlender\n")
    _write(root / "metadata/eval/public_durations.tsv", "filename\tduration\ne1.wav\t9.5\n")


def test_load_default_layout(tmp_path):
    _layout(tmp_path)
    subsets = {name: load_subset(tmp_path, spec) for name, spec in DEFAULT_LAYOUT.items()}
    synth = subsets["synthetic_train"]
    assert [r.clip_id for r in synth] == ["s1", "s2"]
    assert synth[0].events == () and synth[1].events == ((0.5, 1.0, "Dog"),)
    assert synth[0].weak is None and synth[0].duration is None
    assert synth[1].path == str(tmp_path / "audio/train/synthetic21_train/soundscapes/s2.wav")
    # Real strong: the missing r3.wav is skipped, unlisted audio ignored, r4.wav without events.
    assert [(r.clip_id, r.events, r.weak) for r in subsets["strong_real"]] == [
        ("r1", ((1.0, 2.0, "Dog"), (3.0, 4.5, "Blender")), None),
        ("r2", ((0.1, 0.9, "Cat"),), None),
        ("r4", (), None),
    ]
    assert subsets["strong_real"][0].path == str(tmp_path / "audio/train/strong_label_real/r1.wav")
    # Weak: only clips the tsv lists; extra audio in the folder is not part of the subset.
    assert [(r.clip_id, r.weak, r.events) for r in subsets["weak"]] == [
        ("w1", ("Cat", "Dog"), None),
        ("w2", ("Speech",), None),
    ]
    assert [(r.clip_id, r.events, r.weak) for r in subsets["unlabeled"]] == [
        ("u1", None, None),
        ("u2", None, None),
    ]
    assert subsets["validation"] == [
        ClipRecord(
            str(tmp_path / "audio/validation/validation/v1.wav"),
            "v1",
            ((0.0, 1.0, "Frying"),),
            None,
            10.0,
        )
    ]
    assert subsets["eval"][0].duration == 9.5


def test_missing_duration_for_a_clip(tmp_path):
    _layout(tmp_path)
    _write(tmp_path / "metadata/eval/public_durations.tsv", "filename\tduration\nother.wav\t9.5\n")
    with pytest.raises(DataFormatError, match="no duration for clip 'e1.wav'") as err:
        load_subset(tmp_path, DEFAULT_LAYOUT["eval"])
    assert "public_durations.tsv" in str(err.value)


def test_missing_folders(tmp_path):
    with pytest.raises(DataFormatError, match="audio folder does not exist") as err:
        load_subset(tmp_path, DEFAULT_LAYOUT["unlabeled"])
    assert "unlabel_in_domain" in str(err.value)
    (tmp_path / "audio/train/weak").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="metadata file does not exist") as err:
        load_subset(tmp_path, DEFAULT_LAYOUT["weak"])
    assert "weak.tsv" in str(err.value)


def test_custom_classes(tmp_path):
    tsv = _write(tmp_path / "s.tsv", "filename\tonset\toffset\tevent_label\na.wav\t0\t1\tcow\n")
    assert read_strong_tsv(tsv, classes=("cow",)) == {"a.wav": [(0.0, 1.0, "cow")]}
    assert len(DESED_CLASSES) == 10 and SubsetSpec("x", "a").strong_tsv is None


class _Records(logging.Handler):
    """Collects the reader's log records (its logger may not propagate to the root)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def reader_log():
    logger = logging.getLogger("jaxaudio.data.sed.desed")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_real_strong_layout_is_desed_s():
    spec = DEFAULT_LAYOUT["strong_real"]
    assert (spec.audio_dir, spec.strong_tsv) == ("audio/train/strong_label_real", "metadata/train/audioset_strong.tsv")
    assert (spec.weak_tsv, spec.durations_tsv, spec.scored, spec.missing_audio) == (None, None, False, "skip")
    assert {name: s.missing_audio for name, s in DEFAULT_LAYOUT.items() if name != "strong_real"} == dict.fromkeys(
        ["synthetic_train", "weak", "unlabeled", "validation", "eval"], "error")


def test_missing_real_strong_audio_is_skipped_with_one_warning(tmp_path, reader_log):
    _layout(tmp_path)
    records = load_subset(tmp_path, DEFAULT_LAYOUT["strong_real"])
    assert [r.clip_id for r in records] == ["r1", "r2", "r4"]
    assert len(reader_log) == 1 and reader_log[0].levelno == logging.WARNING
    message = reader_log[0].getMessage()
    assert str(tmp_path / "metadata/train/audioset_strong.tsv") in message
    assert "1 of its 4 clips" in message and "'r3.wav'" in message
    reader_log.clear()
    (tmp_path / "audio/train/strong_label_real/r3.wav").touch()  # present (empty files are not read here)
    assert [r.clip_id for r in load_subset(tmp_path, DEFAULT_LAYOUT["strong_real"])] == ["r1", "r2", "r3", "r4"]
    assert reader_log == []


def test_skip_warning_names_a_few_of_many(tmp_path, reader_log):
    rows = "".join(f"gone{i:02d}.wav\t0\t1\tDog\n" for i in range(12))
    _write(tmp_path / "meta/strong.tsv", STRONG + "here.wav\t0\t1\tCat\n" + rows)
    _wav(tmp_path / "audio/here.wav")
    spec = SubsetSpec("real", "audio", strong_tsv="meta/strong.tsv", missing_audio="skip")
    assert [r.clip_id for r in load_subset(tmp_path, spec)] == ["here"]
    (record,) = reader_log
    message = record.getMessage()
    assert "12 of its 13 clips" in message and "'gone00.wav'" in message and "'gone04.wav'" in message
    assert "'gone05.wav'" not in message and "and 7 more" in message


def test_missing_audio_stays_fatal_elsewhere(tmp_path, reader_log):
    _layout(tmp_path)
    _write(tmp_path / "metadata/train/synthetic21_train/soundscapes.tsv",
           STRONG + "s1.wav\t\t\t\ngone.wav\t0\t1\tDog\n")
    with pytest.raises(DataFormatError, match="soundscapes.tsv, row 3: references audio file .*gone.wav"):
        load_subset(tmp_path, DEFAULT_LAYOUT["synthetic_train"])
    _write(tmp_path / "metadata/eval/public.tsv", STRONG + "gone.wav\t2\t3\tBlender\n")
    with pytest.raises(DataFormatError, match="public.tsv, row 2: references audio file .*gone.wav"):
        load_subset(tmp_path, DEFAULT_LAYOUT["eval"])
    assert reader_log == []


def test_subset_spec_refuses_bad_missing_audio():
    with pytest.raises(ConfigError, match="missing_audio 'ignore'"):
        SubsetSpec("x", "a", missing_audio="ignore")
    with pytest.raises(ConfigError, match="scored subset"):
        SubsetSpec("x", "a", strong_tsv="t.tsv", scored=True, missing_audio="skip")
