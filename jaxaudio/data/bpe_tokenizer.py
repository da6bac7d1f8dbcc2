"""SentencePiece BPE tokenizer for speech recognition, trained from the training text.

Same interface and special ids as ``CharTokenizer`` (``0 <blank>`` CTC blank and padding,
``1 <s>``, ``2 </s>``, ``3 <unk>``), so a model, its losses and its decoders do not know which
one a run uses. What differs is the text it sees:

* Spaces between words are kept where they are speech (English word boundaries, so WER means
  something) and dropped next to CJK characters (AISHELL's word segmentation is not spoken;
  ``bpe_text``). The pieces mark a word start with ``▁``; ``decode`` turns it back into a space.
* Normalisation is ``identity``: the model sees the transcript's own characters, and the
  references it is scored against are the same text.

A trained model is fully described by its piece list and the pieces' scores (BPE merges by
score; every other setting is fixed here), so ``config.data.tokens`` and ``config.data.token_scores``
rebuild it from config.json alone (predict, export, resume); ``save`` also writes the model as a
SentencePiece ``.model`` file other tools read.
"""
from __future__ import annotations

import io
import os
import re
from collections import Counter
from typing import Iterable, Sequence

from jaxaudio.data.tokenizer import SPECIALS, UNK, Tokenizer
from jaxaudio.errors import ConfigError, DataFormatError
from jaxaudio.io import paths

FILE_NAME = "bpe.model"
# CJK ideographs (base, extension A, compatibility) and kana: written without spaces between words
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_SPACE_BY_CJK = re.compile(rf"(?<=[{_CJK}]) | (?=[{_CJK}])")


def bpe_text(text: str) -> str:
    """The text BPE reads: whitespace runs become one space, and a space beside a CJK character goes."""
    return _SPACE_BY_CJK.sub("", " ".join(text.split()))


def _spm():
    try:
        import sentencepiece
    except ImportError:   # a core dependency (pyproject.toml); missing only in a hand-made environment
        raise ConfigError("data.tokenizer 'bpe' needs sentencepiece: pip install sentencepiece") from None
    return sentencepiece


def _model_proto(tokens: Sequence[str], scores: Sequence[float]) -> bytes:
    """A SentencePiece BPE model of ``tokens`` with ``scores`` and this module's fixed settings."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    kinds = {0: pb.ModelProto.SentencePiece.CONTROL, 1: pb.ModelProto.SentencePiece.CONTROL,
             2: pb.ModelProto.SentencePiece.CONTROL, UNK: pb.ModelProto.SentencePiece.UNKNOWN}
    for i, (piece, score) in enumerate(zip(tokens, scores)):
        model.pieces.add(piece=piece, score=float(score), type=kinds.get(i, pb.ModelProto.SentencePiece.NORMAL))
    for key, value in _trainer_settings(len(tokens)).items():
        if key not in ("character_coverage", "num_threads", "minloglevel", "normalization_rule_name"):
            setattr(model.trainer_spec, key, value)
    model.trainer_spec.model_type = pb.TrainerSpec.BPE
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    model.normalizer_spec.escape_whitespaces = True
    return model.SerializeToString()


def _trainer_settings(vocab_size: int) -> dict:
    return dict(vocab_size=int(vocab_size), character_coverage=1.0, normalization_rule_name="identity",
                pad_id=0, pad_piece=SPECIALS[0], bos_id=1, bos_piece=SPECIALS[1], eos_id=2,
                eos_piece=SPECIALS[2], unk_id=UNK, unk_piece=SPECIALS[3],
                num_threads=1, minloglevel=2)   # one thread: the same pieces on every host and run


class BPETokenizer(Tokenizer):
    """``encode(text) -> ids`` and ``decode(ids) -> text`` through a SentencePiece BPE model."""

    def __init__(self, tokens: Sequence[str], scores: Sequence[float]):
        tokens = tuple(tokens)
        if tokens[:len(SPECIALS)] != SPECIALS:
            raise ConfigError(f"a BPE token list starts with {SPECIALS}, got {tokens[:len(SPECIALS)]}")
        if len(scores) != len(tokens):
            raise ConfigError(f"data.token_scores holds {len(scores)} scores for {len(tokens)} BPE tokens")
        if len(set(tokens)) != len(tokens):
            raise ConfigError("the BPE token list holds a token twice")
        self.tokens = tokens
        self.scores = tuple(float(s) for s in scores)
        self._sp = _spm().SentencePieceProcessor(model_proto=_model_proto(self.tokens, self.scores))
        self.unknown = Counter()   # characters seen by encode that no piece covers

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int) -> BPETokenizer:
        """BPE pieces of ``texts`` (after ``bpe_text``), ``vocab_size`` of them with the 4 specials."""
        lines = [t for t in (bpe_text(text) for text in texts) if t]
        if not lines:
            raise ConfigError("BPETokenizer.train: the training texts hold no characters")
        model = io.BytesIO()
        try:
            _spm().SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
                                              **_trainer_settings(vocab_size))
        except RuntimeError as err:   # e.g. "Vocabulary size too high (N). Please set it to a value <= M."
            raise ConfigError(f"data.bpe_vocab_size={vocab_size}: sentencepiece cannot train it ({err})") from None
        sp = _spm().SentencePieceProcessor(model_proto=model.getvalue())
        n = sp.get_piece_size()
        return cls([sp.id_to_piece(i) for i in range(n)], [sp.get_score(i) for i in range(n)])

    def encode(self, text: str) -> list[int]:
        pieces = self._sp.encode(bpe_text(text), return_type="proto").pieces
        for p in pieces:
            if p.id == UNK:
                self.unknown.update(p.surface.replace(" ", ""))
        return [p.id for p in pieces]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; specials (blank, sos, eos, unk) are dropped."""
        return self._sp.decode([int(i) for i in ids if i >= len(SPECIALS)])

    def save(self, workdir: os.PathLike | str) -> str:
        """The model as a SentencePiece file (``sentencepiece.SentencePieceProcessor(model_file=...)``)."""
        path = paths.join(workdir, FILE_NAME)
        paths.write_bytes_atomic(path, self._sp.serialized_model_proto())   # never half a model
        return path

    @classmethod
    def load(cls, workdir: os.PathLike | str) -> BPETokenizer:
        path = paths.join(workdir, FILE_NAME)
        if not paths.exists(path):
            raise DataFormatError(path, "no BPE model: the workdir's training run writes it first")
        with paths.open_read(path, binary=True) as f:
            proto = f.read()
        try:
            sp = _spm().SentencePieceProcessor(model_proto=proto)
        except RuntimeError as err:
            raise DataFormatError(path, f"not a SentencePiece model ({err})") from None
        n = sp.get_piece_size()
        return cls([sp.id_to_piece(i) for i in range(n)], [sp.get_score(i) for i in range(n)])
