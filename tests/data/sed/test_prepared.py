"""Prepared ArrayRecord data vs the folder reader: same items, same batches, disjoint shards.

Reference: `ClipSource` over `load_subset` of the same DESED-layout folder (the reader the
prepared set replaces); equality is exact (bit-for-bit arrays, same dtypes and shapes).
"""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("array_record")

from jaxaudio.audio.io import write_audio  # noqa: E402
from jaxaudio.data.prepare import main as prepare_main  # noqa: E402
from jaxaudio.data.prepare import prepare  # noqa: E402
from jaxaudio.data.sed.clips import ClipSource  # noqa: E402
from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, DESED_CLASSES, load_subset  # noqa: E402
from jaxaudio.data.sed.labels import FrameLabelEncoder  # noqa: E402
from jaxaudio.data.sed.prepared import PreparedClipSource, prepared_path, read_metadata  # noqa: E402
from jaxaudio.data.source import mixed_batches  # noqa: E402
from jaxaudio.data.synth import SynthConfig, generate  # noqa: E402
from jaxaudio.errors import AudioFileError, ConfigError, DataFormatError  # noqa: E402

SR = 16000
CLIP_SECONDS = 1.0
CLIP = 16000
ENCODER = FrameLabelEncoder(DESED_CLASSES, CLIP_SECONDS, 25)  # hop 0.04 s
TRAIN = ("synthetic_train", "weak", "unlabeled")
COUNTS = {"synthetic_train": 2, "weak": 2, "unlabeled": 4}
# One epoch of every source is exactly two batches of COUNTS.
TINY = SynthConfig(n_strong=4, n_weak=4, n_unlabeled=8, n_validation=0, n_eval=0,
                   clip_seconds=CLIP_SECONDS)


def _prepare(root, out, **kwargs):
    return prepare(root, out, sample_rate=SR, clip_seconds=CLIP_SECONDS, progress=False, **kwargs)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """(folder, prepared folder) for a tiny built-in set: mono PCM16 at 16 kHz, so int16."""
    base = tmp_path_factory.mktemp("arrayrecord")
    root = generate(base / "synth", TINY, progress=False, workers=1)
    return root, _prepare(root, base / "prepared")


def _odd_layout(root: Path) -> Path:
    """Hand-made set covering what the synth set does not: stereo and 22.05 kHz files
    (float32 storage, resampling), short and long files (padding, cropping), a strongly
    labelled clip without events, events on frame edges and with many decimals."""
    strong_dir = root / DEFAULT_LAYOUT["synthetic_train"].audio_dir
    rng = np.random.default_rng(0)
    write_audio(strong_dir / "a_stereo.wav", rng.uniform(-0.5, 0.5, (2, CLIP)), SR)
    write_audio(strong_dir / "b_22k.wav", rng.uniform(-0.5, 0.5, 30000), 22050)
    write_audio(strong_dir / "c_short.wav", rng.uniform(-0.5, 0.5, 5000), SR)
    write_audio(strong_dir / "d_long.wav", rng.uniform(-0.5, 0.5, 3 * CLIP), SR)
    tsv = root / DEFAULT_LAYOUT["synthetic_train"].strong_tsv
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text(
        "filename\tonset\toffset\tevent_label\n"
        "a_stereo.wav\t0.12\t0.36\tDog\n"
        "a_stereo.wav\t0.123456789012\t0.9876543210123\tCat\n"
        "b_22k.wav\t\t\t\n"
        "c_short.wav\t0.04\t0.08\tSpeech\n"
        "d_long.wav\t0.5\t2.5\tFrying\n"
    )
    weak_dir = root / DEFAULT_LAYOUT["weak"].audio_dir
    write_audio(weak_dir / "w0.wav", rng.uniform(-0.5, 0.5, CLIP), SR)
    (root / DEFAULT_LAYOUT["weak"].weak_tsv).write_text(
        "filename\tevent_labels\nw0.wav\tDog,Blender\n")
    return root


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    base = tmp_path_factory.mktemp("odd")
    root = _odd_layout(base / "set")
    return root, _prepare(root, base / "prepared")


def _assert_items_equal(prepared: ClipSource, folder: ClipSource):
    assert len(prepared) == len(folder)
    for index in range(len(folder)):
        got, want = prepared[index], folder[index]
        assert got.keys() == want.keys()
        for key in want:
            got_value, want_value = np.asarray(got[key]), np.asarray(want[key])
            assert got_value.dtype == want_value.dtype, key
            assert got_value.shape == want_value.shape, key
            np.testing.assert_array_equal(got_value, want_value, err_msg=f"{key}, item {index}")


def _folder_source(root, subset, cache=True):
    return ClipSource(load_subset(root, DEFAULT_LAYOUT[subset]), SR, CLIP, ENCODER, cache=cache)


@pytest.mark.parametrize("subset", TRAIN)
def test_items_equal_the_folder_reader(synth, subset):
    root, prepared = synth
    source = PreparedClipSource(prepared, subset, ENCODER)
    assert read_metadata(prepared)["audio_dtype"] == "int16"
    _assert_items_equal(source, _folder_source(root, subset))
    assert list(source.records) == load_subset(root, DEFAULT_LAYOUT[subset])


def test_float32_storage_resampling_padding_and_exact_times(odd):
    root, prepared = odd
    assert read_metadata(prepared)["audio_dtype"] == "float32"  # stereo/22 kHz: not int16-exact
    for subset in ("synthetic_train", "weak"):
        source = PreparedClipSource(prepared, subset, ENCODER)
        _assert_items_equal(source, _folder_source(root, subset))
        # float64 times survive the round trip exactly (0.123456789012 is not a float32).
        assert list(source.records) == load_subset(root, DEFAULT_LAYOUT[subset])
    strong = PreparedClipSource(prepared, "synthetic_train", ENCODER)
    assert strong.records[1].events == () and strong[1]["has_strong"]  # annotated, no events
    assert not strong[1]["strong"].any()
    # Another frame rate is encoded from the same raw events at read time.
    other = FrameLabelEncoder(DESED_CLASSES, CLIP_SECONDS, 7)
    _assert_items_equal(PreparedClipSource(prepared, "synthetic_train", other),
                        ClipSource(load_subset(root, DEFAULT_LAYOUT["synthetic_train"]),
                                   SR, CLIP, other))


def _take(iterator, n):
    try:
        return [next(iterator) for _ in range(n)]
    finally:
        iterator.close()


def test_mixed_batches_are_identical(synth):
    root, prepared = synth
    runs = []
    for make in (
        lambda s: PreparedClipSource(prepared, s, ENCODER),
        lambda s: _folder_source(root, s, cache=True),
        lambda s: _folder_source(root, s, cache=False),
    ):
        sources = [(make(s), COUNTS[s]) for s in TRAIN]
        runs.append(_take(mixed_batches(sources, seed=3), 5))
    for other in runs[1:]:
        for got, want in zip(runs[0], other):
            assert got.keys() == want.keys()
            for key in want:
                assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # Not trivially equal: the batches differ from each other and cover the whole source.
    assert not np.array_equal(runs[0][0]["audio"], runs[0][1]["audio"])
    strong_indices = np.concatenate([b["index"][:2] for b in runs[0][:2]])
    assert sorted(strong_indices) == [0, 1, 2, 3]


def test_source_pickles_for_grain_workers(synth):
    _, prepared = synth
    source = PreparedClipSource(prepared, "weak", ENCODER)
    source[0]  # opens the reader; the copy must reopen its own
    copy = pickle.loads(pickle.dumps(source))
    assert copy._raw._reader is None
    np.testing.assert_array_equal(copy[2]["audio"], source[2]["audio"])


_WORKER = textwrap.dedent("""
    import json, sys
    from jaxaudio.data.sed.prepared import PreparedClipSource
    from jaxaudio.data.sed.desed import DESED_CLASSES
    from jaxaudio.data.sed.labels import FrameLabelEncoder
    from jaxaudio.data.source import mixed_batches
    prepared, shard_index, counts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    encoder = FrameLabelEncoder(DESED_CLASSES, 1.0, 25)
    sources = [(PreparedClipSource(prepared, name, encoder), n) for name, n in counts.items()]
    iterator = mixed_batches(sources, seed=11, shard_index=shard_index, shard_count=2)
    batches = [next(iterator) for _ in range(2)]
    iterator.close()
    print(json.dumps([b["index"].tolist() for b in batches]))
""")


def test_two_processes_read_disjoint_records_that_cover_the_data(synth):
    _, prepared = synth
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(prepared), str(k), json.dumps(COUNTS)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results.append(np.array(json.loads(out.strip().splitlines()[-1])))
    # Same run in one process: each host's rows are its half of every source's segment.
    sources = [(PreparedClipSource(prepared, s, ENCODER), COUNTS[s]) for s in TRAIN]
    single = _take(mixed_batches(sources, seed=11), 2)
    sizes = {"synthetic_train": 4, "weak": 4, "unlabeled": 8}
    start_global, start_local = 0, 0
    for name in TRAIN:
        count, half = COUNTS[name], COUNTS[name] // 2
        per_host = [set(r[:, start_local:start_local + half].ravel().tolist()) for r in results]
        assert not per_host[0] & per_host[1]  # disjoint records
        assert per_host[0] | per_host[1] == set(range(sizes[name]))  # together: all of them
        for batch in range(2):
            glob = single[batch]["index"][start_global:start_global + count]
            np.testing.assert_array_equal(glob[:half], results[0][batch, start_local:start_local + half])
            np.testing.assert_array_equal(glob[half:], results[1][batch, start_local:start_local + half])
        start_global += count
        start_local += half


def test_prepare_is_idempotent_and_refuses_changed_data(tmp_path, monkeypatch):
    root = generate(tmp_path / "set", TINY, progress=False, workers=1)
    path = _prepare(root, tmp_path / "out")
    assert path == prepared_path(tmp_path / "out", SR, CLIP)
    shard = next(path.glob("*weak.array_record*"))
    before = shard.stat().st_mtime_ns
    from array_record.python.array_record_module import ArrayRecordReader

    assert "uncompressed" in ArrayRecordReader(str(shard)).writer_options_string()

    import jaxaudio.data.prepare as prepare_module

    def must_not_write(*args, **kwargs):
        raise AssertionError("an up-to-date prepared set must be reused")

    with monkeypatch.context() as m:
        m.setattr(prepare_module, "write_records", must_not_write)
        assert _prepare(root, tmp_path / "out") == path
    assert shard.stat().st_mtime_ns == before

    (root / DEFAULT_LAYOUT["unlabeled"].audio_dir / "unlabel_00007.wav").unlink()
    with pytest.raises(ConfigError, match="--force"):
        _prepare(root, tmp_path / "out")
    _prepare(root, tmp_path / "out", force=True)
    assert read_metadata(path)["subsets"]["unlabeled"] == 7
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["desed_array_record"]


def test_cli_prepares_and_reports_errors(synth, tmp_path, capsys):
    root, prepared = synth
    out = tmp_path / "cli"
    args = ["--data_dir", str(root), "--out", str(out), "--clip_seconds", "1", "--quiet"]
    assert prepare_main(args) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path == prepared_path(out, SR, CLIP)
    assert read_metadata(path) == read_metadata(prepared)
    assert prepare_main(["--data_dir", str(tmp_path / "nowhere"), "--out", str(out), "--quiet"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_bad_input_names_the_file(synth, tmp_path):
    root, prepared = synth
    with pytest.raises(ConfigError, match="nowhere"):
        _prepare(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no clips"):
        _prepare(tmp_path / "empty", tmp_path / "out")

    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    wav = broken / DEFAULT_LAYOUT["weak"].audio_dir / "weak_00002.wav"
    wav.write_bytes(wav.read_bytes()[:30])
    for dtype in ("auto", "float32"):  # header check, then decoding while writing
        with pytest.raises(AudioFileError, match="weak_00002.wav"):
            _prepare(broken, tmp_path / "out", audio_dtype=dtype)
    assert not prepared_path(tmp_path / "out", SR, CLIP).exists()  # nothing half-written

    missing = tmp_path / "missing"
    shutil.copytree(root, missing)
    (missing / DEFAULT_LAYOUT["synthetic_train"].audio_dir / "synth_00001.wav").unlink()
    with pytest.raises(DataFormatError, match=r"soundscapes.tsv, row \d+: .*synth_00001.wav"):
        _prepare(missing, tmp_path / "out")

    stereo = _odd_layout(tmp_path / "odd")
    with pytest.raises(AudioFileError, match="a_stereo.wav.*16-bit"):
        _prepare(stereo, tmp_path / "out2", audio_dtype="int16")


def test_reader_errors(synth, tmp_path):
    _, prepared = synth
    with pytest.raises(DataFormatError, match="not a prepared set"):
        PreparedClipSource(tmp_path, "weak", ENCODER)
    with pytest.raises(ConfigError, match="'validation'.*synthetic_train"):
        PreparedClipSource(prepared, "validation", ENCODER)
    with pytest.raises(ConfigError, match="clip_seconds"):
        PreparedClipSource(prepared, "weak", FrameLabelEncoder(DESED_CLASSES, 2.0, 25))
    with pytest.raises(ConfigError, match="Vacuum_cleaner"):
        PreparedClipSource(prepared, "weak", FrameLabelEncoder(DESED_CLASSES[:-1], 1.0, 25))
    with pytest.raises(IndexError):
        PreparedClipSource(prepared, "weak", ENCODER)[4]


def test_experiments_read_prepared_shards_through_data_prepared_dir(synth):
    """``--config.data.prepared_dir=OUT`` (the folder given to prepare) swaps the wav reader
    for the shards in the SED experiments, item for item."""
    from experiments.sed.data_config import desed_data

    from experiments.sed import data as sed_data

    root, prepared = synth
    cfg = desed_data(SR)
    cfg.clip_seconds = CLIP_SECONDS
    cfg.prepared_dir = str(Path(root).parent / "prepared")
    assert Path(prepared_path(cfg.prepared_dir, SR, CLIP)) == Path(prepared)
    assert sed_data.data_root(cfg) == cfg.prepared_dir  # nothing generated
    source = sed_data.clip_source(sed_data.data_root(cfg), cfg, "weak", ENCODER)
    assert isinstance(source, PreparedClipSource)
    _assert_items_equal(source, _folder_source(root, "weak"))
