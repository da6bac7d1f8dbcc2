"""ASD predict_files against a fake model whose score is known in closed form: the clip's mean
square plus its class index, so a cropped, padded or wrongly classed clip shows in its score.
(The trained GeCo end to end: tests/experiments/test_asd_thresholds.py.)"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.audio.io import read_audio
from jaxaudio.errors import ConfigError, DataFormatError
from jaxaudio.predict.asd import ASDPredictor, machine_class, predict_files

SR, CLIP = 16000, 8000   # 0.5-s clips
CLASSES = ("ToyCar/id_01", "fan/id_00", "fan/id_02")
THRESHOLDS = {"ToyCar/id_01": 0.5, "fan/id_00": 1.02, "fan/id_02": 2.5}


def fake_score(audio, class_id):
    return np.mean(np.asarray(audio, np.float64) ** 2, axis=1) + class_id


def make_predictor(calls=None):
    def score_batch(audio, class_id):
        assert audio.shape == (8, CLIP) and audio.dtype == np.float32 and class_id.shape == (8,)
        if calls is not None:
            calls.append(class_id.copy())
        return fake_score(audio, class_id)

    return ASDPredictor(score_batch=score_batch, batch_size=8, sample_rate=SR, clip_samples=CLIP,
                        class_names=CLASSES, thresholds=THRESHOLDS, thresholds_file="/w/thresholds/thresholds.json")


@pytest.mark.parametrize("path, expected", [
    ("/data/dev_data/fan/test/anomaly_id_02_00000012.wav", "fan/id_02"),   # the DCASE2020 layout
    ("/data/dev_data/fan/train/normal_id_00_00000000.wav", "fan/id_00"),
    ("recordings/fan/id_02_recording.wav", "fan/id_02"),                   # a folder per machine type
    ("site/ToyCar/2024/morning/ID_01-take3.flac", "ToyCar/id_01"),         # nearest type folder, any case
    ("/x/FAN/test/anomaly_id_00_1.wav", "fan/id_00"),
    ("/mnt/pump/fan/id_00_x.wav", "fan/id_00"),                            # the nearest type folder wins
])
def test_class_from_path(path, expected):
    assert machine_class(path, CLASSES) == expected


@pytest.mark.parametrize("path, says", [
    ("/data/recordings/id_02_recording.wav", "no parent folder is named a machine type"),
    ("/data/fan/recording.wav", "holds no machine ID"),
    ("/data/fan/valid_02_recording.wav", "holds no machine ID"),          # "valid_02" is no ID
    ("/data/fan/id_123_recording.wav", "holds no machine ID"),            # three digits are no DCASE ID
    ("/data/fan/id_00_vs_id_02.wav", "more than one machine ID (id_00, id_02)"),
    ("/data/fan/test/anomaly_id_05_00000001.wav", "fan/id_05 (from its path) is not one the model was trained"),
    ("/data/pump/test/normal_id_00_00000001.wav", "pump/id_00 (from its path) is not one the model was trained"),
])
def test_undecidable_or_unknown_class_names_the_file_and_the_classes(path, says):
    with pytest.raises(DataFormatError) as err:
        machine_class(path, CLASSES)
    assert err.value.path == path and says in err.value.problem
    assert "known classes: ToyCar/id_01, fan/id_00, fan/id_02" in str(err.value)


def test_machine_option_overrides_the_path():
    assert machine_class("/data/pump/normal_id_05_0.wav", CLASSES, machine="fan/id_02") == "fan/id_02"
    assert machine_class("anything.wav", CLASSES, machine="toycar/ID_01") == "ToyCar/id_01"
    for bad, says in (("fan/id_09", "not trained on this machine"), ("fan", "expected TYPE/id_XX"),
                      ("fan/00", "expected TYPE/id_XX")):
        with pytest.raises(ConfigError, match=says) as err:
            machine_class("x.wav", CLASSES, machine=bad)
        assert "known classes: ToyCar/id_01, fan/id_00, fan/id_02" in str(err.value)


def _wav(path: Path, audio, rate=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="FLOAT")
    return path


def test_scores_decisions_crop_pad_and_failures(tmp_path, caplog):
    rng = np.random.default_rng(0)
    loud = _wav(tmp_path / "in/fan/test/anomaly_id_00_00000001.wav", 0.3 * rng.standard_normal(CLIP))
    quiet = _wav(tmp_path / "in/fan/test/normal_id_00_00000002.wav", 0.05 * rng.standard_normal(CLIP))
    longer = np.concatenate([0.05 * rng.standard_normal(CLIP), 0.9 * np.ones(CLIP // 2)])  # the loud end is cropped
    long_path = _wav(tmp_path / "in/fan/id_02_long.wav", longer)
    short = _wav(tmp_path / "in/ToyCar/id_01_short.wav", 0.5 * rng.standard_normal(CLIP // 4))
    stereo_44k = _wav(tmp_path / "in/ToyCar/id_01_stereo.wav", 0.2 * rng.standard_normal((CLIP * 441 // 160, 2)),
                      rate=44100)
    # failures: no machine, unknown machine, an empty wav, text named .wav, a silent clip
    _wav(tmp_path / "in/misc/recording.wav", 0.1 * rng.standard_normal(CLIP))
    _wav(tmp_path / "in/fan/id_07_x.wav", 0.1 * rng.standard_normal(CLIP))
    _wav(tmp_path / "in/fan/id_00_empty.wav", np.zeros(0))
    (tmp_path / "in/fan/id_00_text.wav").write_text("not audio\n")
    _wav(tmp_path / "in/fan/id_00_silent.wav", np.zeros(CLIP))
    calls = []
    summary = predict_files(make_predictor(calls), [str(tmp_path / "in"), str(tmp_path / "missing.wav")],
                            str(tmp_path / "out"), progress=False)

    failed = {Path(f["path"]).name: f["error"] for f in summary["failed"]}
    assert set(failed) == {"missing.wav", "recording.wav", "id_07_x.wav", "id_00_empty.wav", "id_00_text.wav",
                           "id_00_silent.wav"}
    assert "does not exist" in failed["missing.wav"]
    assert "no parent folder is named a machine type" in failed["recording.wav"]
    assert "fan/id_07 (from its path) is not one the model was trained on" in failed["id_07_x.wav"]
    assert "empty" in failed["id_00_empty.wav"] and "silent" in failed["id_00_silent.wav"]
    assert "unreadable" in failed["id_00_text.wav"] or "decode" in failed["id_00_text.wav"]
    for name in failed:
        assert any(name in r.getMessage() for r in caplog.records if r.levelname == "ERROR"), name
    assert summary["files"] == 11 and summary["written"] == 5
    assert sum(len(c) for c in calls) == 8   # the five scored files went through in one padded batch
    assert list(calls[0][5:]) == [-1, -1, -1]

    with open(tmp_path / "out/scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == sorted(r["file"] for r in rows)   # as found: sorted paths
    by_name = {Path(r["file"]).name: r for r in rows}
    expected_audio = {
        loud: read_audio(loud, SR), quiet: read_audio(quiet, SR), long_path: longer[:CLIP],
        short: np.pad(read_audio(short, SR), (0, CLIP - CLIP // 4)), stereo_44k: read_audio(stereo_44k, SR)[:CLIP],
    }
    for path, audio in expected_audio.items():
        row = by_name[path.name]
        k = CLASSES.index(f"{row['machine_type']}/{row['machine_id']}")
        expected = float(fake_score(np.float32(audio)[None], np.array([k]))[0])
        assert float(row["score"]) == pytest.approx(expected, rel=1e-6), path.name
        assert float(row["threshold"]) == THRESHOLDS[CLASSES[k]]
        assert row["decision"] == ("anomaly" if float(row["score"]) > float(row["threshold"]) else "normal")
    assert by_name[loud.name]["decision"] == "anomaly" and by_name[quiet.name]["decision"] == "normal"
    assert by_name[long_path.name]["machine_type"] == "fan" and by_name[long_path.name]["machine_id"] == "id_02"

    written = json.loads((tmp_path / "out/summary.json").read_text())
    assert written["failed"] == summary["failed"] and written["thresholds_file"] == "/w/thresholds/thresholds.json"
    assert written["anomalies"] + written["normals"] == 5 and written["cropped"] == 1 and written["padded"] == 1
    notes = {Path(c["path"]).name: c["note"] for c in written["clips"]}
    assert "cropped" in notes[long_path.name] and "zero-padded" in notes[short.name] and notes[loud.name] is None


def test_machine_option_applies_to_every_file(tmp_path):
    clip = _wav(tmp_path / "anywhere/take.wav", 0.1 * np.random.default_rng(1).standard_normal(CLIP))
    summary = predict_files(make_predictor(), [str(clip)], str(tmp_path / "out"), machine="fan/id_02", progress=False)
    (row,) = summary["clips"]
    assert row["class"] == "fan/id_02" and row["score"] == pytest.approx(2 + np.mean(read_audio(clip, SR) ** 2.0))
    with pytest.raises(ConfigError, match="known classes"):
        predict_files(make_predictor(), [str(clip)], str(tmp_path / "out"), machine="pump/id_00", progress=False)


def test_predictor_checks_its_thresholds():
    with pytest.raises(ValueError, match=r"no threshold for \['fan/id_02'\]"):
        ASDPredictor(score_batch=fake_score, batch_size=8, sample_rate=SR, clip_samples=CLIP, class_names=CLASSES,
                     thresholds={"ToyCar/id_01": 1.0, "fan/id_00": 1.0})
