"""Speech recognition metrics: CER, WER and the real-time factor, on host in plain Python.

Both rates are corpus-level, total edits over total reference tokens, as ESPnet, WeNet and
jiwer report them; a mean of per-utterance rates would give short utterances too much weight.

The alignment breaks ties between equally short edit scripts the way jiwer 4 (RapidFuzz's
Levenshtein opcodes) does, so S, D, I and hits equal jiwer's and not only their sum:
  * a common prefix and suffix are matched first, and the rest is traced back from its end;
  * at each step a deletion is taken whenever it lies on a shortest path, then an insertion
    when the cell to the left is one edit cheaper than the one diagonally up-left, and
    otherwise the diagonal (hit or substitution). So ``a b -> b a`` is 1 deletion +
    1 insertion + 1 hit, not 2 substitutions, and a substitution wins over an equally cheap
    insertion.
"""
from __future__ import annotations

import dataclasses
from typing import Hashable, Sequence, Union

Texts = Union[str, Sequence[str]]


@dataclasses.dataclass(frozen=True)
class EditCounts:
    """Edit counts of one alignment; add them up to score a corpus."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def ref_len(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def __add__(self, other: EditCounts) -> EditCounts:
        if not isinstance(other, EditCounts):
            return NotImplemented
        return EditCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.hits + other.hits)

    def __radd__(self, other):
        # sum(counts) starts from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def rate(self) -> float:
        """errors / reference tokens; raises ValueError when there are no reference tokens."""
        if self.ref_len == 0:
            raise ValueError("error rate: the references hold no tokens (division by zero)")
        return self.errors / self.ref_len


def edit_counts(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> EditCounts:
    """Levenshtein alignment of two token sequences (unit costs), with jiwer's tie-breaking."""
    ref, hyp = list(ref), list(hyp)
    # Match the common prefix and suffix first: it changes which of the tied alignments is found.
    prefix = 0
    while prefix < min(len(ref), len(hyp)) and ref[prefix] == hyp[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(ref), len(hyp)) - prefix and ref[-1 - suffix] == hyp[-1 - suffix]:
        suffix += 1
    a, b = ref[prefix:len(ref) - suffix], hyp[prefix:len(hyp) - suffix]
    n, m = len(a), len(b)

    # dist[i][j]: edits to turn a[:i] into b[:j]
    dist = [list(range(m + 1))]
    for i in range(1, n + 1):
        prev, row, token = dist[-1], [i], a[i - 1]
        for j in range(1, m + 1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (token != b[j - 1])))
        dist.append(row)

    subs = dels = ins = hits = 0
    i, j = n, m
    while i and j:
        if dist[i][j] == dist[i - 1][j] + 1:
            dels += 1
            i -= 1
        elif j > 1 and dist[i][j - 1] == dist[i - 1][j - 1] - 1:
            ins += 1
            j -= 1
        else:
            if a[i - 1] == b[j - 1]:
                hits += 1
            else:
                subs += 1
            i -= 1
            j -= 1
    return EditCounts(subs, dels + i, ins + j, hits + prefix + suffix)


def char_tokens(text: str) -> list[str]:
    """Characters with all whitespace removed: AISHELL transcripts are word-segmented with spaces,
    which are no part of the spoken text (jiwer.cer would count them as characters)."""
    return [c for c in text if not c.isspace()]


def word_tokens(text: str) -> list[str]:
    """Whitespace-separated words (runs of spaces and the ends do not make empty words)."""
    return text.split()


def _pairs(refs: Texts, hyps: Texts) -> tuple[list[str], list[str]]:
    refs = [refs] if isinstance(refs, str) else list(refs)
    hyps = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses: they must pair up")
    return refs, hyps


def cer_counts(refs: Texts, hyps: Texts) -> EditCounts:
    """Character edits summed over the corpus (whitespace ignored, see `char_tokens`)."""
    refs, hyps = _pairs(refs, hyps)
    return sum((edit_counts(char_tokens(r), char_tokens(h)) for r, h in zip(refs, hyps)), EditCounts())


def wer_counts(refs: Texts, hyps: Texts) -> EditCounts:
    """Word edits summed over the corpus."""
    refs, hyps = _pairs(refs, hyps)
    return sum((edit_counts(word_tokens(r), word_tokens(h)) for r, h in zip(refs, hyps)), EditCounts())


def cer(refs: Texts, hyps: Texts) -> float:
    """Corpus character error rate: total character edits / total reference characters."""
    return cer_counts(refs, hyps).rate()


def wer(refs: Texts, hyps: Texts) -> float:
    """Corpus word error rate: total word edits / total reference words."""
    return wer_counts(refs, hyps).rate()


def real_time_factor(decode_seconds: float, audio_seconds: float) -> float:
    """Decoding time / audio duration: below 1 decodes faster than real time."""
    if not audio_seconds > 0:
        raise ValueError(f"real_time_factor: audio_seconds must be positive, got {audio_seconds}")
    if not decode_seconds >= 0:
        raise ValueError(f"real_time_factor: decode_seconds must not be negative, got {decode_seconds}")
    return decode_seconds / audio_seconds
