"""The built-in set's strong_real subset: layout, labels, recording conditions, the others unchanged.

References: the project's DESED reader reads the tsv back; soundfile reads the audio; the
recording conditions are measured on the rendered audio (band energy ratios, clip levels)
and on each event's isolated signal (Schroeder energy decay after the labelled offset).
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, load_subset
from jaxaudio.data.synth import desed as synth
from jaxaudio.data.synth import manifest
from jaxaudio.data.synth.desed import (DEFAULT, PRESETS, SMALL, SMOKE, SUBSETS, SUBSETS_BY_NAME, SynthConfig,
                                       generate, render_clip, to_pcm16)
from jaxaudio.errors import ConfigError

SR = 16000
# Short clips, every subset, more event-free clips than the presets (to write empty tsv rows).
CONFIG = dataclasses.replace(SMOKE, n_strong=3, n_strong_real=14, n_weak=2, n_unlabeled=2, n_validation=0,
                             n_eval=0, empty_fraction=0.5)
REAL_DIR = "audio/train/strong_label_real"
REAL_TSV = "metadata/train/audioset_strong.tsv"

# sha256 of to_pcm16(render_clip(...).audio) for clip_seconds=2.0, recorded with the generator
# before strong_real existed (GENERATOR_VERSION 1): adding the subset changed none of these.
BEFORE = SynthConfig(clip_seconds=2.0, n_strong=0, n_weak=0, n_unlabeled=0, n_validation=0, n_eval=0)
BEFORE_HASHES = {
    "synthetic_train/0": "df00987565f466a740a2d7180cc4f054c0338b49cbad72340a3a39c5d1f03518",
    "synthetic_train/11": "ae7d8697d475bc0100b9524262c8dd7f22b530489ebc55c3804fdc917ed0fd70",
    "weak/0": "4d732a0f29fd242cca37087e5ff7a00de3087040e7383042f7f6ed01bdeedc18",
    "weak/11": "32ce49c27ddb2733c8a53e41030c94373839e98ce0f107a8e9dfd2642caffa91",
    "unlabeled/0": "e7759f735eaed53f288ab426329bfdd52b38a86ef01cb5ed7a0524e2463c5764",
    "unlabeled/11": "fdaa1f82fb7446c148cd49aa94bb3db45a6830520ab055c8b51562c741c79d16",
    "validation/0": "4fe15a8b3e9d0a3ce6eaa053065ec2fbe8aaab705ea6eb567ad0b8bf7a77bfad",
    "validation/11": "5df969bcddf932699b9088b622771b20127e1ba22656a5fa937b7259506bd119",
    "eval/0": "f543a8af22b6daedc11e37b9bf06bd33c0d150e06f0a1eac638896dcede7d183",
    "eval/11": "d253bfc4ccb0a9601a2da1ec490ac30401ea47f5f25608bf23e938e2b5168d43",
}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): manifest.sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != manifest.MANIFEST_NAME}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """(the set with strong_real, the same config without it)."""
    base = tmp_path_factory.mktemp("strong_real")
    with_real = generate(base / "with", CONFIG, progress=False, workers=1)
    without = generate(base / "without", dataclasses.replace(CONFIG, n_strong_real=0), progress=False, workers=1)
    return with_real, without


def test_presets_have_real_strong_clips_in_desed_proportion():
    assert SynthConfig().n_strong_real == 0  # a hand-made config writes what it names
    for preset in PRESETS.values():
        assert 0.2 <= preset.n_strong_real / preset.n_strong <= 0.6  # DESED: 3470 / 10000
    assert (DEFAULT.n_strong_real, SMALL.n_strong_real, SMOKE.n_strong_real) == (200, 6, 32)
    plan = SUBSETS_BY_NAME["strong_real"]
    assert plan not in SUBSETS  # the sound-bank generator (soundscape.py) does not write it
    assert (plan.audio_dir, plan.strong_tsv) == (DEFAULT_LAYOUT["strong_real"].audio_dir,
                                                 DEFAULT_LAYOUT["strong_real"].strong_tsv)
    assert plan.rng_id not in {p.rng_id for p in SUBSETS}
    assert synth.GENERATOR_VERSION >= 2


def test_the_subset_is_written_and_read_back(roots):
    root, _ = roots
    names = sorted(p.name for p in (root / REAL_DIR).iterdir())
    assert names == [f"real_{i:05d}.wav" for i in range(CONFIG.n_strong_real)]
    records = load_subset(root, DEFAULT_LAYOUT["strong_real"])
    assert [Path(r.path).name for r in records] == names
    empty = 0
    for index, record in enumerate(records):
        audio, sr = sf.read(record.path, dtype="int16")
        assert sr == SR and audio.shape == (int(CONFIG.clip_seconds * SR),)
        clip = render_clip(CONFIG, "strong_real", index)  # recomputed independently
        np.testing.assert_array_equal(audio, to_pcm16(clip.audio))
        assert record.events == tuple((e.onset, e.offset, e.label) for e in clip.events)
        assert record.weak is None and record.duration is None
        empty += not record.events
    assert empty >= 1
    lines = (root / REAL_TSV).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label"
    assert sum(line.endswith("\t\t\t") for line in lines) == empty  # one empty row per event-free clip
    assert {DEFAULT_LAYOUT["strong_real"].strong_tsv, *(f"{REAL_DIR}/{n}" for n in names)} <= set(
        manifest.read_manifest(root)["files"])


def test_every_other_file_is_unchanged_by_the_subset(roots):
    with_real, without = roots
    others = {rel: h for rel, h in _hashes(with_real).items() if not rel.startswith((REAL_DIR, REAL_TSV))}
    assert others == _hashes(without)
    assert not (without / REAL_DIR).exists() and not (without / REAL_TSV).exists()


@pytest.mark.parametrize("key", sorted(BEFORE_HASHES))
def test_other_subsets_render_as_before_the_subset_existed(key):
    subset, index = key.split("/")
    audio = to_pcm16(render_clip(BEFORE, subset, int(index)).audio)
    assert hashlib.sha256(audio.tobytes()).hexdigest() == BEFORE_HASHES[key]


def _band_ratio_db(x: np.ndarray, lo: float, hi: float) -> float:
    """Energy in [lo, hi) Hz re the 500 Hz - 4 kHz band, in dB."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(power[(freqs >= lo) & (freqs < hi)].sum() / power[(freqs >= 500) & (freqs < 4000)].sum())


def test_recording_conditions_differ_from_synthetic_train():
    """The microphone band-limits (less energy above 7 kHz and below 60 Hz, as written to disk)
    and the levels vary more from clip to clip."""
    measured = {}
    for subset in ("synthetic_train", "strong_real"):
        clips = [to_pcm16(render_clip(SMOKE, subset, i).audio) / 32768.0 for i in range(24)]
        measured[subset] = {
            "high": np.median([_band_ratio_db(x, 7000, 8000) for x in clips]),
            "low": np.median([_band_ratio_db(x, 20, 60) for x in clips]),
            "level_std": np.std([10 * np.log10(np.mean(x ** 2)) for x in clips]),
        }
    real, synthetic = measured["strong_real"], measured["synthetic_train"]
    assert real["high"] < synthetic["high"] - 12.0
    assert real["low"] < synthetic["low"] - 20.0
    assert real["level_std"] > 1.3 * synthetic["level_std"]


def _decay_time(tail: np.ndarray) -> float:
    """RT60 from the Schroeder curve's -5 to -25 dB span (T20 x 3), in seconds."""
    energy = np.cumsum((tail ** 2)[::-1])[::-1]
    edc = 10 * np.log10(energy / energy[0] + 1e-30)
    return 3 * (np.argmax(edc <= -25) - np.argmax(edc <= -5)) / SR


def test_events_ring_on_in_a_room_and_parts_sum_to_the_clip():
    """A strong_real event's own signal goes on after its offset and decays at the clip's
    RT60; a synthetic_train event's is exactly zero there. Bed + events = the clip."""
    config = SMALL  # 10 s clips: room after many offsets for a whole RT60
    decays, checked = [], 0
    for index in range(12):
        clip = render_clip(config, "strong_real", index, keep_stems=True)
        np.testing.assert_allclose(clip.audio, clip.background + sum(clip.stems), atol=1e-12)
        rt60 = clip.conditions["rt60_s"]
        assert 0.15 <= rt60 <= 0.9 and len(clip.conditions["event_drr_db"]) == len(clip.events)
        for event, stem in zip(clip.events, clip.stems):
            assert config.real_snr_db_min <= event.snr_db <= config.real_snr_db_max
            end = int(round(event.offset * SR))
            if end + int(rt60 * SR) <= len(stem):
                decays.append(_decay_time(stem[end:end + int(rt60 * SR)]) / rt60)
        synthetic = render_clip(config, "synthetic_train", index, keep_stems=True)
        for event, stem in zip(synthetic.events, synthetic.stems):
            assert not stem[int(round(event.offset * SR)):].any()
            checked += 1
    assert len(decays) >= 10 and checked >= 10
    assert np.mean(np.abs(np.log(decays)) < np.log(1.4)) >= 0.8  # within 40 % of the drawn RT60


def test_rendering_is_a_function_of_seed_subset_and_index():
    a = render_clip(SMOKE, "strong_real", 4)
    b = render_clip(dataclasses.replace(SMOKE, n_strong_real=500, n_strong=3), "strong_real", 4)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.events == b.events and a.conditions == b.conditions
    c = render_clip(dataclasses.replace(SMOKE, seed=1), "strong_real", 4)
    assert not np.allclose(a.audio, c.audio)


@pytest.mark.parametrize("change", [{"n_strong_real": -1}, {"real_snr_db_min": 20.0},
                                    {"real_background_dbfs_min": -10.0}])
def test_bad_real_settings_are_refused(tmp_path, change):
    with pytest.raises(ConfigError, match="SynthConfig." + next(iter(change))):
        generate(tmp_path, dataclasses.replace(SMALL, **change), progress=False)


def test_prepare_reads_the_subset_and_skips_a_missing_clip(tmp_path):
    """The prepared copy holds the strong_real split, minus a clip whose audio is gone."""
    pytest.importorskip("array_record")
    from jaxaudio.data.prepare import prepare
    from jaxaudio.data.sed.clips import ClipSource
    from jaxaudio.data.sed.labels import FrameLabelEncoder
    from jaxaudio.data.sed.prepared import PreparedClipSource

    config = SynthConfig(clip_seconds=1.0, n_strong=2, n_strong_real=4, n_weak=0, n_unlabeled=0, n_validation=0,
                         n_eval=0)
    root = generate(tmp_path / "set", config, progress=False, workers=1)
    (root / REAL_DIR / "real_00002.wav").unlink()  # a download that failed
    path = prepare(root, tmp_path / "prepared", sample_rate=SR, clip_seconds=1.0, progress=False)
    encoder = FrameLabelEncoder(synth.CLASSES, 1.0, 25)
    prepared = PreparedClipSource(path, "strong_real", encoder)
    folder = ClipSource(load_subset(root, DEFAULT_LAYOUT["strong_real"]), SR, SR, encoder)
    assert [r.clip_id for r in prepared.records] == ["real_00000", "real_00001", "real_00003"]
    for i in range(len(folder)):
        got, want = prepared[i], folder[i]
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
