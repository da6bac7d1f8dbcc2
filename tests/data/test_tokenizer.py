"""The character tokenizer: AISHELL's word spaces dropped, a fixed id order, <unk> counted."""
from __future__ import annotations

import json
import logging

import pytest

from jaxaudio.data.tokenizer import BLANK, SPECIALS, UNK, CharTokenizer
from jaxaudio.errors import ConfigError, DataFormatError


def test_vocabulary_is_specials_then_characters_by_frequency():
    tok = CharTokenizer.train(["今天 天气 很 好", "天 好", "call mom"])
    # 天 x3, 好 x2, l x2, m x2 (ties by code point), then the singletons by code point
    assert tok.tokens[:len(SPECIALS)] == ("<blank>", "<s>", "</s>", "<unk>") and BLANK == 0
    assert tok.tokens[4:8] == ("天", "l", "m", "好")
    assert set(tok.tokens[8:]) == set("今气很cao") and " " not in tok.tokens
    assert tok.decode(tok.encode("今天 天气")) == "今天天气"
    assert CharTokenizer.train(["天 好 天", "call mom", "今天 天气 很 好"]).tokens == tok.tokens   # order-free


def test_unknown_characters_map_to_unk_and_are_counted(caplog):
    tok = CharTokenizer.train(["今天 天气"])
    assert tok.encode("今天下雨") == [tok.tokens.index("今"), tok.tokens.index("天"), UNK, UNK]
    tok.encode("雨")
    assert tok.unknown == {"下": 1, "雨": 2}
    with caplog.at_level(logging.WARNING):
        tok.report_unknown("test voices")
    assert "test voices: 3 characters outside the vocabulary mapped to <unk> ('雨' x2, '下' x1)" in caplog.text
    assert tok.decode([UNK, 1, 2, tok.tokens.index("气")]) == "气"


def test_min_count_and_save_load(tmp_path):
    tok = CharTokenizer.train(["aab", "ac"], min_count=2)
    assert tok.tokens[len(SPECIALS):] == ("a",)
    tok.save(tmp_path)
    assert CharTokenizer.load(tmp_path).tokens == tok.tokens
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_token_lists(tmp_path):
    with pytest.raises(DataFormatError, match="tokens.json: no token list"):
        CharTokenizer.load(tmp_path)
    (tmp_path / "tokens.json").write_text("{")
    with pytest.raises(DataFormatError, match="tokens.json: not a token list"):
        CharTokenizer.load(tmp_path)
    (tmp_path / "tokens.json").write_text(json.dumps({"kind": "bpe", "tokens": []}))
    with pytest.raises(DataFormatError, match="not a character token list"):
        CharTokenizer.load(tmp_path)
    with pytest.raises(ConfigError, match="starts with"):
        CharTokenizer(["a", "b"])
    with pytest.raises(ConfigError, match="twice"):
        CharTokenizer(SPECIALS + ("a", "a"))
    with pytest.raises(ConfigError, match="no characters"):
        CharTokenizer.train(["  ", ""])
