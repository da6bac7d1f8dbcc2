"""The SentencePiece BPE tokenizer: the specials at CharTokenizer's ids, frequent words as one
piece, English spaces kept and CJK word spaces dropped, a model rebuilt from its pieces and scores
that encodes as sentencepiece itself reads the saved file, <unk> counted, named errors."""
from __future__ import annotations

import logging

import pytest
import sentencepiece

from jaxaudio.data.bpe_tokenizer import BPETokenizer, bpe_text
from jaxaudio.data.tokenizer import SPECIALS, UNK
from jaxaudio.errors import ConfigError, DataFormatError

DIGITS = "zero one two three four five six seven eight nine".split()
TEXTS = ([f"{DIGITS[i % 10]} {DIGITS[(3 * i) % 10]} {DIGITS[(7 * i + 1) % 10]}" for i in range(60)]
         + ["turn on the light", "turn off the light", "打开 电视", "关闭 电视", "下一首", "请 打开 门"] * 5)


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXTS, vocab_size=100)


def test_text_rule():
    assert bpe_text("  turn   on\tthe light ") == "turn on the light"
    assert bpe_text("请 打开 门") == "请打开门"                      # AISHELL's word spaces are not speech
    assert bpe_text("播放 jazz 音乐") == "播放jazz音乐"               # nor a space beside a CJK character
    assert bpe_text("なに を 見る") == "なにを見る"


def test_specials_then_pieces_and_frequent_words_are_one_piece(tok):
    assert tok.tokens[:len(SPECIALS)] == SPECIALS and len(tok) == 100
    for word in ("▁seven", "▁three", "▁light"):
        assert word in tok.tokens, word
    assert tok.encode("seven") == [tok.tokens.index("▁seven")]
    assert sum(len(tok.encode(t)) for t in TEXTS) < 0.5 * sum(len(t.replace(" ", "")) for t in TEXTS)


def test_round_trip_keeps_english_spaces(tok):
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == bpe_text(text)
    assert tok.decode([UNK, 1, 2, 0, *tok.encode("two one")]) == "two one"   # specials dropped


def test_rebuilt_and_saved_models_encode_as_the_trained_one(tok, tmp_path):
    rebuilt = BPETokenizer(tok.tokens, tok.scores)          # what config.json holds
    reference = sentencepiece.SentencePieceProcessor(model_file=tok.save(tmp_path))
    probes = TEXTS + ["nine nine eight", "turn on 电视", "seventeen", "the light off"]
    for text in probes:
        ids = tok.encode(text)
        assert rebuilt.encode(text) == ids
        assert reference.encode(bpe_text(text)) == ids
    loaded = BPETokenizer.load(tmp_path)
    assert loaded.tokens == tok.tokens and loaded.scores == tok.scores
    assert not list(tmp_path.glob("*.tmp"))


def test_training_is_deterministic(tok):
    again = BPETokenizer.train(TEXTS, vocab_size=100)
    assert again.tokens == tok.tokens and again.scores == tok.scores


def test_unknown_characters_map_to_unk_and_are_counted(tok, caplog):
    fresh = BPETokenizer(tok.tokens, tok.scores)
    ids = fresh.encode("seven Q eight 雨")
    assert ids.count(UNK) == 2 and fresh.unknown == {"Q": 1, "雨": 1}
    with caplog.at_level(logging.WARNING):
        fresh.report_unknown("test voices")
    assert "test voices: 2 characters outside the vocabulary mapped to <unk>" in caplog.text


def test_named_errors(tok, tmp_path):
    with pytest.raises(ConfigError, match="data.bpe_vocab_size=5000: sentencepiece cannot train it"):
        BPETokenizer.train(TEXTS, vocab_size=5000)
    with pytest.raises(ConfigError, match="no characters"):
        BPETokenizer.train([" ", ""], vocab_size=100)
    with pytest.raises(ConfigError, match="99 scores for 100 BPE tokens"):
        BPETokenizer(tok.tokens, tok.scores[:-1])
    with pytest.raises(ConfigError, match="starts with"):
        BPETokenizer(tok.tokens[1:], tok.scores[1:])
    with pytest.raises(DataFormatError, match="bpe.model: no BPE model"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "bpe.model").write_bytes(b"not a model")
    with pytest.raises(DataFormatError, match="bpe.model: not a SentencePiece model"):
        BPETokenizer.load(tmp_path)
