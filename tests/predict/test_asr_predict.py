"""ASR ``predict_files`` without a trained model: the token-time rule on hand-made fire frames, the
buckets, and the driver against a fake model whose ids and fire frames follow from each row's
length. The smoke-trained Paraformer and autoregressive baseline end to end (transcripts equal to
their evaluation's, fire frames equal to the System's own decode, the run.py command line) are
tests/experiments/test_asr_predict.py, on the session's shared runs."""
import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.audio.io import read_audio
from jaxaudio.data.tokenizer import SPECIALS, CharTokenizer
from jaxaudio.errors import ConfigError
from jaxaudio.predict.asr import ASRPredictor, bucket_samples, predict_files, token_times

SR = 16000
FRAME_S = 0.04
BATCH = 8
TOKENIZER = CharTokenizer(SPECIALS + tuple("0123456789"))
SAMPLES_PER_TOKEN = 4000   # the fake emits one token per 0.25 s of audio


# ------------------------------------------------------------------------- the time rule


def test_token_times_tile_from_zero_to_each_fire_frame_end():
    # ends at (f + 1) * 40 ms; starts at the previous end; 30 -> 1.24 s is past the 1-s file
    assert token_times([2, 5, 6, 30], FRAME_S, 1.0) == [[0.0, 0.12], [0.12, 0.24], [0.24, 0.28], [0.28, 1.0]]
    assert token_times([0], FRAME_S, 0.5) == [[0.0, 0.04]]
    assert token_times([], FRAME_S, 1.0) == []
    # no fire frame (-1) ends at the file's end; frames out of order never make time run backwards
    assert token_times([3, -1], FRAME_S, 0.3) == [[0.0, 0.16], [0.16, 0.3]]
    assert token_times([5, 2, 7], FRAME_S, 2.0) == [[0.0, 0.24], [0.24, 0.24], [0.24, 0.32]]


def test_buckets_are_multiples_of_the_bucket_length():
    assert [bucket_samples(n, SR, 2.0) for n in (1, 32000, 32001, 95000)] == [32000, 32000, 64000, 96000]
    assert bucket_samples(100, SR, 0.5) == 8000


# ------------------------------------------------------------------ the driver, fake model


def fake_rows(audio_len):
    """Per row: ids cycling through every id (specials 0-3 included), one per 0.25 s; token k fired
    at encoder frame 6k + 5, i.e. ends at 0.24 (k + 1) s."""
    n = audio_len // SAMPLES_PER_TOKEN
    ids = [(7 * k + int(audio_len)) % len(TOKENIZER) for k in range(n)]
    return ids, [6 * k + 5 for k in range(n)]


def make_predictor(calls, *, width=None, trained_seconds=2.0):
    def transcribe(audio, audio_len):
        assert audio.dtype == np.float32 and audio.shape[0] == BATCH and audio_len.shape == (BATCH,)
        calls.append((audio.copy(), audio_len.copy()))
        w = width or audio.shape[1] // SAMPLES_PER_TOKEN
        tokens, fire = np.zeros((BATCH, w), np.int32), np.full((BATCH, w), -1, np.int32)
        lengths = np.zeros(BATCH, np.int32)
        for i, n in enumerate(audio_len):
            ids, frames = fake_rows(int(n))
            ids, frames = ids[:w], frames[:w]
            tokens[i, :len(ids)], fire[i, :len(ids)], lengths[i] = ids, frames, len(ids)
        return {"tokens": tokens, "token_len": lengths, "fire_frames": fire}

    return ASRPredictor(transcribe=transcribe, batch_size=BATCH, sample_rate=SR, frame_seconds=FRAME_S,
                        tokens=TOKENIZER.tokens, special_ids=frozenset(range(len(SPECIALS))),
                        decode=TOKENIZER.decode, trained_seconds=trained_seconds, min_seconds=0.085)


def _wav(path: Path, audio, rate=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="FLOAT" if path.suffix == ".wav" else None)   # flac: 16-bit
    return path


def _read_outputs(out: Path):
    with open(out / "transcripts.tsv", newline="", encoding="utf-8") as f:
        tsv = list(csv.DictReader(f, delimiter="\t"))
    jsonl = [json.loads(line) for line in (out / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()]
    return tsv, jsonl


def test_transcripts_times_buckets_resampling_and_failures(tmp_path, caplog):
    rng = np.random.default_rng(0)
    noise = lambda seconds: 0.1 * rng.standard_normal(int(seconds * SR))  # noqa: E731
    good = {
        "a.wav": _wav(tmp_path / "in/a.wav", noise(1.3)),
        "b.flac": _wav(tmp_path / "in/sub/b.flac", noise(2.6)),                   # the 4-s bucket, a note
        "c_44k.wav": _wav(tmp_path / "in/c_44k.wav", noise(1.7 * 44100 / SR), rate=44100),  # 1.7 s at 44.1 kHz
        "stereo.wav": _wav(tmp_path / "in/stereo.wav", 0.1 * rng.standard_normal((int(0.9 * SR), 2))),
        "short.wav": _wav(tmp_path / "in/short.wav", noise(0.2)),                 # no token: empty text
    }
    _wav(tmp_path / "in/empty.wav", np.zeros(0))
    (tmp_path / "in/text.wav").write_text("not audio\n")
    _wav(tmp_path / "in/long.wav", noise(5.5))
    _wav(tmp_path / "in/tiny.wav", noise(0.05))
    calls = []
    caplog.set_level(logging.INFO, "jaxaudio.predict")
    summary = predict_files(make_predictor(calls), [str(tmp_path / "in"), str(tmp_path / "missing.flac")],
                            str(tmp_path / "out"), max_seconds=5.0, progress=False)

    failed = {Path(f["path"]).name: f["error"] for f in summary["failed"]}
    assert set(failed) == {"missing.flac", "empty.wav", "text.wav", "long.wav", "tiny.wav"}
    assert "does not exist" in failed["missing.flac"] and "empty" in failed["empty.wav"]
    assert "unreadable" in failed["text.wav"]
    assert "5.50 s, longer than the 5-s cap (--max_seconds)" in failed["long.wav"]
    assert "shorter than the 0.085 s" in failed["tiny.wav"]
    for name in failed:   # each failure is logged with its file's name
        assert any(name in r.getMessage() for r in caplog.records if r.levelname == "ERROR"), name
    assert summary["files"] == 10 and summary["written"] == 5
    assert [Path(n["path"]).name for n in summary["notes"]] == ["b.flac"]   # longer than trained_seconds

    # one batch per bucket, padded with zero rows of length 0; each row exactly what read_audio reads
    assert sorted(a.shape[1] for a, _ in calls) == [32000, 64000]
    seen = {}
    for audio, lengths in calls:
        for row, n in zip(audio, lengths):
            if n:
                seen[int(n)] = row
            else:
                assert not row.any()
    for path in good.values():
        expected = read_audio(path, SR)
        np.testing.assert_array_equal(seen[len(expected)][:len(expected)], expected)
        assert not seen[len(expected)][len(expected):].any()

    tsv, jsonl = _read_outputs(tmp_path / "out")
    assert [r["file"] for r in tsv] == [r["file"] for r in jsonl] == sorted(str(p) for p in good.values())
    for t, j in zip(tsv, jsonl):
        path = Path(j["file"])
        info = sf.info(str(path))
        assert j["duration_s"] == pytest.approx(info.frames / info.samplerate, abs=1e-12)  # the native length
        ids, frames = fake_rows(len(read_audio(path, SR)))
        assert j["text"] == t["text"] == TOKENIZER.decode(ids)   # the evaluator's decoding of the same ids
        kept = [k for k, i in enumerate(ids) if i >= len(SPECIALS)]
        assert j["tokens"] == [TOKENIZER.tokens[ids[k]] for k in kept] == t["tokens"].split()
        assert "".join(j["tokens"]) == j["text"]
        all_times = token_times(frames, FRAME_S, j["duration_s"])
        assert j["token_times"] == [all_times[k] for k in kept]
        flat = [x for span in j["token_times"] for x in span]
        assert flat == sorted(flat) and all(0 <= x <= j["duration_s"] for x in flat)
        for k, (start, end) in zip(kept, j["token_times"]):
            assert end == pytest.approx(min((frames[k] + 1) * FRAME_S, j["duration_s"]))
    assert any(len(j["tokens"]) > 3 for j in jsonl) and any(len(j["tokens"]) < len(fake_rows(
        len(read_audio(Path(j["file"]), SR)))[0]) for j in jsonl)   # specials were dropped somewhere
    by_name = {Path(j["file"]).name: j for j in jsonl}
    assert by_name["short.wav"]["text"] == "" and by_name["short.wav"]["token_times"] == []
    assert json.loads((tmp_path / "out/summary.json").read_text())["written"] == 5


def test_a_full_token_buffer_gets_a_note_and_models_without_fire_frames_no_times(tmp_path):
    _wav(tmp_path / "in/x.wav", 0.1 * np.random.default_rng(1).standard_normal(SR * 2))
    summary = predict_files(make_predictor([], width=3), [str(tmp_path / "in")], str(tmp_path / "out"),
                            progress=False)
    assert "filled the decoder's 3-token buffer" in summary["notes"][0]["note"]

    base = make_predictor([])

    def no_fire(audio, audio_len):
        out = dict(base.transcribe(audio, audio_len))
        del out["fire_frames"]
        return out

    plain = ASRPredictor(transcribe=no_fire, batch_size=BATCH, sample_rate=SR, frame_seconds=FRAME_S,
                         tokens=TOKENIZER.tokens, special_ids=frozenset(range(4)))   # default decode: joined tokens
    summary = predict_files(plain, [str(tmp_path / "in")], str(tmp_path / "plain"), progress=False)
    [row] = _read_outputs(tmp_path / "plain")[1]
    assert row["token_times"] is None and row["text"] == "".join(row["tokens"]) != ""
    assert summary["settings"]["token_times"] is None   # no rule is claimed for times that were not made


def test_wiring_errors_and_bad_options_raise(tmp_path):
    _wav(tmp_path / "in/x.wav", np.full(SR, 0.1))
    wrong = ASRPredictor(transcribe=lambda a, n: {"tokens": np.zeros((3, 4), np.int32), "token_len": np.zeros(3)},
                         batch_size=BATCH, sample_rate=SR, frame_seconds=FRAME_S, tokens=TOKENIZER.tokens)
    with pytest.raises(ValueError, match="expected"):
        predict_files(wrong, [str(tmp_path / "in")], str(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="--max_seconds must be positive"):
        predict_files(wrong, [str(tmp_path / "in")], str(tmp_path / "out"), max_seconds=0, progress=False)
    with pytest.raises(ValueError, match="frame_seconds"):
        ASRPredictor(transcribe=None, batch_size=BATCH, sample_rate=SR, frame_seconds=0.0, tokens=("a",))
