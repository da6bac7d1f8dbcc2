"""Soundscapes from a user's sound banks (python -m jaxaudio.data.synth --foreground ...).

References: the project's DESED reader and, independently, pandas and soundfile read the layout
back; RMS measured on the written files checks that labels sit where the sound is; FFT peaks
and envelope durations check time stretch and pitch shift.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, load_subset
from jaxaudio.data.synth import dsp, manifest
from jaxaudio.data.synth.__main__ import main
from jaxaudio.data.synth.desed import SUBSETS, SUBSETS_BY_NAME, to_pcm16
from jaxaudio.data.synth.soundbank import BankFile, Banks, split_banks
from jaxaudio.data.synth.soundscape import (TRAIN_SUBSETS, SoundscapeConfig, generate_soundscapes, pitch_shift,
                                            plan_clip, render_record, time_stretch)
from jaxaudio.errors import ConfigError

SR = 16000
CLIP = 4.0
CLASSES = ("beep", "hiss", "whoop")
PAD = 0.2  # silence before and after every foreground sound: trimming must remove it
SIZES = ["--n-strong", "6", "--n-weak", "4", "--n-unlabeled", "3", "--n-validation", "5", "--n-eval", "5"]
QUIET_BED = ["--background-dbfs", "-60", "-55", "--snr-db", "15", "20", "--empty-fraction", "0.3"]


def _sound(kind: str, seconds: float, sr: int, rng) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    if kind == "beep":
        x = np.sin(2 * np.pi * rng.uniform(500, 1500) * t) + 0.3 * np.sin(2 * np.pi * 2 * 700 * t)
    elif kind == "hiss":
        x = dsp.band_filter(rng.standard_normal(len(t)), sr, 2000.0, 6000.0)
    else:  # whoop: a rising chirp
        f0, f1 = rng.uniform(300, 600), rng.uniform(2000, 4000)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
    x = dsp.fade(x, sr, 0.005, 0.005) * 0.5 / np.max(np.abs(x))
    silence = np.zeros(int(PAD * sr))
    return np.concatenate([silence, x, silence])


def _write(path: Path, x: np.ndarray, sr: int, stereo: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([x, 0.8 * x], axis=1) if stereo else x
    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}[path.suffix]
    sf.write(str(path), data, sr, format=fmt[0], subtype=fmt[1])


def _make_banks(root: Path) -> tuple[Path, Path]:
    """3 classes x 3 files (22.05/44.1/16 kHz, mono/stereo, wav/flac/ogg) plus a silent and a corrupt
    file; 3 coloured-noise backgrounds at mixed rates, one shorter than a clip (it is looped)."""
    rng = np.random.default_rng(123)
    fg, bg = root / "fg", root / "bg"
    layouts = [(22050, False, ".wav"), (44100, True, ".flac"), (16000, False, ".ogg")]
    for c, label in enumerate(CLASSES):
        for i, seconds in enumerate((0.3, 0.8, 1.5)):
            sr, stereo, ext = layouts[(i + c) % 3]
            _write(fg / label / f"{label}_{i}{ext}", _sound(label, seconds, sr, rng), sr, stereo ^ (c == 1))
    _write(fg / "beep" / "silent.wav", np.zeros(SR), SR, False)
    (fg / "beep" / "broken.flac").write_bytes(b"fLaC this is not audio" * 50)
    (fg / "hiss" / "notes.txt").write_text("not audio, ignored")
    for name, sr, slope, seconds in (("street/white.wav", 16000, 0.0, 6.0), ("home/pink.flac", 44100, -3.0, 2.5),
                                     ("brown.ogg", 22050, -6.0, 7.0)):
        noise = dsp.band_filter(rng.standard_normal(int(seconds * sr)), sr, 80.0, None, slope)
        _write(bg / name, 0.3 * noise / np.max(np.abs(noise)), sr, name.endswith(".flac"))
    return fg, bg


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "records").rglob("*.json"))]


@pytest.fixture(scope="module")
def banks(tmp_path_factory) -> tuple[Path, Path]:
    return _make_banks(tmp_path_factory.mktemp("banks"))


def _generate(banks, out: Path, *extra: str) -> tuple[Path, str, str]:
    fg, bg = banks
    rc, stdout, stderr = _run(["--task", "desed", "--foreground", str(fg), "--background", str(bg), "--out", str(out),
                               "--clip-seconds", str(CLIP), *SIZES, *extra])
    assert rc == 0
    return out, stdout, stderr


@pytest.fixture(scope="module")
def quiet_set(banks, tmp_path_factory):
    """Quiet background, SNR >= 15 dB: (root, stdout, stderr)."""
    return _generate(banks, tmp_path_factory.mktemp("sets") / "quiet", *QUIET_BED)


@pytest.fixture(scope="module")
def loud_set(banks, tmp_path_factory):
    """Loud background (peak scaling needed), time stretch and pitch shift on."""
    return _generate(banks, tmp_path_factory.mktemp("sets") / "loud", "--seed", "3", "--background-dbfs", "-8", "-3",
                     "--time-stretch", "0.6", "1.6", "--pitch-shift", "-4", "4", "--max-events", "4", "--quiet")


def _strong(root: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(root / p.strong_tsv, sep="\t") for p in SUBSETS if p.strong_tsv}


# 1 ------------------------------------------------------------------------------------------------

def test_layout_is_read_by_the_project_reader_and_by_pandas_and_soundfile(quiet_set):
    root, stdout, _ = quiet_set
    classes = (root / "metadata/classes.txt").read_text().splitlines()
    assert tuple(classes) == CLASSES
    sizes = dict(zip([p.name for p in SUBSETS], [int(n) for n in SIZES[1::2]]))
    for plan in SUBSETS:
        records = load_subset(root, DEFAULT_LAYOUT[plan.name], classes)
        assert len(records) == sizes[plan.name]
        if plan.name in ("synthetic_train", "validation", "eval"):
            assert all(r.events is not None for r in records)
        for tsv, columns in ((plan.strong_tsv, ["filename", "onset", "offset", "event_label"]),
                             (plan.weak_tsv, ["filename", "event_labels"]),
                             (plan.durations_tsv, ["filename", "duration"])):
            if tsv:
                table = pd.read_csv(root / tsv, sep="\t")
                assert list(table.columns) == columns
                assert set(table.filename) == {Path(r.path).name for r in records}
        durations = {}
        if plan.durations_tsv:
            table = pd.read_csv(root / plan.durations_tsv, sep="\t")
            durations = dict(zip(table.filename, table.duration))
        for name in sorted(p.name for p in (root / plan.audio_dir).iterdir()):
            audio, sr = sf.read(root / plan.audio_dir / name)
            assert sr == SR and audio.ndim == 1 and len(audio) == CLIP * SR
            if durations:
                assert durations[name] == pytest.approx(len(audio) / sr, abs=1e-3)
    empty = [r for r in load_subset(root, DEFAULT_LAYOUT["validation"], classes) if not r.events]
    assert empty and all(r.duration == CLIP for r in empty)  # event-free clips: one row with empty fields
    table = pd.read_csv(root / "metadata/validation/validation.tsv", sep="\t")
    rows = table[table.filename.isin([Path(r.path).name for r in empty])]
    assert len(rows) == len(empty) and rows[["onset", "offset", "event_label"]].isna().all(axis=None)
    weak = pd.read_csv(root / "metadata/train/weak.tsv", sep="\t")
    for labels in weak.event_labels:
        names = labels.split(",")
        assert names == sorted(names, key=CLASSES.index) and set(names) <= set(CLASSES)
    summary = json.loads(stdout)
    assert summary["clips"] == sizes


def test_the_built_in_path_is_unchanged_and_bank_flags_need_banks(banks, monkeypatch, tmp_path):
    from jaxaudio.data.synth import __main__ as cli
    from jaxaudio.data.synth.desed import PRESETS

    seen = {}
    monkeypatch.setattr(cli, "ensure_dataset", lambda out, config, **kw: seen.update(config=config, **kw) or out)
    monkeypatch.setattr(cli, "event_statistics", lambda root: {})
    assert _run(["--task", "desed", "--out", str(tmp_path), "--seed", "4", "--workers", "2"])[0] == 0
    assert seen == {"config": dataclasses.replace(PRESETS["default"], seed=4), "progress": True, "workers": 2,
                    "force": False}
    assert _run(["--task", "desed", "--out", str(tmp_path), "--preset", "small", "--quiet", "--force"])[0] == 0
    assert seen["config"] == PRESETS["small"] and (seen["progress"], seen["force"]) == (False, True)
    fg, bg = map(str, banks)
    for argv in (["--task", "desed", "--out", "x", "--n-strong", "3"], ["--out", "x"],
                 ["--task", "desed", "--out", "x", "--foreground", fg, "--background", bg, "--preset", "small"],
                 ["--task", "desed", "--out", "x", "--foreground", fg],
                 ["--regenerate", "r.json", "--out", "x.wav"]):
        with pytest.raises(SystemExit) as exit_:
            _run(argv)
        assert exit_.value.code == 2


# 2 ------------------------------------------------------------------------------------------------

def _db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x))) + 1e-12)


def test_labels_are_where_the_sound_is(quiet_set):
    """Mix RMS inside each label vs the clip's event-free parts (the background alone).

    An event is mixed at snr >= 15 dB re the background's RMS, so inside its label the mix is
    at least ~15 dB above the free parts: we require 10 dB over the whole label and over its
    first and last 50 ms (untrimmed sources, with their 0.2 s of leading and trailing silence,
    fail this), and the 50 ms just outside a label, where no other label is, must be at the
    background's level (no sound leaks past a label).
    """
    root = quiet_set[0]
    edge = int(0.05 * SR)
    inside, firsts, lasts, outside, snrs = [], [], [], [], []
    for name, table in _strong(root).items():
        plan = next(p for p in SUBSETS if p.name == name)
        for filename, rows in table.dropna().groupby("filename"):
            audio, _ = sf.read(root / plan.audio_dir / filename)
            record = json.loads((root / "records" / name / f"{Path(filename).stem}.json").read_text())
            spans = [(int(round(a * SR)), int(round(b * SR))) for a, b in zip(rows.onset, rows.offset)]
            covered = np.zeros(len(audio), bool)
            for a, b in spans:
                covered[a:b] = True
            free = _db(audio[~covered])
            assert free == pytest.approx(record["background"]["level_dbfs"], abs=1.0)  # free parts: the bed alone
            for (a, b), event in zip(spans, record["events"]):
                inside.append(_db(audio[a:b]) - free)
                firsts.append(_db(audio[a:a + edge]) - free)
                lasts.append(_db(audio[b - edge:b]) - free)
                snrs.append(event["snr"])
                for lo, hi in ((a - edge, a), (b, b + edge)):
                    if lo >= 0 and hi <= len(audio) and not covered[lo:hi].any():
                        outside.append(_db(audio[lo:hi]) - free)
    inside, firsts, lasts, outside, snrs = map(np.array, (inside, firsts, lasts, outside, snrs))
    assert len(inside) >= 20 and len(outside) >= 10
    assert inside.min() >= 10.0 and firsts.min() >= 10.0 and lasts.min() >= 10.0
    # 10 log10(1 + 10^(snr/10)) >= snr, less the free parts' offset from the bed's RMS (< 1 dB, checked above)
    assert np.all(inside >= snrs - 1.0)
    assert np.abs(outside).max() < 3.0


# 3 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["quiet_set", "loud_set"])
def test_records_regenerate_byte_identical_clips(which, banks, request, tmp_path):
    root = request.getfixturevalue(which)[0]
    fg, bg = banks
    records = _records(root)
    assert len(records) == sum(int(n) for n in SIZES[1::2])
    for i, record in enumerate(records):
        plan = next(p for p in SUBSETS if p.name == record["subset"])
        wav = root / plan.audio_dir / record["filename"]
        written, _ = sf.read(wav, dtype="int16")
        np.testing.assert_array_equal(to_pcm16(render_record(record, fg, bg)), written)
        if i % 4 == 0:  # the command line, byte for byte (header included)
            rec = root / "records" / record["subset"] / f"{Path(record['filename']).stem}.json"
            assert _run(["--regenerate", str(rec), "--foreground", str(fg), "--background", str(bg),
                         "--out", str(tmp_path / "again.wav")])[0] == 0
            assert (tmp_path / "again.wav").read_bytes() == wav.read_bytes()
    changed = json.loads(json.dumps(records[0]))
    changed["scale"] *= 1.01
    with pytest.raises(ConfigError, match="bank has changed"):
        render_record(changed, fg, bg)


# 4 ------------------------------------------------------------------------------------------------

def test_same_seed_same_files_other_seed_other_files(banks, quiet_set, tmp_path):
    first = manifest.read_manifest(quiet_set[0])
    again = manifest.read_manifest(_generate(banks, tmp_path / "again", *QUIET_BED, "--quiet")[0])
    assert again["content_sha256"] == first["content_sha256"] and again["files"] == first["files"]
    other = manifest.read_manifest(_generate(banks, tmp_path / "other", *QUIET_BED, "--seed", "1", "--quiet")[0])
    assert other["content_sha256"] != first["content_sha256"]
    wavs = [rel for rel in first["files"] if rel.endswith(".wav")]
    assert all(other["files"][rel]["sha256"] != first["files"][rel]["sha256"] for rel in wavs)
    assert first["identity"]["banks"]["files"] == 14  # 11 foreground files (2 unusable) + 3 backgrounds


def test_a_matching_set_is_reused_and_a_foreign_folder_refused(banks, quiet_set, tmp_path):
    root = quiet_set[0]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")}
    _generate(banks, root, *QUIET_BED, "--quiet")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")} == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a synthetic set"):
        _generate(banks, foreign, "--quiet")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


# 5 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["quiet_set", "loud_set"])
def test_no_recording_is_in_both_train_and_validation_eval(which, request):
    uses = {True: {"fg": set(), "bg": set()}, False: {"fg": set(), "bg": set()}}
    for record in _records(request.getfixturevalue(which)[0]):
        side = uses[record["subset"] in TRAIN_SUBSETS]
        side["bg"].add(record["background"]["source_file"])
        side["fg"].update(e["source_file"] for e in record["events"])
    for bank in ("fg", "bg"):
        assert uses[True][bank] and uses[False][bank]
        assert not uses[True][bank] & uses[False][bank]
    held_classes = {f.split("/")[0] for f in uses[False]["fg"]}
    assert held_classes == set(CLASSES)


def test_split_keeps_a_share_per_class_and_shares_a_lone_file_with_a_warning(capsys):
    files = {c: tuple(BankFile(f"{c}/{i}.wav", 1, 100) for i in range(n)) for c, n in (("a", 10), ("b", 2), ("c", 1))}
    banks = Banks(("a", "b", "c"), files, tuple(BankFile(f"{i}.wav", 1, 100) for i in range(4)))
    train, held = split_banks(banks, 0.3, seed=5)
    assert [len(held.foreground[c]) for c in "abc"] == [3, 1, 1] and len(held.background) == 1
    assert not set(train.foreground["a"]) & set(held.foreground["a"])
    assert train.foreground["c"] == held.foreground["c"] == files["c"]
    assert "'c'" in capsys.readouterr().err
    assert split_banks(banks, 0.3, seed=5) == (train, held)
    assert split_banks(banks, 0.3, seed=6)[1].foreground["a"] != held.foreground["a"]


# 6 ------------------------------------------------------------------------------------------------

def test_unusable_files_are_reported_and_skipped(quiet_set):
    root, _, stderr = quiet_set
    assert "beep/silent.wav: silent" in stderr and "beep/broken.flac: corrupt or unreadable" in stderr
    skipped = manifest.read_manifest(root)["identity"]["skipped"]
    assert [s["file"] for s in skipped] == ["foreground/beep/broken.flac", "foreground/beep/silent.wav"]
    assert all(s["reason"] for s in skipped)
    used = {e["source_file"] for r in _records(root) for e in r["events"]}
    assert not used & {"beep/silent.wav", "beep/broken.flac"} and "notes.txt" not in str(used)


def test_a_class_of_unusable_files_or_an_empty_background_is_a_config_error(banks, tmp_path):
    fg, bg = banks
    config = SoundscapeConfig(clip_seconds=1.0, n_strong=1, n_weak=0, n_unlabeled=0, n_validation=0, n_eval=0)
    ghost = tmp_path / "fg"
    for label in CLASSES:
        (ghost / label).mkdir(parents=True)
        (ghost / label / "x.wav").write_bytes((fg / "beep" / "beep_0.wav").read_bytes())
    _write(ghost / "ghost" / "quiet.wav", np.full(SR, 1e-5), SR, False)  # -100 dBFS
    (ghost / "ghost" / "bad.ogg").write_bytes(b"OggS" + bytes(300))
    with pytest.raises(ConfigError, match="class 'ghost'.*no usable file"):
        generate_soundscapes(ghost, bg, tmp_path / "out", config, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="background folder .*empty.* no usable"):
        generate_soundscapes(fg, tmp_path / "empty", tmp_path / "out", config, progress=False)
    with pytest.raises(ConfigError, match="n_validation.*below the 3 classes"):
        generate_soundscapes(fg, bg, tmp_path / "out", SoundscapeConfig(n_validation=2), progress=False)


# 7 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["quiet_set", "loud_set"])
def test_event_rules_and_peak(which, request):
    root = request.getfixturevalue(which)[0]
    for name, table in _strong(root).items():
        events = table.dropna()
        for _, clip in events.groupby("filename"):
            for _, same in clip.groupby("event_label"):
                onsets, offsets = same.onset.to_numpy(), same.offset.to_numpy()
                order = np.argsort(onsets)
                assert np.all(onsets[order][1:] >= offsets[order][:-1])  # same class: never overlapping
        assert (events.onset >= 0).all() and (events.offset <= CLIP).all()
        if name != "synthetic_train":
            assert set(events.event_label) == set(CLASSES)
    peaks = []
    for plan in SUBSETS:
        for path in (root / plan.audio_dir).iterdir():
            peaks.append(np.max(np.abs(sf.read(path)[0])))
    assert max(peaks) <= 0.9
    scales = [r["scale"] for r in _records(root)]
    if which == "loud_set":  # the loud bed needed scaling, and the scaled peak is the headroom
        assert min(scales) < 0.5 and max(peaks) == pytest.approx(0.89, abs=1e-4)


def test_clip_plans_follow_the_rules_on_many_clips():
    """The planner alone (no audio), on many clips with many events: forced classes, no same-class
    overlap (gap included), event-free share, clamping, independence of other subsets' sizes."""
    lengths = {"beep": (4000, 30000), "hiss": (200, 9000), "whoop": (70000, 12000)}
    banks = Banks(CLASSES, {c: tuple(BankFile(f"{c}/{n}.wav", 1, n) for n in lengths[c]) for c in CLASSES},
                  (BankFile("bed.wav", 1, 30000),))
    config = SoundscapeConfig(clip_seconds=CLIP, max_events=6, empty_fraction=0.3, time_stretch=(0.5, 2.0),
                              same_class_gap_seconds=0.2)
    n = int(CLIP * SR)
    for name in ("synthetic_train", "weak", "unlabeled", "validation"):
        plans = [plan_clip(config, banks, SUBSETS_BY_NAME[name], i) for i in range(60)]
        empty = sum(not p["events"] for p in plans)
        assert (0 < empty < 40) if name in ("unlabeled", "validation") else empty == 0
        for i, p in enumerate(plans):
            labels = [e["label"] for e in p["events"]]
            if name != "unlabeled" and i < len(CLASSES):
                assert CLASSES[i] in labels
            assert 0 <= p["background"]["offset"] < 30000
            for j, a in enumerate(p["events"]):
                size = int(a["source_file"].split("/")[1][:-4])
                assert round(a["source_duration"] * SR) <= size and a["source_time"] + a["source_duration"] <= size / SR
                assert round(a["event_duration"] * SR) <= max(1, min(n, int(size * a["time_stretch"])))
                assert 0 <= a["event_time"] and a["event_time"] + a["event_duration"] <= CLIP
                for b in p["events"][j + 1:]:
                    if a["label"] == b["label"]:
                        assert a["offset"] + 0.2 <= b["onset"] or b["offset"] + 0.2 <= a["onset"]
    bigger = dataclasses.replace(config, n_strong=999, n_eval=7)
    assert plan_clip(bigger, banks, SUBSETS_BY_NAME["eval"], 4) == plan_clip(config, banks, SUBSETS_BY_NAME["eval"], 4)


# 8 ------------------------------------------------------------------------------------------------

def _tone_burst(freq: float, seconds: float = 0.6) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    silence = np.zeros(int(0.2 * SR))
    return np.concatenate([silence, dsp.fade(np.sin(2 * np.pi * freq * t), SR, 0.005, 0.005), silence])


def _sounding_seconds(x: np.ndarray) -> float:
    hop = SR // 200  # 5 ms frames
    frames = np.sqrt(np.mean(x[: len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    loud = np.flatnonzero(frames >= 0.1 * frames.max())
    return (loud[-1] + 1 - loud[0]) * hop / SR


def _dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), 1 << 18))
    return float(np.argmax(spectrum) * SR / (1 << 18))


FRAME = 512 / SR  # the vocoder's frame


@pytest.mark.parametrize("factor", [0.7, 1.5])
def test_time_stretch_scales_duration_and_keeps_frequency(factor):
    x = _tone_burst(880.0)
    y = time_stretch(x, factor, SR)
    assert len(y) == round(len(x) * factor)
    assert _sounding_seconds(y) == pytest.approx(factor * _sounding_seconds(x), abs=FRAME)
    assert _dominant_hz(y) == pytest.approx(880.0, rel=0.02)


@pytest.mark.parametrize("semitones", [-4.0, 5.0])
def test_pitch_shift_moves_frequency_and_keeps_duration(semitones):
    x = _tone_burst(660.0)
    y = pitch_shift(x, semitones, SR)
    assert len(y) == len(x)
    assert _dominant_hz(y) == pytest.approx(660.0 * 2 ** (semitones / 12), rel=0.02)
    assert _sounding_seconds(y) == pytest.approx(_sounding_seconds(x), abs=FRAME)


def test_records_follow_the_stretch(loud_set):
    events = [e for r in _records(loud_set[0]) for e in r["events"]]
    stretches = np.array([e["time_stretch"] for e in events])
    assert stretches.min() < 0.9 and stretches.max() > 1.2 and np.ptp([e["pitch_shift"] for e in events]) > 2
    for e in events:
        assert e["event_duration"] == pytest.approx(e["source_duration"] * e["time_stretch"],
                                                    abs=(e["time_stretch"] / 2 + 1) / SR)
        assert e["onset"] == round(e["event_time"], 3)
        assert e["offset"] == pytest.approx(e["event_time"] + e["event_duration"], abs=5e-4 + 1e-9)
