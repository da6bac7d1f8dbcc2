"""Speech corpora: the AISHELL-1 layout, manifests, bad input named by file and line, buckets."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from jaxaudio.data import speech
from jaxaudio.data.speech import Buckets, Utterance, bucket_batches, read_aishell, read_manifest
from jaxaudio.errors import ConfigError, DataFormatError


def _wav(path, seconds=0.1):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)


def _aishell(root, lines, wavs):
    for split, speaker, utt in wavs:
        _wav(root / "wav" / split / speaker / f"{utt}.wav")
    (root / "transcript").mkdir(parents=True, exist_ok=True)
    (root / speech.AISHELL_TRANSCRIPT).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_aishell_split_reads_its_own_wavs_with_their_transcripts(tmp_path, caplog):
    _aishell(tmp_path, ["BAC009S0002W0122 而 对 楼市 成交 抑制 作用 最 大 的 限 购",
                        "BAC009S0002W0123 也 成为 地方 政府 的 眼中 钉",
                        "BAC009S0724W0121 甚至 出现 交易 几乎 停滞 的 情况",
                        "BAC009S0999W0001 没有 录音 的 一行"],
             [("train", "S0002", "BAC009S0002W0122"), ("train", "S0002", "BAC009S0002W0123"),
              ("train", "S0002", "BAC009S0002W0199"), ("dev", "S0724", "BAC009S0724W0121")])
    with caplog.at_level(logging.WARNING):
        train = read_aishell(tmp_path, "train")
    assert [u.utt_id for u in train] == ["BAC009S0002W0122", "BAC009S0002W0123"]
    assert train[0] == Utterance("BAC009S0002W0122", str(tmp_path / "wav/train/S0002/BAC009S0002W0122.wav"),
                                 "而 对 楼市 成交 抑制 作用 最 大 的 限 购", "S0002")
    # the untranscribed wav is counted and named; so is the transcript line with no wav anywhere
    assert "1 wav files have no line" in caplog.text and "BAC009S0002W0199" in caplog.text
    assert "1 transcript lines have no wav in any split (first: BAC009S0999W0001)" in caplog.text
    assert [u.speaker for u in read_aishell(tmp_path, "dev")] == ["S0724"]


@pytest.mark.parametrize("line, problem", [("BAC009S0002W0122", "empty transcript"),
                                           ("BAC009S0002W0122   ", "empty transcript")])
def test_aishell_empty_transcript_names_file_and_line(tmp_path, line, problem):
    _aishell(tmp_path, ["BAC009S0002W0123 好", line], [("train", "S0002", "BAC009S0002W0122")])
    with pytest.raises(DataFormatError, match=r"aishell_transcript_v0.8.txt, row 2: .*" + problem):
        read_aishell(tmp_path, "train")


def test_non_utf8_transcript_names_file_and_line(tmp_path):
    _aishell(tmp_path, ["BAC009S0002W0122 好"], [("train", "S0002", "BAC009S0002W0122")])
    path = tmp_path / speech.AISHELL_TRANSCRIPT
    path.write_bytes("BAC009S0002W0122 好\nBAC009S0002W0123 楼市\n".encode("gbk"))
    with pytest.raises(DataFormatError, match=r"aishell_transcript_v0.8.txt, row 1: not UTF-8"):
        read_aishell(tmp_path, "train")
    path.write_bytes("BAC009S0002W0122 好\n".encode() + "BAC009S0002W0123 楼市\n".encode("gbk"))
    with pytest.raises(DataFormatError, match=r"row 2: not UTF-8"):
        read_aishell(tmp_path, "train")


def test_aishell_layout_errors(tmp_path):
    with pytest.raises(DataFormatError, match="wav/train: no such folder"):
        read_aishell(tmp_path, "train")
    with pytest.raises(ConfigError, match="split 'eval'"):
        read_aishell(tmp_path, "eval")
    _wav(tmp_path / "wav/train/S1/U1.wav")
    with pytest.raises(DataFormatError, match="AISHELL transcript not found"):
        read_aishell(tmp_path, "train")
    _aishell(tmp_path, ["U1 好", "U1 坏"], [])
    with pytest.raises(DataFormatError, match="row 2: utterance 'U1' is transcribed twice"):
        read_aishell(tmp_path, "train")


def test_manifests_jsonl_and_tsv_give_the_same_utterances(tmp_path):
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "sub" / "b.flac")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": "a.wav", "text": "call  mom", "speaker": "s1"}) + "\n\n"
        + json.dumps({"path": "sub/b.flac", "text": "今天 天气"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "m.tsv").write_text("path\ttext\tspeaker\na.wav\tcall mom\ts1\nsub/b.flac\t今天 天气\t\n",
                                    encoding="utf-8")
    jsonl, tsv = read_manifest(tmp_path / "m.jsonl"), read_manifest(tmp_path / "m.tsv")
    assert jsonl == tsv == [Utterance("a", str(tmp_path / "a.wav"), "call mom", "s1"),
                            Utterance("sub/b", str(tmp_path / "sub" / "b.flac"), "今天 天气", "")]


@pytest.mark.parametrize("body, problem", [
    ('{"path": "a.wav", "text": "hi"}\n{"path": "gone.wav", "text": "x"}\n', r"row 2: audio file .*gone.wav not found"),
    ('{"path": "a.wav", "text": "  "}\n', r"row 1: a.wav: empty transcript"),
    ('{"path": "a.wav", "text": "hi"}\n{"path": "a.wav", "text": "hi"}\n', r"row 2: utterance 'a' listed twice"),
    ('{"path": "a.wav", "text": "hi"\n', r"row 1: not a JSON object"),
    ('{"text": "hi"}\n', r"row 1: row has no 'path'"),
    ("\n", "manifest lists no utterances"),
])
def test_bad_manifest_rows_name_the_manifest_and_line(tmp_path, body, problem):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text(body, encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"m.jsonl[,:] " + problem):
        read_manifest(tmp_path / "m.jsonl")


def test_bad_tsv_manifests(tmp_path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.tsv").write_text("file\ttranscript\na.wav\thi\n")
    with pytest.raises(DataFormatError, match="m.tsv, row 1: header must name 'path' and 'text'"):
        read_manifest(tmp_path / "m.tsv")
    (tmp_path / "m.tsv").write_text("path\ttext\na.wav\thi\textra\n")
    with pytest.raises(DataFormatError, match="m.tsv, row 2: 3 columns, the header has 2"):
        read_manifest(tmp_path / "m.tsv")
    with pytest.raises(DataFormatError, match="m.csv: manifest must be one of .jsonl, .tsv"):
        read_manifest(tmp_path / "m.csv")


def test_bucket_batches_are_fixed_shapes_in_one_seeded_order(caplog):
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 120, size=200)
    lengths[[7, 50]] = [150, 400]                       # longer than the largest bucket
    buckets = Buckets(frames=(40, 80, 120), batch_sizes=(8, 4, 2))
    names = [f"utt{i}" for i in range(200)]
    with caplog.at_level(logging.WARNING):
        batches = bucket_batches(lengths, buckets, seed=3, names=names)
    assert "2 utterances are longer than the largest bucket (120 frames)" in caplog.text and "utt7" in caplog.text
    again = bucket_batches(lengths, buckets, seed=3, names=names)   # what another host computes
    assert len(again) == len(batches)
    assert all(b1 == b2 and np.array_equal(i1, i2) for (b1, i1), (b2, i2) in zip(batches, again))
    other = bucket_batches(lengths, buckets, seed=4)
    assert [b for b, _ in other] != [b for b, _ in batches]
    used = np.concatenate([idx for _, idx in batches])
    assert len(used) == len(set(used.tolist()))         # no utterance twice in an epoch
    for b, idx in batches:
        assert len(idx) == buckets.batch_sizes[b]
        assert lengths[idx].max() <= buckets.frames[b]
        assert b == 0 or lengths[idx].min() > buckets.frames[b - 1]   # the smallest bucket that holds it
    # without dropping, every utterance that fits appears exactly once
    every = np.concatenate([idx for _, idx in bucket_batches(lengths, buckets, seed=3, drop_remainder=False)])
    assert sorted(every.tolist()) == sorted(set(range(200)) - {7, 50})


def test_bad_buckets():
    with pytest.raises(ConfigError, match="ascending"):
        Buckets(frames=(80, 40), batch_sizes=(1, 1))
    with pytest.raises(ConfigError, match="one positive size per bucket"):
        Buckets(frames=(40, 80), batch_sizes=(1,))
