"""Character tokenizer for speech recognition, built from the training text and kept in the workdir.

Characters with all whitespace removed, as AISHELL is scored (``metrics.asr.char_tokens``): its
transcripts are word-segmented with spaces that are not part of the speech. English words become
their letters too, so one vocabulary covers both languages of the built-in corpus.

Ids: ``0 <blank>`` (CTC's blank and the padding id), ``1 <s>``, ``2 </s>``, ``3 <unk>``, then the
characters, most frequent first (ties by code point), so a vocabulary is the same on every host
and every run over the same text. A character outside the vocabulary maps to ``<unk>`` and is
counted (``unknown``), so a user sees how much of a test set the model cannot spell.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Iterable, Sequence

from jaxaudio.errors import ConfigError, DataFormatError
from jaxaudio.io import paths
from jaxaudio.metrics.asr import char_tokens

_logger = logging.getLogger(__name__)

SPECIALS = ("<blank>", "<s>", "</s>", "<unk>")
BLANK, SOS, EOS, UNK = range(len(SPECIALS))
FILE_NAME = "tokens.json"


class Tokenizer:
    """What every tokenizer of a run shares: its ``tokens`` (id -> string, the specials first) and
    the count of characters ``encode`` could not spell (``unknown``), reported once per split."""

    tokens: tuple[str, ...]
    unknown: Counter

    def __len__(self) -> int:
        return len(self.tokens)

    def report_unknown(self, where: str) -> None:
        """One warning naming how many characters of ``where`` were outside the vocabulary."""
        if self.unknown:
            top = ", ".join(f"{c!r} x{n}" for c, n in self.unknown.most_common(5))
            _logger.warning("%s: %d characters outside the vocabulary mapped to <unk> (%s)", where,
                            sum(self.unknown.values()), top)


class CharTokenizer(Tokenizer):
    """``encode(text) -> ids`` and ``decode(ids) -> text`` over a fixed character list."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"a token list starts with {SPECIALS}, got {tuple(tokens[:len(SPECIALS)])}")
        if len(set(tokens)) != len(tokens):
            raise ConfigError("the token list holds a token twice")
        self.tokens = tuple(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        self.unknown = Counter()   # characters seen by encode that the vocabulary lacks

    @classmethod
    def train(cls, texts: Iterable[str], *, min_count: int = 1) -> CharTokenizer:
        """The characters of ``texts`` that occur at least ``min_count`` times."""
        counts = Counter(c for text in texts for c in char_tokens(text))
        if not counts:
            raise ConfigError("CharTokenizer.train: the training texts hold no characters")
        kept = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(SPECIALS + tuple(kept))

    def encode(self, text: str) -> list[int]:
        ids = []
        for c in char_tokens(text):
            i = self._ids.get(c)   # one character: never one of the (longer) specials
            if i is None:
                self.unknown[c] += 1
                i = UNK
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids``; specials (blank, sos, eos, unk) are dropped."""
        return "".join(self.tokens[i] for i in ids if i >= len(SPECIALS))

    def save(self, workdir: os.PathLike | str) -> str:
        path = paths.join(workdir, FILE_NAME)
        record = json.dumps({"kind": "char", "tokens": list(self.tokens)}, ensure_ascii=False, indent=0)
        paths.write_text_atomic(path, record)   # a crash never leaves half a vocabulary
        return path

    @classmethod
    def load(cls, workdir: os.PathLike | str) -> CharTokenizer:
        path = paths.join(workdir, FILE_NAME)
        try:
            record = json.loads(paths.read_text(path))
        except FileNotFoundError:
            raise DataFormatError(path, "no token list: the workdir's training run writes it first") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataFormatError(path, f"not a token list ({err})") from None
        if record.get("kind") != "char" or not isinstance(record.get("tokens"), list):
            raise DataFormatError(path, "not a character token list (kind 'char', tokens [...])")
        return cls(record["tokens"])
