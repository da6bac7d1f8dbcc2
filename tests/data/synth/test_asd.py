"""The built-in ASD set (DCASE2020 task 2 layout): layout, format, determinism, cache, anomalies.

References: soundfile reads the files back; a regex of DCASE2020's file names; numpy FFT
spectra and envelopes measure where each anomaly's energy lies, against the parameters the
generator drew (a resonance, a band, a rate, a speed factor); sha256 compares bytes.
"""
from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal as sps

from jaxaudio.data.synth import asd, manifest
from jaxaudio.data.synth.asd import (PEAK, SMOKE, clip_anomaly, ensure_dataset, generate, id_signature,
                                     machine_ids, render_clip)
from jaxaudio.data.synth.asd_machines import ANOMALY_KINDS, MACHINE_TYPES, Mods, Streams, render_machine
from jaxaudio.errors import ConfigError

SR = 16000
PATTERN = re.compile(r"^dev_data/(fan|pump|slider|valve|ToyCar|ToyConveyor)/(train|test)/"
                     r"(normal|anomaly)_id_(\d{2})_(\d{8})\.wav$")
# All six types, clear anomalies: the energy checks need a fault well above the machine.
CLEAR = dataclasses.replace(SMOKE, machine_types=MACHINE_TYPES, severity_min=0.9, severity_max=1.0)
FAST = dataclasses.replace(SMOKE, machine_types=("valve",), ids_per_type=1, n_train=2, n_test_normal=1,
                           n_test_anomaly=1, clip_seconds=1.0)


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("asd") / "smoke", SMOKE, progress=False, workers=1)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): manifest.sha256_file(p) for p in sorted(root.rglob("*.wav"))}


def _band_fraction(x: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
    return float(power[(freqs >= lo) & (freqs <= hi)].sum() / power.sum())


def _anomaly_index(config, machine_type, kind, start=0):
    machine_id = machine_ids(config, machine_type)[0]
    for index in range(start, start + 50):
        if clip_anomaly(config, machine_type, machine_id, index).kind == kind:
            return machine_id, index
    raise AssertionError(f"no {kind} clip for {machine_type}")


def _twins(config, machine_type, kind, start=0):
    """(anomaly clip, its normal twin, the difference) for the first clip of `kind`."""
    machine_id, index = _anomaly_index(config, machine_type, kind, start)
    bad = render_clip(config, machine_type, machine_id, "test", "anomaly", index)
    good = render_clip(config, machine_type, machine_id, "test", "anomaly", index, with_anomaly=False)
    assert bad.anomaly.kind == kind and good.anomaly is None
    assert max(np.abs(bad.audio).max(), np.abs(good.audio).max()) < PEAK  # no rescaling: the difference is the fault
    return bad, good, bad.audio - good.audio


def test_layout_matches_dcase2020(smoke_root):
    wavs = sorted(str(p.relative_to(smoke_root)) for p in smoke_root.rglob("*.wav"))
    assert wavs and all(PATTERN.match(w) for w in wavs)
    parsed = [PATTERN.match(w).groups() for w in wavs]
    assert {p[0] for p in parsed} == set(SMOKE.machine_types)
    assert {p[2] for p in parsed if p[1] == "train"} == {"normal"}
    for machine_type in SMOKE.machine_types:
        ids = {p[3] for p in parsed if p[0] == machine_type}
        assert ids == {f"{i:02d}" for i in machine_ids(SMOKE, machine_type)}
        assert ids == ({"00", "02"} if machine_type == "fan" else {"01", "02"})  # DCASE's development IDs
        for machine_id in ids:
            def count(split, label):
                return sum(p[:4] == (machine_type, split, label, machine_id) for p in parsed)
            assert (count("train", "normal"), count("test", "normal"), count("test", "anomaly")) == (
                SMOKE.n_train, SMOKE.n_test_normal, SMOKE.n_test_anomaly)
    listed = manifest.read_manifest(smoke_root)["files"]
    assert set(listed) == set(wavs) | {asd.CLIPS_CSV}
    assert manifest.is_complete(smoke_root, asd.identity(SMOKE), verify_hashes=True)


def test_clips_have_the_configured_format_and_level(smoke_root):
    for path in smoke_root.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, int(SMOKE.clip_seconds * SR),
                                                                               "PCM_16")
        x, _ = sf.read(path, dtype="int16")
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean((x / 32768.0) ** 2)))
        assert -45.0 < rms_dbfs < -15.0, path  # not silent
        assert np.abs(x.astype(int)).max() < 32767 * PEAK + 2, path  # not clipping


def test_csv_records_each_clip_and_its_anomaly(smoke_root):
    with open(smoke_root / asd.CLIPS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list(smoke_root.rglob("*.wav")))
    for row in rows:
        assert (smoke_root / row["path"]).is_file()
        if row["label"] == "anomaly":
            expected = clip_anomaly(SMOKE, row["machine_type"], int(row["machine_id"]),
                                    int(PATTERN.match(row["path"]).group(5)))
            assert (row["kind"], float(row["severity"])) == (expected.kind, pytest.approx(expected.severity, abs=1e-4))
        else:
            assert row["kind"] == row["severity"] == ""
        assert SMOKE.snr_db_min <= float(row["snr_db"]) <= SMOKE.snr_db_max


def test_generation_is_deterministic_whatever_the_worker_count(smoke_root, tmp_path):
    again = generate(tmp_path / "again", SMOKE, progress=False, workers=2)
    assert _hashes(again) == _hashes(smoke_root)
    clip = render_clip(SMOKE, "fan", 2, "test", "anomaly", 1)
    assert asd.to_pcm16(clip.audio).tobytes() == asd.to_pcm16(
        render_clip(SMOKE, "fan", 2, "test", "anomaly", 1).audio).tobytes()
    on_disk, _ = sf.read(smoke_root / "dev_data/fan/test/anomaly_id_02_00000001.wav", dtype="int16")
    np.testing.assert_array_equal(on_disk, asd.to_pcm16(clip.audio))


def test_a_split_or_type_never_changes_another(smoke_root):
    """A clip depends only on (seed, type, ID, split, index): not on the counts or the type list."""
    other = dataclasses.replace(SMOKE, machine_types=("ToyCar",), n_train=1, n_test_normal=5)
    a = render_clip(other, "ToyCar", 2, "test", "anomaly", 2).audio
    on_disk, _ = sf.read(smoke_root / "dev_data/ToyCar/test/anomaly_id_02_00000002.wav", dtype="int16")
    np.testing.assert_array_equal(on_disk, asd.to_pcm16(a))
    reseeded = render_clip(dataclasses.replace(SMOKE, seed=1), "ToyCar", 2, "test", "anomaly", 2).audio
    assert not np.array_equal(asd.to_pcm16(reseeded), on_disk)


def test_ids_have_their_own_signature(smoke_root):
    """A linear classifier on clip-mean log-mels, fitted on train normals, names the ID of
    every test normal: IDs of one type differ (what ID-classifying systems such as GeCo need)."""
    librosa = pytest.importorskip("librosa")
    from sklearn.linear_model import LogisticRegression

    def features(paths):
        mels = [librosa.feature.melspectrogram(y=sf.read(p, dtype="float32")[0], sr=SR, n_fft=1024, hop_length=512,
                                               n_mels=64) for p in paths]
        return np.stack([np.log10(m + 1e-10).mean(axis=1) for m in mels])

    for machine_type in SMOKE.machine_types:
        data = {split: sorted((smoke_root / "dev_data" / machine_type / split).glob("normal_*.wav"))
                for split in ("train", "test")}
        labels = {split: [PATTERN.match(f"dev_data/{machine_type}/{split}/{p.name}").group(4) for p in paths]
                  for split, paths in data.items()}
        model = LogisticRegression(max_iter=2000).fit(features(data["train"]), labels["train"])
        assert model.score(features(data["test"]), labels["test"]) == 1.0, machine_type


@pytest.mark.parametrize("machine_type", MACHINE_TYPES)
def test_id_spread_moves_ids_toward_one_shared_signature(machine_type):
    """spread 1 is each ID's own signature (the default sets are unchanged); spread 0 makes a
    type's IDs one machine; in between, continuous values lie that fraction of the way from the
    shared value to the ID's own, and counts stay the shared ones."""
    ids = machine_ids(CLEAR, machine_type)[:2]
    own = [id_signature(CLEAR, machine_type, i) for i in ids]
    same = [id_signature(dataclasses.replace(CLEAR, id_spread=0.0), machine_type, i) for i in ids]
    close = [id_signature(dataclasses.replace(CLEAR, id_spread=0.25), machine_type, i) for i in ids]
    assert own[0]["rot_hz"] != own[1]["rot_hz"]
    amps = "hum_amps" if machine_type == "valve" else "amps"
    assert same[0]["rot_hz"] == same[1]["rot_hz"] and np.array_equal(same[0][amps], same[1][amps])
    for c, o in zip(close, own):
        assert c["rot_hz"] == pytest.approx(same[0]["rot_hz"] + 0.25 * (o["rot_hz"] - same[0]["rot_hz"]))
        np.testing.assert_allclose(c[amps], same[0][amps] + 0.25 * (o[amps] - same[0][amps]))
        assert c["room_seed"] == same[0]["room_seed"]
    gap = abs(own[0]["rot_hz"] - own[1]["rot_hz"])
    assert abs(close[0]["rot_hz"] - close[1]["rot_hz"]) == pytest.approx(0.25 * gap)


def test_the_default_spread_keeps_earlier_cached_sets_valid():
    assert "id_spread" not in asd.identity(SMOKE)["config"]
    assert asd.identity(asd.TINY_CLOSE_IDS)["config"]["id_spread"] == 0.25


def test_a_normal_clip_is_its_own_twin():
    a = render_clip(SMOKE, "fan", 0, "train", "normal", 3)
    b = render_clip(SMOKE, "fan", 0, "train", "normal", 3, with_anomaly=False)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.anomaly is None


@pytest.mark.parametrize("machine_type,kind", [
    ("fan", "clicks"), ("slider", "clicks"), ("valve", "clicks"),
    ("pump", "friction"), ("ToyConveyor", "friction"), ("slider", "friction"),
    ("valve", "rattle"), ("ToyCar", "rattle"),
])
def test_additive_anomaly_energy_lies_in_its_band(machine_type, kind):
    bad, good, diff = _twins(CLEAR, machine_type, kind)
    p = bad.anomaly.params
    assert 20 * np.log10(np.sqrt(np.mean(diff ** 2)) / np.sqrt(np.mean(good.audio ** 2))) > -20.0
    if kind == "clicks":  # a ringing resonance (and its 1.6x partner), impulsive
        f = p["resonance_hz"]
        assert _band_fraction(diff, 0.6 * f, min(2.2 * f, SR / 2)) > 0.7
        assert np.max(np.abs(diff)) / np.sqrt(np.mean(diff ** 2)) > 5.0
    elif kind == "friction":
        lo, hi = p["centre_hz"] * 2 ** -p["width_octaves"], p["centre_hz"] * 2 ** p["width_octaves"]
        assert _band_fraction(diff, 0.75 * lo, 1.3 * hi) > 0.85
    else:  # rattle: broadband bursts that flutter at the rattling rate
        assert _band_fraction(diff, 0.75 * p["lo_hz"], 1.3 * p["hi_hz"]) > 0.85
        env = np.abs(sps.hilbert(diff))
        env = sps.decimate(env, 40)  # 400 Hz envelope rate
        spec = np.abs(np.fft.rfft(env - env.mean())) ** 2
        freqs = np.fft.rfftfreq(len(env), 40.0 / SR)
        grid = np.arange(5.0, 60.0, 0.25)  # the bursts blur each line: compare bands 1 Hz wide
        power = [spec[np.abs(freqs - f) <= 0.5].sum() for f in grid]
        assert grid[int(np.argmax(power))] == pytest.approx(p["rate_hz"], abs=1.0)


@pytest.mark.parametrize("machine_type", ["pump", "ToyCar"])
def test_imbalance_adds_a_low_shaft_rate_component(machine_type):
    bad, good, _ = _twins(CLEAR, machine_type, "imbalance")
    rot = id_signature(CLEAR, machine_type, machine_ids(CLEAR, machine_type)[0])["rot_hz"]

    def band_power(x):
        return _band_fraction(x, 0.9 * rot, 1.1 * rot) * np.sum(x ** 2)

    assert 10 * np.log10(band_power(bad.audio) / band_power(good.audio)) > 6.0  # a pump's motor already hums there


@pytest.mark.parametrize("machine_type", ["fan", "ToyCar", "valve"])
def test_speed_and_missing_clips_differ_from_their_twin(machine_type):
    for kind in ("speed", "missing"):
        bad, good, diff = _twins(CLEAR, machine_type, kind)
        assert 20 * np.log10(np.sqrt(np.mean(diff ** 2)) / np.sqrt(np.mean(good.audio ** 2))) > -25.0, kind


def _fan_tone_peak(x, bpf, k):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
    band = (freqs > 0.8 * k * bpf) & (freqs < 1.25 * k * bpf)
    return freqs[band][np.argmax(spectrum[band])]


def test_wrong_speed_scales_the_blade_pass_tone():
    sig = id_signature(CLEAR, "fan", 0)
    streams = Streams([0, 1, 2, 3])
    n = 4 * SR
    normal, _ = render_machine("fan", sig, n, SR, streams)
    fast, _ = render_machine("fan", sig, n, SR, streams, Mods(speed=1.1))
    bpf = sig["rot_hz"] * sig["blades"]
    k = 1 + int(np.argmax(sig["amps"]))
    assert _fan_tone_peak(fast, bpf, k) / _fan_tone_peak(normal, bpf, k) == pytest.approx(1.1, abs=0.01)


def test_a_missing_harmonic_is_exactly_that_harmonic():
    sig = id_signature(CLEAR, "fan", 2)
    streams = Streams([0, 1, 2, 4])
    normal, _ = render_machine("fan", sig, 2 * SR, SR, streams)
    missing, _ = render_machine("fan", sig, 2 * SR, SR, streams, Mods(missing=1.0))
    f = sig["rot_hz"] * sig["blades"] * (sig["missing_harmonic"] + 1)
    assert _band_fraction(normal - missing, 0.93 * f, 1.07 * f) > 0.9


def test_missing_ticks_are_sparse_and_sit_in_the_ticks_band():
    sig = id_signature(CLEAR, "ToyConveyor", 1)
    streams = Streams([0, 5, 1, 2, 0])
    normal, _ = render_machine("ToyConveyor", sig, 2 * SR, SR, streams)
    missing, _ = render_machine("ToyConveyor", sig, 2 * SR, SR, streams, Mods(missing=0.5, missing_seed=3))
    diff = normal - missing
    assert np.any(diff != 0) and np.mean(np.abs(diff) > 1e-9 * np.abs(diff).max()) < 0.7
    freqs = [f for f, _ in sig["tick_modes"]]
    assert _band_fraction(diff, 0.6 * min(freqs), 1.6 * max(freqs)) > 0.7


def test_kinds_take_turns_and_severities_stay_in_range():
    config = dataclasses.replace(SMOKE, severity_min=0.2, severity_max=0.4)
    drawn = [clip_anomaly(config, "pump", 0, i) for i in range(12)]
    assert sorted(a.kind for a in drawn) == sorted(ANOMALY_KINDS * 2)
    assert all(0.2 <= a.severity <= 0.4 for a in drawn)
    quarters = [int((clip_anomaly(SMOKE, "fan", 0, i).severity * 4)) for i in range(0, 24, 6)]  # one kind's turns
    assert quarters == [0, 2, 1, 3]
    with pytest.raises(ConfigError, match="drill"):
        render_clip(SMOKE, "drill", 0, "train", "normal", 0)
    with pytest.raises(ConfigError, match="train/anomaly"):
        render_clip(SMOKE, "fan", 0, "train", "anomaly", 0)
    assert {clip_anomaly(config, "valve", 0, i).kind for i in range(10)} == set(ANOMALY_KINDS) - {"imbalance"}


def test_ensure_dataset_reuses_then_regenerates_on_a_config_change(tmp_path, monkeypatch):
    root = tmp_path / "asd"
    assert ensure_dataset(root, FAST, progress=False) == root
    first = _hashes(root)
    calls = []
    real_generate = asd.generate
    monkeypatch.setattr(asd, "generate", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    assert ensure_dataset(root, FAST, progress=False) == root
    assert calls == [] and _hashes(root) == first
    changed = dataclasses.replace(FAST, seed=3)
    ensure_dataset(root, changed, progress=False)
    assert calls == [1]
    assert manifest.read_manifest(root)["identity"] == asd.identity(changed)
    assert set(_hashes(root)) == set(first) and _hashes(root) != first
    (root / "dev_data/valve/train/normal_id_00_00000000.wav").write_bytes(b"truncated")
    ensure_dataset(root, changed, progress=False)  # a damaged file: regenerated
    assert calls == [1, 1] and manifest.is_complete(root, asd.identity(changed))


def test_ensure_dataset_refuses_a_folder_that_is_not_ours(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="mine"):
        ensure_dataset(root, FAST, progress=False)
    assert (root / "notes.txt").read_text() == "keep me"


def test_cli_writes_the_preset_and_the_cache_reuses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(asd, "PRESETS", {**asd.PRESETS, "smoke": FAST})
    assert asd.main(["--out", str(tmp_path / "cli"), "--preset", "smoke", "--quiet"]) == 0
    assert manifest.is_complete(tmp_path / "cli", asd.identity(FAST))
    assert asd.cli(["--out", str(tmp_path / "cli"), "--preset", "smoke", "--seed", "-1", "--quiet"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("changes,key", [
    ({"machine_types": ("fan", "drill")}, "machine_types"),
    ({"machine_types": ()}, "machine_types"),
    ({"anomaly_kinds": ("smoke",)}, "anomaly_kinds"),
    ({"machine_types": ("valve",), "anomaly_kinds": ("imbalance",)}, "anomaly_kinds"),
    ({"severity_min": 0.8, "severity_max": 0.2}, "severity_min"),
    ({"n_train": -1}, "n_train"),
    ({"sample_rate": 8000}, "sample_rate"),
    ({"snr_db_min": 10.0, "snr_db_max": 0.0}, "snr_db_min"),
    ({"seed": -1}, "seed"),
    ({"id_spread": 1.5}, "id_spread"),
])
def test_bad_configs_name_the_key(changes, key, tmp_path):
    with pytest.raises(ConfigError, match=f"ASDSynthConfig.{key}"):
        generate(tmp_path / "x", dataclasses.replace(SMOKE, **changes), progress=False)
    assert not (tmp_path / "x").exists()
