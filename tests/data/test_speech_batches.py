"""Speech batches (jaxaudio.data.speech_batches): items equal the files, each training batch is
padded to the smallest bucket that holds it, an epoch covers each utterance once, shards split
batches disjointly, and a resumed iterator continues with the batches an uninterrupted one gives."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.data.speech import Buckets, Utterance
from jaxaudio.data.speech_batches import BucketBatches, SpeechSource, utterance_samples
from jaxaudio.data.tokenizer import CharTokenizer
from jaxaudio.errors import AudioFileError, CheckpointError, ConfigError

SR = 16000


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    root = tmp_path_factory.mktemp("utts")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(30):
        n = int(rng.integers(SR // 4, 2 * SR))
        path = root / f"u{i:02d}.wav"
        sf.write(path, (rng.uniform(-0.5, 0.5, n) * 32767).astype(np.int16), SR, subtype="PCM_16")
        utts.append(Utterance(f"u{i:02d}", str(path), "ab" * (1 + i % 4), "s"))
    return utts


def _source(utts, **kw):
    tok = CharTokenizer.train(u.text for u in utts)
    args = dict(sample_rate=SR, samples=2 * SR, max_tokens=8) | kw
    return SpeechSource(utts, tok.encode, **args), tok


def test_items_are_the_files_padded(utterances):
    source, tok = _source(utterances)
    item = source[3]
    wave, _ = sf.read(utterances[3].path, dtype="float32")
    assert item["audio"].shape == (2 * SR,) and int(item["audio_len"]) == len(wave)
    np.testing.assert_array_equal(item["audio"][:len(wave)], wave)
    assert not item["audio"][len(wave):].any()
    assert tok.decode(item["tokens"][:int(item["token_len"])].tolist()) == utterances[3].text
    assert not item["tokens"][int(item["token_len"]):].any() and int(item["index"]) == 3
    assert int(source.padding_item()["index"]) == -1
    assert list(utterance_samples(utterances[:3], SR)) == [len(sf.read(u.path)[0]) for u in utterances[:3]]


def test_too_long_audio_or_transcript_names_the_file(utterances):
    source, _ = _source(utterances, samples=SR // 8)
    with pytest.raises(AudioFileError, match="u00.wav"):
        source[0]
    with pytest.raises(ConfigError, match="u03.wav.*max_tokens"):
        _source(utterances, max_tokens=6)


def _batches(utterances, **kw):
    source, _ = _source(utterances)
    lengths = utterance_samples(utterances, SR)
    buckets = Buckets((SR, 3 * SR // 2, 2 * SR), (4, 4, 2))
    return BucketBatches(source, lengths, buckets, seed=3, **kw), lengths, buckets


def test_batches_take_the_smallest_bucket_and_cover_an_epoch(utterances):
    it, lengths, buckets = _batches(utterances)
    seen = []
    while it.epoch == 0:
        batch = next(it)
        if it.epoch:
            break
        width = batch["audio"].shape[1]
        for i, n in zip(batch["index"], batch["audio_len"]):
            assert n == lengths[i] and buckets.frames[buckets.index(int(n))] == width
        seen += batch["index"].tolist()
        if it.position == len(it._order):
            break
    assert len(seen) == len(set(seen)) and len(seen) >= len(utterances) - 3 * 4


def test_shards_split_each_batch(utterances):
    whole = _batches(utterances)[0]
    parts = [_batches(utterances, shard_index=k, shard_count=2)[0] for k in range(2)]
    for _ in range(5):
        rows = next(whole)["index"].tolist()
        halves = [next(p)["index"].tolist() for p in parts]
        assert halves[0] + halves[1] == rows and not set(halves[0]) & set(halves[1])


def test_resume_continues_the_same_batches(utterances):
    it = _batches(utterances)[0]
    for _ in range(11):   # past the end of epoch 0
        next(it)
    state = it.get_state()
    expected = [next(it)["index"].tolist() for _ in range(4)]
    again = _batches(utterances)[0]
    again.set_state(state)
    assert [next(again)["index"].tolist() for _ in range(4)] == expected
    other = _batches(utterances, shard_index=0, shard_count=2)[0]
    with pytest.raises(CheckpointError, match="cannot resume"):
        other.set_state(state)


def test_speed_perturbation_per_epoch(utterances):
    """Each row is its file played at the epoch's drawn speed (scipy's resample_poly as the
    reference), bucketed by its perturbed length; a resumed iterator perturbs alike."""
    from scipy.signal import resample_poly

    from jaxaudio.audio.io import read_audio

    it, lengths, buckets = _batches(utterances, speeds=(0.9, 1.0, 1.1))
    speeds = it.epoch_speeds(0)
    assert set(speeds) == {0.9, 1.0, 1.1}
    assert np.array_equal(speeds, _batches(utterances, speeds=(0.9, 1.0, 1.1))[0].epoch_speeds(0))
    assert not np.array_equal(speeds, it.epoch_speeds(1))   # drawn again each epoch
    batch = next(it)
    width = batch["audio"].shape[1]
    for row, (i, n) in enumerate(zip(batch["index"], batch["audio_len"])):
        up, down = {0.9: (10, 9), 1.0: (1, 1), 1.1: (10, 11)}[float(speeds[i])]
        want = resample_poly(read_audio(utterances[i].path, SR).astype(np.float64), up, down)
        want = want[:int(np.floor(lengths[i] * up / down + 0.5))]
        assert n == len(want) and buckets.frames[buckets.index(int(n))] == width
        np.testing.assert_allclose(batch["audio"][row, :n], want, atol=1e-6)
    state = it.get_state()
    expected = [next(it)["audio"] for _ in range(3)]
    again = _batches(utterances, speeds=(0.9, 1.0, 1.1))[0]
    again.set_state(state)
    for a, b in zip([next(again)["audio"] for _ in range(3)], expected):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="cannot resume"):
        _batches(utterances)[0].set_state(state)   # saved with speed perturbation, resumed without
