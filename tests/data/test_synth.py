"""The built-in synthetic DESED-layout set: layout, labels, level, determinism, cache.

References: the project's DESED reader reads the files back; soundfile reads the audio; an
STFT band-energy measurement checks that each label sits where its sound is.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, DESED_CLASSES, load_subset
from jaxaudio.data.synth import CLASSES, SMALL, SynthConfig, generate, make_source, render_clip
from jaxaudio.data.synth import cache as synth_cache
from jaxaudio.data.synth import desed as synth_desed
from jaxaudio.data.synth import manifest
from jaxaudio.data.synth.__main__ import main as cli_main
from jaxaudio.data.synth.desed import SUBSETS
from jaxaudio.errors import ConfigError

SR = 16000
SHORT = {"Alarm_bell_ringing", "Cat", "Dishes", "Dog", "Speech"}
TINY = SynthConfig(n_strong=3, n_weak=2, n_unlabeled=1, n_validation=0, n_eval=0)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "small", SMALL, progress=False, workers=1)


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): manifest.sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != manifest.MANIFEST_NAME}


def test_classes_match_the_reader():
    assert CLASSES == DESED_CLASSES


@pytest.mark.parametrize("label", CLASSES)
def test_sources_are_varied_and_have_desed_like_durations(label):
    lengths, spectra = [], []
    for seed in range(6):
        x = make_source(label, np.random.default_rng(seed), SR)
        assert x.ndim == 1 and np.all(np.isfinite(x))
        assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-6)
        lengths.append(len(x) / SR)
        spectra.append(np.log(np.abs(np.fft.rfft(x[:SR // 10], SR // 10)) ** 2 + 1e-9))
    if label in SHORT:
        assert max(lengths) <= 4.5
    else:
        assert min(lengths) >= 1.0 and max(lengths) <= 10.0
    assert len(set(lengths)) == len(lengths)  # durations differ within a class
    assert np.std(np.stack(spectra), axis=0).mean() > 0.5  # and so do spectra


def test_reader_reads_the_layout_back(small_root):
    for plan in SUBSETS:
        records = load_subset(small_root, DEFAULT_LAYOUT[plan.name])
        size = getattr(SMALL, plan.size_field)
        assert len(records) == size
        for index, record in enumerate(records):
            info = sf.info(record.path)
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, 10 * SR, "PCM_16")
            expected = render_clip(SMALL, plan.name, index).events  # recomputed independently
            if plan.strong_tsv:
                assert record.events == tuple((e.onset, e.offset, e.label) for e in expected)
            if plan.weak_tsv:
                assert set(record.weak) == {e.label for e in expected} and record.weak
            if plan.durations_tsv:
                assert record.duration == 10.0
    for name in ("validation", "eval"):
        seen = {e[2] for r in load_subset(small_root, DEFAULT_LAYOUT[name]) for e in r.events}
        assert seen == set(CLASSES)


def test_event_rules_hold_on_many_clips():
    config = dataclasses.replace(SMALL, max_events=6, empty_fraction=0.3)
    empty = 0
    for index in range(40):
        events = render_clip(config, "validation", index).events
        empty += not events
        if index < len(CLASSES):  # class coverage: clip k carries class k
            assert any(e.label == CLASSES[index] for e in events)
        for i, a in enumerate(events):
            assert 0.0 <= a.onset < a.offset <= 10.0
            assert a.onset <= 10.0 - config.min_visible_seconds
            assert config.snr_db_min <= a.snr_db <= config.snr_db_max
            for b in events[i + 1:]:
                if a.label == b.label:  # same class: never overlapping
                    assert a.offset <= b.onset or b.offset <= a.onset
    assert 0 < empty < 40


def test_mixture_is_background_plus_events_at_the_stated_snr():
    """Closed form: event RMS / background RMS (whole clip) = 10^(snr/20)."""
    for index in range(12):
        clip = render_clip(SMALL, "synthetic_train", index, keep_stems=True)
        np.testing.assert_allclose(clip.audio, clip.background + sum(clip.stems), atol=1e-12)
        bg_rms = np.sqrt(np.mean(clip.background ** 2))
        for event, stem in zip(clip.events, clip.stems):
            start, end = int(round(event.onset * SR)), int(round(event.offset * SR))
            span = stem[start:end]
            assert not stem[:start].any() and not stem[end:].any()  # nothing outside the label
            snr = 20 * np.log10(np.sqrt(np.mean(span ** 2)) / bg_rms)
            assert snr == pytest.approx(event.snr_db, abs=0.01)


def _band_power(x: np.ndarray, n_fft=512, hop=256) -> np.ndarray:
    """(frames, bands): STFT power summed in 24 log-spaced bands from 60 Hz to 8 kHz."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.geomspace(60.0, SR / 2, 25)
    bins = np.fft.rfftfreq(n_fft, 1 / SR)
    return np.stack([power[:, (bins >= lo) & (bins < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)


def test_labels_are_where_the_sound_is(small_root):
    """In-band energy inside each labelled span vs background-only frames of the same clip.

    For every event, its class's dominant band is taken from its own isolated signal (stem).
    On the file on disk, the mean power in that band over frames inside the label is compared
    with frames that no label touches. A label over its sound gives a large ratio; the control
    (a background-only stretch labelled as if it were the event) gives about 0 dB.
    """
    ratios, controls = [], []
    hop, n_fft = 256, 512
    for plan in (p for p in SUBSETS if p.strong_tsv):
        records = load_subset(small_root, DEFAULT_LAYOUT[plan.name])
        for index, record in enumerate(records):
            audio, _ = sf.read(record.path)
            clip = render_clip(SMALL, plan.name, index, keep_stems=True)
            np.testing.assert_allclose(audio, clip.audio, atol=1.5 / 32768)  # the same clip
            bands = _band_power(audio)
            starts = np.arange(bands.shape[0]) * hop / SR
            ends = starts + n_fft / SR
            touched = np.zeros(len(starts), bool)
            for onset, offset, _ in record.events:
                touched |= (ends > onset) & (starts < offset)
            free = np.flatnonzero(~touched)
            for (onset, offset, label), stem in zip(record.events, clip.stems):
                inside = (starts >= onset) & (ends <= offset)
                if inside.sum() < 2 or len(free) < 2 * inside.sum():
                    continue
                band = np.argmax(_band_power(stem)[inside].sum(0))
                ratios.append(10 * np.log10(bands[inside, band].mean() / bands[free, band].mean()))
                fake = free[: inside.sum()]  # control: a background-only stretch of equal length
                rest = free[inside.sum():]
                controls.append(10 * np.log10(bands[fake, band].mean() / bands[rest, band].mean()))
    ratios, controls = np.array(ratios), np.array(controls)
    assert len(ratios) >= 30
    assert np.mean(ratios) >= 6.0
    assert np.mean(ratios >= 3.0) >= 0.9
    assert abs(np.mean(controls)) < 3.0


def test_generation_is_deterministic_and_worker_independent(small_root, tmp_path):
    again = generate(tmp_path / "again", SMALL, progress=False, workers=2)
    assert _file_hashes(again) == _file_hashes(small_root)
    assert manifest.read_manifest(again) == manifest.read_manifest(small_root)


def test_different_seeds_differ():
    a = render_clip(SMALL, "validation", 3)
    b = render_clip(dataclasses.replace(SMALL, seed=1), "validation", 3)
    assert a.events != b.events
    assert not np.allclose(a.audio, b.audio)
    c = render_clip(dataclasses.replace(SMALL, n_strong=500), "validation", 3)
    np.testing.assert_array_equal(a.audio, c.audio)  # another subset's size changes nothing


def test_ensure_dataset_reuses_regenerates_and_is_atomic(tmp_path, monkeypatch):
    root = tmp_path / "set"
    synth_cache.ensure_dataset(root, TINY, progress=False, workers=1)
    assert manifest.is_complete(root, synth_desed.identity(TINY), verify_hashes=True)
    before = _file_hashes(root)

    def must_not_generate(*args, **kwargs):
        raise AssertionError("a complete set with the same config must be reused")

    with monkeypatch.context() as m:
        m.setattr(synth_cache, "generate", must_not_generate)
        assert synth_cache.ensure_dataset(root, TINY, progress=False) == root

    wav = next(root.rglob("*.wav"))
    wav.write_bytes(wav.read_bytes()[:100])  # damaged file: size no longer matches
    synth_cache.ensure_dataset(root, TINY, progress=False, workers=1)
    assert _file_hashes(root) == before

    other = dataclasses.replace(TINY, seed=7)
    synth_cache.ensure_dataset(root, other, progress=False, workers=1)
    assert manifest.read_manifest(root)["identity"]["config"]["seed"] == 7
    assert _file_hashes(root) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temp folders left


def test_interrupted_generation_is_not_taken_as_complete(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(synth_desed, "_write_metadata", crash)
    with pytest.raises(RuntimeError):
        synth_cache.ensure_dataset(tmp_path / "set", TINY, progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_cli_reuses_a_matching_set(small_root, capsys):
    assert cli_main(["--task", "desed", "--out", str(small_root), "--preset", "small"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["validation"]["clips"] == SMALL.n_validation
    assert all(n >= 1 for n in stats["eval"]["events_per_class"].values())


@pytest.mark.parametrize("change", [{"n_validation": 5}, {"max_events": 0}, {"snr_db_min": 30.0}])
def test_bad_configs_are_refused(tmp_path, change):
    with pytest.raises(ConfigError, match="SynthConfig"):
        generate(tmp_path, dataclasses.replace(SMALL, **change), progress=False)


def test_ensure_dataset_never_replaces_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a synthetic set"):
        synth_cache.ensure_dataset(foreign, TINY, progress=False, workers=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_regenerating_a_smaller_set_in_place_drops_old_clips(tmp_path):
    root = generate(tmp_path / "set", TINY, progress=False, workers=1)
    smaller = dataclasses.replace(TINY, n_unlabeled=0, n_strong=1)
    generate(root, smaller, progress=False, workers=1)
    assert sorted(p.name for p in root.rglob("*.wav")) == ["synth_00000.wav", "weak_00000.wav", "weak_00001.wav"]
    assert manifest.is_complete(root, synth_desed.identity(smaller), verify_hashes=True)
