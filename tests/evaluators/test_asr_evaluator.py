"""The ASR evaluator (jaxaudio.evaluators.asr): CER and its parts equal jiwer's on whitespace-free
characters, per-speaker CER, transcripts written next to the references, lower is better."""
from __future__ import annotations

import csv
import jiwer
import numpy as np
import pytest

from jaxaudio.data.speech import Utterance
from jaxaudio.data.tokenizer import CharTokenizer
from jaxaudio.evaluators.asr import ASREvaluator, score_texts

REFS = ["三 点 五", "打开 客厅 的 灯", "one two three", "set an alarm"]
HYPS = ["三点", "打开客厅灯灯", "one too three", "set an alarm"]
SPEAKERS = ["a", "a", "b", "b"]


def _chars(text):
    return " ".join(text.replace(" ", ""))


def _scored(tok, **evaluator):
    """REFS' utterances as a source, HYPS encoded by ``tok`` as a system's outputs; the evaluator."""
    utts = [Utterance(f"u{i}", f"/data/u{i}.wav", r, s) for i, (r, s) in enumerate(zip(REFS, SPEAKERS))]
    source = type("Source", (), {"utterances": utts, "__len__": lambda self: len(utts)})()
    ids = [tok.encode(h) for h in HYPS]
    tokens = np.zeros((4, 16), np.int64)
    for i, row in enumerate(ids):
        tokens[i, :len(row)] = row
    outputs = {"tokens": tokens, "token_len": np.array([len(r) for r in ids])}
    return outputs, ASREvaluator(lambda: source, 2, tok.decode, **evaluator)


def test_rates_equal_jiwer_on_characters():
    out = score_texts(REFS, HYPS, SPEAKERS)
    ref, hyp = [_chars(r) for r in REFS], [_chars(h) for h in HYPS]
    parts = jiwer.process_words(ref, hyp)
    n = parts.hits + parts.substitutions + parts.deletions
    assert out["cer"] == pytest.approx(jiwer.wer(ref, hyp))
    assert (out["sub"], out["del"], out["ins"]) == pytest.approx(
        (parts.substitutions / n, parts.deletions / n, parts.insertions / n))
    assert out["cer/a"] == pytest.approx(jiwer.wer(ref[:2], hyp[:2]))
    assert out["cer/b"] == pytest.approx(jiwer.wer(ref[2:], hyp[2:]))
    assert out["sentence_error_rate"] == 0.75


def test_evaluator_decodes_rows_and_writes_transcripts(tmp_path):
    outputs, evaluator = _scored(CharTokenizer.train(REFS + HYPS))
    metrics = evaluator.score_arrays(outputs, plot_dir=str(tmp_path), plot_prefix="test")
    assert metrics["cer"] == pytest.approx(score_texts(REFS, HYPS)["cer"])
    assert evaluator.mode == "min" and evaluator.primary_metric == "cer"
    with open(tmp_path / "test_transcripts.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["hypothesis"] for r in rows] == [h.replace(" ", "") for h in HYPS]
    assert rows[2]["char_errors"] == "1" and rows[3]["char_errors"] == "0"
    assert (tmp_path / "test_cer_per_speaker.png").stat().st_size > 1000


def test_bpe_evaluator_reports_wer_as_jiwer_on_its_word_rule():
    from jaxaudio.data.bpe_tokenizer import BPETokenizer, bpe_text

    tok = BPETokenizer.train((REFS + HYPS) * 3, vocab_size=40)
    outputs, evaluator = _scored(tok, word_text=bpe_text)
    metrics = evaluator.score_arrays(outputs)
    # "三 点 五" -> one word "三点五" (no spaces beside CJK), "one two three" -> three words
    assert metrics["wer"] == pytest.approx(jiwer.wer([bpe_text(r) for r in REFS], [bpe_text(h) for h in HYPS]))
    assert metrics["wer"] == pytest.approx(3 / 8)   # 三点五, 打开客厅的灯, two: 3 of 1+1+3+3 words
    assert metrics["cer"] == pytest.approx(score_texts(REFS, HYPS)["cer"])
    assert "wer" not in _scored(tok)[1].score_arrays(outputs)
