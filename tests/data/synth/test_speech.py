"""The built-in speech corpus (jaxaudio.data.synth.speech): the layout the manifest reader reads,
held-out voices, determinism across worker counts, levels and SNRs as drawn, texts espeak reads.

References: the generic manifest reader (data/speech.read_manifest) reads what it writes;
levels are measured on the written 16-bit files (the padding before the speech is background
only, so its RMS against the speech's gives the SNR); sha256 compares sets.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.data import speech as speech_data
from jaxaudio.data.synth import espeak, manifest
from jaxaudio.data.synth import speech as synth
from jaxaudio.data.synth import speech_texts as texts
from jaxaudio.errors import ConfigError

SMALL = dataclasses.replace(synth.SMOKE, n_train=24, n_dev=6, n_test=6, kinds=texts.KINDS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("speech") / "one", SMALL, progress=False, workers=1)


def _rows(root, split):
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_manifests_read_back_with_the_generic_reader(corpus):
    for split, n in synth.counts(SMALL).items():
        utts = speech_data.read_manifest(corpus / f"{split}.jsonl")
        assert len(utts) == n
        assert all(u.text and u.speaker for u in utts)
        info = sf.info(utts[0].path)
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    rows = _rows(corpus, "train")
    assert {r["language"] for r in rows} == {"en", "zh"}
    assert manifest.is_complete(corpus, synth.identity(SMALL), verify_hashes=True)


def test_dev_and_test_voices_are_held_out(corpus):
    variants = {split: {r["variant"] for r in _rows(corpus, split)} for split in synth.SPLITS}
    assert variants["train"] <= set(SMALL.train_variants)
    assert not variants["train"] & (variants["dev"] | variants["test"])
    speakers = {split: {r["speaker"] for r in _rows(corpus, split)} for split in synth.SPLITS}
    assert not speakers["train"] & speakers["test"]


def test_same_set_whatever_the_worker_count(corpus, tmp_path):
    other = synth.generate(tmp_path / "two", SMALL, progress=False, workers=2)
    assert manifest.read_manifest(other)["content_sha256"] == manifest.read_manifest(corpus)["content_sha256"]
    reseeded = synth.generate(tmp_path / "three", dataclasses.replace(SMALL, seed=1), progress=False, workers=1)
    assert manifest.read_manifest(reseeded)["content_sha256"] != manifest.read_manifest(corpus)["content_sha256"]


def test_speech_level_and_snr_are_the_drawn_ones(corpus):
    errors = []
    for row in _rows(corpus, "train"):
        if row["reverb"]:
            continue
        audio, sr = sf.read(corpus / row["path"], dtype="float64")
        spec = synth.draw_utterance(SMALL, "train", int(row["id"].split("_")[1]))
        before = int(spec["pad_s"][0] * sr)
        noise_rms = np.sqrt(np.mean(audio[:before] ** 2))
        noise_db = 20 * np.log10(noise_rms)
        errors.append(noise_db - (spec["level_dbfs"] - spec["snr_db"]))
        assert 0.25 < len(audio) / sr < 5.0
    # the background's level is set over the whole clip; its first part can differ a little
    assert len(errors) >= 10 and abs(np.median(errors)) < 1.5 and np.max(np.abs(errors)) < 4.0


def test_every_text_is_one_espeak_reads():
    rng = np.random.default_rng(0)
    for kind in texts.KINDS:
        for _ in range(200):
            zh = texts.sentence(rng, "zh", kind)
            assert espeak.to_pinyin(zh)      # the 1.51 path: every word in the table
            espeak.mandarin_input(zh, path="hanzi")   # the 1.52 path: every character a syllable
            en = texts.sentence(rng, "en", kind)
            assert en == en.lower() and set(en.split()) <= texts.vocabulary("en")
    assert 150 <= len(texts.vocabulary("en")) + len(texts.vocabulary("zh")) <= 400


def test_numbers_read_as_spoken():
    assert [texts.en_number(n) for n in (0, 13, 40, 45)] == ["zero", "thirteen", "forty", "forty five"]
    assert [texts.en_ordinal(n) for n in (1, 3, 21, 30, 31)] == ["first", "third", "twenty first", "thirtieth",
                                                                 "thirty first"]
    assert [texts.zh_number(n) for n in (0, 10, 12, 20, 45)] == ["零", "十", "十二", "二十", "四十五"]


@pytest.mark.parametrize("change, named", [({"dev_variants": ("m1",)}, "train_variants"),
                                           ({"test_variants": ("nobody",)}, "'nobody'"),
                                           ({"languages": ("fr",)}, "'fr'"),
                                           ({"snr_db": (30.0, 10.0)}, "snr_db"),
                                           ({"n_dev": 0}, "n_dev")])
def test_bad_config_names_the_key(change, named, tmp_path):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        synth.generate(tmp_path, dataclasses.replace(SMALL, **change), progress=False)
