"""The DCASE2020 task 2 reader: scan order and labels, ID classes, the clip Source through the
batchers, and every bad-input case naming its file."""
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.data.asd import (
    ASDClipSource,
    ASDFile,
    format_summary,
    machine_id_classes,
    parse_name,
    scan,
    summary,
)
from jaxaudio.data.source import Source, eval_batches, mixed_batches
from jaxaudio.errors import AudioFileError, ConfigError, DataFormatError

SR = 16000
CLIP = 8000  # 0.5 s

# (path under the root, samples): fan clips are 0.5 s except one short one (padded), ToyCar ones
# 0.55 s (cropped), as ToyADMOS clips are longer than MIMII ones.
LAYOUT = [
    ("dev_data/fan/train/normal_id_00_00000000.wav", 8000),
    ("dev_data/fan/train/normal_id_00_00000001.wav", 6400),
    ("dev_data/fan/train/normal_id_02_00000000.wav", 8000),
    ("dev_data/fan/train/normal_id_02_00000001.wav", 8000),
    ("dev_data/fan/test/normal_id_00_00000000.wav", 8000),
    ("dev_data/fan/test/anomaly_id_00_00000000.wav", 8000),
    ("dev_data/fan/test/normal_id_02_00000000.wav", 8000),
    ("dev_data/fan/test/anomaly_id_02_00000000.wav", 8000),
    ("dev_data/ToyCar/train/normal_id_01_00000000.wav", 8800),
    ("dev_data/ToyCar/train/normal_id_01_00000001.wav", 8800),
    ("dev_data/ToyCar/test/normal_id_01_00000000.wav", 8800),
    ("dev_data/ToyCar/test/anomaly_id_01_00000000.wav", 8800),
    ("eval_data/fan/test/id_01_00000000.wav", 8000),
    ("eval_data/fan/test/id_03_00000000.wav", 8000),
    ("additional_train_data/fan/train/normal_id_01_00000000.wav", 8000),
    ("additional_train_data/fan/train/normal_id_01_00000001.wav", 8000),
]

# The order scan must give, by hand: subset, machine type ("ToyCar" < "fan": upper case first),
# train before test, machine ID, then file name ("anomaly_" < "normal_").
DEV_ORDER = [
    ("dev_data/ToyCar/train/normal_id_01_00000000.wav", "ToyCar", "id_01", "train", 0),
    ("dev_data/ToyCar/train/normal_id_01_00000001.wav", "ToyCar", "id_01", "train", 0),
    ("dev_data/ToyCar/test/anomaly_id_01_00000000.wav", "ToyCar", "id_01", "test", 1),
    ("dev_data/ToyCar/test/normal_id_01_00000000.wav", "ToyCar", "id_01", "test", 0),
    ("dev_data/fan/train/normal_id_00_00000000.wav", "fan", "id_00", "train", 0),
    ("dev_data/fan/train/normal_id_00_00000001.wav", "fan", "id_00", "train", 0),
    ("dev_data/fan/train/normal_id_02_00000000.wav", "fan", "id_02", "train", 0),
    ("dev_data/fan/train/normal_id_02_00000001.wav", "fan", "id_02", "train", 0),
    ("dev_data/fan/test/anomaly_id_00_00000000.wav", "fan", "id_00", "test", 1),
    ("dev_data/fan/test/normal_id_00_00000000.wav", "fan", "id_00", "test", 0),
    ("dev_data/fan/test/anomaly_id_02_00000000.wav", "fan", "id_02", "test", 1),
    ("dev_data/fan/test/normal_id_02_00000000.wav", "fan", "id_02", "test", 0),
]


def _at(path) -> str:
    """A path as a regex that matches it literally."""
    return re.escape(str(path))


def _write(path: Path, samples: int = CLIP, rate: int = SR, seed: int = 0, data=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = 0.1 * np.random.default_rng(seed).standard_normal(samples)
    sf.write(str(path), np.asarray(data, np.float64), rate, subtype="PCM_16")
    return path


def _dev_layout(root: Path, test_names=("normal_id_00_00000000.wav", "anomaly_id_00_00000000.wav")):
    """A minimal valid dev set (fan, one ID), for the error cases to break."""
    _write(root / "dev_data/fan/train/normal_id_00_00000000.wav")
    for i, name in enumerate(test_names):
        _write(root / "dev_data/fan/test" / name, seed=i + 1)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcase2020_t2")
    for seed, (relative, samples) in enumerate(LAYOUT):
        _write(root / relative, samples, seed=seed)
    return root


def _relative(files, root):
    return [Path(f.path).relative_to(root).as_posix() for f in files]


def test_parse_name():
    assert parse_name("x/normal_id_00_00000000.wav") == (0, "id_00")
    assert parse_name("anomaly_id_02_00000123.wav") == (1, "id_02")
    assert parse_name("/a/b/id_05_00000000.wav") == (None, "id_05")
    for bad in ("normal_00_00000000.wav", "normal_id_0_00000000.wav", "id_05.wav", "fan_id_00_0.wav",
                "normal_id_00_00000000.flac"):
        with pytest.raises(DataFormatError, match=rf"{_at(bad)}.*normal_id_XX_NNNNNNNN\.wav"):
            parse_name(f"/data/{bad}")


def test_scan_dev_order_labels_and_ids(root):
    files = scan(root)
    assert [(rel, f.machine_type, f.machine_id, f.split, f.label) for rel, f in zip(_relative(files, root), files)] \
        == DEV_ORDER
    assert {f.subset for f in files} == {"dev"}
    assert all(isinstance(f, ASDFile) and Path(f.path).is_file() for f in files)
    with pytest.raises(AttributeError):
        files[0].label = 1  # frozen
    assert scan(root, machine_types=["fan"]) == [f for f in files if f.machine_type == "fan"]
    assert machine_id_classes(files) == ["ToyCar/id_01", "fan/id_00", "fan/id_02"]


def test_scan_all_subsets(root):
    files = scan(root, subsets=("additional", "eval", "dev"))  # returned in dev, eval, additional order
    assert _relative(files, root) == [row[0] for row in DEV_ORDER] + [
        "eval_data/fan/test/id_01_00000000.wav",
        "eval_data/fan/test/id_03_00000000.wav",
        "additional_train_data/fan/train/normal_id_01_00000000.wav",
        "additional_train_data/fan/train/normal_id_01_00000001.wav",
    ]
    evals = [f for f in files if f.subset == "eval"]
    assert [(f.label, f.machine_id, f.split) for f in evals] == [(None, "id_01", "test"), (None, "id_03", "test")]
    assert [f.subset for f in files[-2:]] == ["additional", "additional"]
    # Test clips never make classes; the additional training IDs do.
    assert machine_id_classes(files) == ["ToyCar/id_01", "fan/id_00", "fan/id_01", "fan/id_02"]
    assert scan(root, subsets=("dev", "eval", "additional")) == files


def test_summary_counts(root):
    rows = summary(scan(root, subsets=("dev", "eval")))
    got = [(r["subset"], r["split"], r["machine_type"], r["machine_id"], r["normal"], r["anomaly"], r["unknown"],
            r["total"]) for r in rows]
    assert got == [
        ("dev", "train", "ToyCar", "id_01", 2, 0, 0, 2),
        ("dev", "train", "fan", "id_00", 2, 0, 0, 2),
        ("dev", "train", "fan", "id_02", 2, 0, 0, 2),
        ("dev", "test", "ToyCar", "id_01", 1, 1, 0, 2),
        ("dev", "test", "fan", "id_00", 1, 1, 0, 2),
        ("dev", "test", "fan", "id_02", 1, 1, 0, 2),
        ("eval", "test", "fan", "id_01", 0, 0, 1, 1),
        ("eval", "test", "fan", "id_03", 0, 0, 1, 1),
    ]
    text = format_summary(scan(root, subsets=("dev", "eval")))
    assert len(text.splitlines()) == 1 + 8 + 1
    assert text.splitlines()[-1].split() == ["all", "9", "3", "2", "14"]


def _reference_clip(path, length):
    """The clip as soundfile reads it, padded or cropped by hand."""
    data, rate = sf.read(path, dtype="float32")
    assert rate == SR
    out = np.zeros(length, np.float32)
    n = min(length, len(data))
    out[:n] = data[:n]
    return out


def test_source_items(root):
    files = scan(root, subsets=("dev", "eval"))
    classes = machine_id_classes(files)
    source = ASDClipSource(files, classes, SR, CLIP)
    assert isinstance(source, Source) and len(source) == len(files) == 14
    for i, f in enumerate(files):
        item = source[i]
        assert set(item) == {"audio", "class_id", "label", "index"}
        assert item["audio"].shape == (CLIP,) and item["audio"].dtype == np.float32
        np.testing.assert_array_equal(item["audio"], _reference_clip(f.path, CLIP))
        assert item["class_id"].dtype == np.int32 and item["label"].dtype == np.int32
        assert item["index"] == i
        assert item["class_id"] == (classes.index(f.class_name) if f.class_name in classes else -1)
        assert item["label"] == (-1 if f.label is None else f.label)
    # By hand: ToyCar (cropped 8800 -> 8000), the short fan clip (6400, padded), the eval clips.
    assert files[1].machine_type == "ToyCar" and source[1]["class_id"] == 0
    short = files.index(next(f for f in files if f.path.endswith("fan/train/normal_id_00_00000001.wav")))
    assert not source[short]["audio"][6400:].any() and source[short]["audio"][6399] != 0
    assert [int(source[i]["class_id"]) for i in (12, 13)] == [-1, -1]  # eval IDs 01, 03 have no class
    assert [int(source[i]["label"]) for i in (2, 3, 12)] == [1, 0, -1]
    pad = source.padding_item()
    assert pad["audio"].shape == (CLIP,) and not pad["audio"].any()
    assert (pad["index"], pad["class_id"], pad["label"]) == (-1, -1, -1)
    spec = source.batch_spec()
    assert spec["audio"] == ((CLIP,), np.dtype(np.float32)) and spec["class_id"] == ((), np.dtype(np.int32))


def test_source_pickles_without_its_cache(root):
    files = scan(root)
    source = ASDClipSource(files, machine_id_classes(files), SR, CLIP, cache=True)
    first = source[0]["audio"]
    assert source._audio_cache
    copy = pickle.loads(pickle.dumps(source))
    assert not copy._audio_cache
    np.testing.assert_array_equal(copy[0]["audio"], first)
    assert copy[5]["class_id"] == source[5]["class_id"]


def test_eval_batches_pad_the_last_batch(root):
    files = [f for f in scan(root) if f.split == "test"]  # 6 clips
    source = ASDClipSource(files, machine_id_classes(scan(root)), SR, CLIP)
    batches = list(eval_batches(source, 4))
    assert len(batches) == 2
    for batch in batches:
        assert batch["audio"].shape == (4, CLIP) and batch["audio"].dtype == np.float32
        assert batch["class_id"].shape == batch["label"].shape == batch["index"].shape == (4,)
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), [0, 1, 2, 3, 4, 5, -1, -1])
    np.testing.assert_array_equal(np.concatenate([b["valid"] for b in batches]), [1] * 6 + [0, 0])
    # test clips in scan order: ToyCar a, n, fan id_00 a, n, fan id_02 a, n
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), [1, 0, 1, 0, 1, 0, -1, -1])
    np.testing.assert_array_equal(np.concatenate([b["class_id"] for b in batches]), [0, 0, 1, 1, 2, 2, -1, -1])
    for row in range(4):
        np.testing.assert_array_equal(batches[0]["audio"][row], _reference_clip(files[row].path, CLIP))
    assert not batches[1]["audio"][2:].any()


def test_mixed_batches_of_two_subsets(root):
    files = scan(root, subsets=("dev", "additional"))
    classes = machine_id_classes(files)
    dev = ASDClipSource([f for f in files if f.subset == "dev" and f.split == "train"], classes, SR, CLIP)
    extra = ASDClipSource([f for f in files if f.subset == "additional"], classes, SR, CLIP)
    iterator = mixed_batches([(dev, 2), (extra, 1)], seed=0)
    try:
        batches = [next(iterator) for _ in range(3)]
    finally:
        iterator.close()
    for batch in batches:
        assert batch["audio"].shape == (3, CLIP)
        for row, part in ((0, dev), (1, dev), (2, extra)):
            index = int(batch["index"][row])
            np.testing.assert_array_equal(batch["audio"][row], _reference_clip(part.files[index].path, CLIP))
            assert batch["class_id"][row] == classes.index(part.files[index].class_name)
        assert batch["class_id"][2] == classes.index("fan/id_01") and not batch["label"].any()


# ---------------------------------------------------------------- bad layouts: each names its path


def test_missing_root_and_folders(tmp_path):
    with pytest.raises(DataFormatError, match=rf"{_at(tmp_path / 'nope')}.*does not exist"):
        scan(tmp_path / "nope")
    with pytest.raises(DataFormatError, match=rf"{_at(tmp_path / 'dev_data')}.*does not exist"):
        scan(tmp_path)
    (tmp_path / "dev_data").mkdir()
    with pytest.raises(DataFormatError, match=rf"{_at(tmp_path / 'dev_data')}: holds no machine-type folders"):
        scan(tmp_path)
    (tmp_path / "dev_data/fan/train").mkdir(parents=True)
    with pytest.raises(DataFormatError, match=rf"{_at(tmp_path / 'dev_data/fan/test')}: .*needs a test/ folder"):
        scan(tmp_path)
    (tmp_path / "dev_data/fan/test").mkdir()
    with pytest.raises(DataFormatError, match=rf"{_at(tmp_path / 'dev_data/fan/train')}: folder holds no .wav files"):
        scan(tmp_path)
    _dev_layout(tmp_path)
    assert len(scan(tmp_path)) == 3
    pump = tmp_path / "dev_data/pump"
    with pytest.raises(DataFormatError, match=rf"{_at(pump)}: machine-type folder does not exist"):
        scan(tmp_path, machine_types=["fan", "pump"])
    with pytest.raises(DataFormatError, match=rf"{_at(tmp_path / 'eval_data')}.*does not exist"):
        scan(tmp_path, subsets=("dev", "eval"))
    with pytest.raises(ConfigError, match="'test'"):
        scan(tmp_path, subsets=("test",))
    with pytest.raises(ConfigError, match="machine_types 'fan'"):
        scan(tmp_path, machine_types="fan")


def test_bad_name(tmp_path):
    bad = _write(_dev_layout(tmp_path) / "dev_data/fan/train/fan_00_001.wav")
    with pytest.raises(DataFormatError, match=rf"{_at(bad)}: .*anomaly_id_XX_NNNNNNNN\.wav"):
        scan(tmp_path)


def test_anomaly_under_train(tmp_path):
    bad = _write(_dev_layout(tmp_path) / "dev_data/fan/train/anomaly_id_00_00000007.wav")
    with pytest.raises(DataFormatError, match=rf"{_at(bad)}: an anomalous clip in a training folder"):
        scan(tmp_path)


def test_unlabelled_clip_in_dev_test(tmp_path):
    bad = _write(_dev_layout(tmp_path) / "dev_data/fan/test/id_00_00000009.wav")
    with pytest.raises(DataFormatError, match=rf"{_at(bad)}: an unlabelled clip in dev_data"):
        scan(tmp_path)


@pytest.mark.parametrize("names,counts", [
    (("normal_id_00_00000000.wav", "normal_id_00_00000001.wav"), r"id_00 \(2 normal, 0 anomalous\)"),
    (("anomaly_id_00_00000000.wav",), r"id_00 \(0 normal, 1 anomalous\)"),
])
def test_test_split_without_anomalies_or_normals(tmp_path, names, counts):
    _dev_layout(tmp_path, test_names=names)
    test = tmp_path / "dev_data/fan/test"
    with pytest.raises(DataFormatError, match=rf"{_at(test)}: AUC is undefined for fan {counts}"):
        scan(tmp_path)


def test_one_id_without_anomalies(tmp_path):
    _dev_layout(tmp_path)
    _write(tmp_path / "dev_data/fan/test/normal_id_02_00000000.wav")
    with pytest.raises(DataFormatError, match=r"AUC is undefined for fan id_02 \(1 normal, 0 anomalous\): each"):
        scan(tmp_path)


def test_unknown_machine_type_is_read_with_a_warning(tmp_path, caplog):
    _dev_layout(tmp_path)
    _write(tmp_path / "dev_data/drill/train/normal_id_00_00000000.wav")
    _write(tmp_path / "dev_data/drill/test/normal_id_00_00000000.wav")
    _write(tmp_path / "dev_data/drill/test/anomaly_id_00_00000000.wav")
    with caplog.at_level(logging.WARNING, logger="jaxaudio.data.asd"):
        files = scan(tmp_path)
    assert machine_id_classes(files) == ["drill/id_00", "fan/id_00"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "'drill' is not a DCASE2020 task 2 machine type" in warnings[0]
    assert str(tmp_path / "dev_data/drill") in warnings[0]


def test_same_training_clip_in_two_subsets(tmp_path):
    _write(tmp_path / "eval_data/fan/train/normal_id_01_00000000.wav")
    second = _write(tmp_path / "additional_train_data/fan/train/normal_id_01_00000000.wav")
    assert len(scan(tmp_path, subsets=("eval",))) == 1  # eval_data may hold train/ only
    with pytest.raises(DataFormatError, match=rf"{_at(second)}: the same training clip is also in subset 'eval'"):
        scan(tmp_path, subsets=("eval", "additional"))


# ------------------------------------------------------------------- bad audio: each names its file


def test_other_sample_rate_is_resampled_with_one_warning_per_type(tmp_path, caplog):
    _dev_layout(tmp_path)
    t = np.arange(11025) / 22050  # 0.5 s at 22.05 kHz: 8000 samples at 16 kHz
    odd = [_write(tmp_path / f"dev_data/fan/train/normal_id_00_0000001{i}.wav", rate=22050,
                  data=0.5 * np.sin(2 * np.pi * 440 * t + i)) for i in range(2)]
    files = scan(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jaxaudio.data.asd"):
        source = ASDClipSource(files, machine_id_classes(files), SR, CLIP)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "fan: 2 of 5 clips are at 22050 Hz, not 16000 Hz" in warnings[0] and str(odd[0]) in warnings[0]
    index = [f.path for f in files].index(str(odd[1]))
    audio = source[index]["audio"]
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(CLIP) / SR + 1)  # closed form at 16 kHz
    np.testing.assert_allclose(audio[300:-300], expected[300:-300], atol=2e-3)
    with pytest.raises(AudioFileError, match=rf"{_at(odd[0])}: sample rate is 22050 Hz, expected 16000 Hz"):
        ASDClipSource(files, machine_id_classes(files), SR, CLIP, resample=False)


def test_empty_and_unreadable_files(tmp_path):
    _dev_layout(tmp_path)
    empty = _write(tmp_path / "dev_data/fan/train/normal_id_00_00000005.wav", data=np.zeros(0))
    files = scan(tmp_path)
    with pytest.raises(AudioFileError, match=rf"{_at(empty)}: audio is empty"):
        ASDClipSource(files, machine_id_classes(files), SR, CLIP)
    empty.write_bytes(b"")  # a zero-byte file: no header at all
    with pytest.raises(AudioFileError, match=rf"{_at(empty)}: cannot decode audio header"):
        ASDClipSource(files, machine_id_classes(files), SR, CLIP)


def test_silent_clip(tmp_path):
    _dev_layout(tmp_path)
    silent = _write(tmp_path / "dev_data/fan/train/normal_id_00_00000005.wav", data=np.zeros(CLIP))
    files = scan(tmp_path)
    source = ASDClipSource(files, machine_id_classes(files), SR, CLIP)
    with pytest.raises(AudioFileError, match=rf"{_at(silent)}: clip is silent"):
        source[[f.path for f in files].index(str(silent))]
    assert source[0]["audio"].any()  # the others still read
