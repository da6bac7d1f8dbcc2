"""CER / WER / RTF: hand-worked cases and random cases against jiwer 4 (counts, not only rates)."""
import math

import jiwer
import numpy as np
import pytest

from jaxaudio.metrics.asr import (EditCounts, cer, cer_counts, char_tokens, edit_counts, real_time_factor, wer,
                                  wer_counts, word_tokens)


def _jiwer_counts(output) -> tuple[int, int, int, int]:
    return output.substitutions, output.deletions, output.insertions, output.hits


def _counts(counts: EditCounts) -> tuple[int, int, int, int]:
    return counts.substitutions, counts.deletions, counts.insertions, counts.hits


# (reference, hypothesis, (S, D, I, H)) over words
WORD_CASES = [
    ("the cat sat on the mat", "cat sit on the mat today", (1, 1, 1, 4)),
    ("hello world", "hello world", (0, 0, 0, 2)),
    ("hello world", "", (0, 2, 0, 0)),
    ("a b c", "a x b c", (0, 0, 1, 3)),
    # ties: the same 2 edits could be 2 substitutions; jiwer takes a deletion, an insertion and a hit
    ("a b", "b a", (0, 1, 1, 1)),
    # ... but here 2 substitutions, not deletion + insertion + hit
    ("x a", "a y", (2, 0, 0, 0)),
    ("the cat sat on the mat", "the cat sit on mat please", (3, 0, 0, 3)),   # not (1, 1, 1, 4)
    # a tie decided by the common-prefix/suffix matching: 4 edits either way; (1, 2, 1, 3) is not jiwer's
    ("b c c c a b", "c b a b b", (3, 1, 0, 2)),
]


@pytest.mark.parametrize("ref, hyp, expected", WORD_CASES)
def test_hand_worked_word_cases(ref, hyp, expected):
    counts = wer_counts(ref, hyp)
    assert _counts(counts) == expected
    assert _jiwer_counts(jiwer.process_words(ref, hyp)) == expected
    assert counts.errors == sum(expected[:3]) and counts.ref_len == len(ref.split())
    assert wer(ref, hyp) == pytest.approx(jiwer.wer(ref, hyp))


def test_hand_worked_mandarin_with_word_segmentation_spaces():
    # AISHELL-style references are word-segmented; the hypotheses segment differently.
    ref = "今天 天气 很 好"
    assert _counts(cer_counts(ref, "今天 天 气 很好 啊")) == (0, 0, 1, 6)   # 啊 inserted, spaces ignored
    assert _counts(cer_counts("我们 去 公园 玩", "我 们 去 公 园")) == (0, 1, 0, 5)  # 玩 deleted
    assert _counts(cer_counts(ref, "今天天汽很")) == (1, 1, 0, 4)   # 气 -> 汽, 好 deleted
    assert cer(["我们 去 公园 玩", ref], ["我 们 去 公 园", "今天天汽很"]) == pytest.approx(3 / 12)
    assert char_tokens(" 今天 天气\t很好\n") == list("今天天气很好")
    assert word_tokens("  the  cat\tsat \n") == ["the", "cat", "sat"]


def test_a4_spaces_are_not_characters():
    # spec A4: 1 substitution + 1 insertion over 11 reference characters
    refs, hyps = ["今天天气很好", "我们去公园"], ["今天天汽很好", "我们去公园了"]
    assert cer(refs, hyps) == pytest.approx(2 / 11)
    assert jiwer.cer(refs, hyps) == pytest.approx(2 / 11)
    spaced_refs, spaced_hyps = [" ".join(t) for t in refs], [" ".join(t) for t in hyps]
    assert jiwer.cer(spaced_refs, spaced_hyps) == pytest.approx(0.15)   # the pitfall: spaces counted
    assert jiwer.wer(spaced_refs, spaced_hyps) == pytest.approx(2 / 11)
    assert cer(spaced_refs, spaced_hyps) == pytest.approx(2 / 11)
    assert _counts(cer_counts(spaced_refs, spaced_hyps)) == (1, 0, 1, 10)


def test_corpus_level_not_mean_of_utterances():
    refs, hyps = ["a", "b c d e"], ["x", "b c d e"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)              # a mean of rates would say (1 + 0) / 2
    assert wer_counts(refs, hyps) == wer_counts(refs[0], hyps[0]) + wer_counts(refs[1], hyps[1])
    assert sum([EditCounts(1, 2, 3, 4), EditCounts(1, 0, 0, 1)]) == EditCounts(2, 2, 3, 5)


def _random_tokens(rng, low, high, alphabet):
    return [alphabet[k] for k in rng.integers(0, len(alphabet), rng.integers(low, high + 1))]


def test_random_word_counts_equal_jiwer():
    rng = np.random.default_rng(0)
    for _ in range(600):
        vocabulary = ["a", "b", "c", "d"][:rng.integers(2, 5)]
        ref = _random_tokens(rng, 1, 12, vocabulary)
        hyp = _random_tokens(rng, 0, 12, vocabulary)   # includes empty hypotheses
        expected = _jiwer_counts(jiwer.process_words(" ".join(ref), " ".join(hyp)))
        assert _counts(edit_counts(ref, hyp)) == expected, (ref, hyp)


def test_random_char_counts_equal_jiwer():
    rng = np.random.default_rng(1)
    alphabet = "今天气好我们"
    for _ in range(400):
        ref = "".join(_random_tokens(rng, 1, 12, alphabet[:rng.integers(2, 7)]))
        hyp = "".join(_random_tokens(rng, 0, 12, alphabet[:rng.integers(2, 7)]))
        # word-segment the reference at random places: the spaces must not count
        spaced = "".join(c + (" " if rng.random() < 0.4 else "") for c in ref)
        expected = _jiwer_counts(jiwer.process_characters(ref, hyp))
        assert _counts(cer_counts(spaced, hyp)) == expected, (spaced, hyp)


def test_long_sequences_equal_jiwer():
    # over 64 tokens RapidFuzz (under jiwer) switches to its multi-word bit-parallel path
    rng = np.random.default_rng(2)
    for _ in range(12):
        ref = _random_tokens(rng, 65, 160, "abcde")
        hyp = _random_tokens(rng, 40, 160, "abcde")
        expected = _jiwer_counts(jiwer.process_words(" ".join(ref), " ".join(hyp)))
        assert _counts(edit_counts(ref, hyp)) == expected


def test_random_corpus_rates_equal_jiwer():
    rng = np.random.default_rng(3)
    words, chars = ["yes", "no", "up", "down"], "今天气好我"
    for _ in range(10):
        size = int(rng.integers(1, 30))
        word_refs = [" ".join(_random_tokens(rng, 1, 10, words)) for _ in range(size)]
        word_hyps = [" ".join(_random_tokens(rng, 0, 10, words)) for _ in range(size)]
        assert wer(word_refs, word_hyps) == pytest.approx(jiwer.wer(word_refs, word_hyps), rel=1e-12)
        char_refs = ["".join(_random_tokens(rng, 0 if k else 1, 10, chars)) for k in range(size)]  # some empty
        char_hyps = ["".join(_random_tokens(rng, 0, 10, chars)) for _ in range(size)]
        spaced_refs = [" ".join(ref) for ref in char_refs]
        assert cer(spaced_refs, char_hyps) == pytest.approx(jiwer.cer(char_refs, char_hyps), rel=1e-12)
        assert _counts(cer_counts(spaced_refs, char_hyps)) == _jiwer_counts(jiwer.process_characters(char_refs,
                                                                                                     char_hyps))


def test_mismatched_lengths_name_both():
    with pytest.raises(ValueError, match=r"3 references but 2 hypotheses"):
        wer(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match=r"1 references but 2 hypotheses"):
        cer("今天", ["今天", "好"])


def test_empty_reference_corpus_raises():
    with pytest.raises(ValueError, match="no tokens"):
        cer(["", "  "], ["今天", ""])
    with pytest.raises(ValueError, match="no tokens"):
        wer([], [])
    assert wer_counts([""], ["a b"]) == EditCounts(insertions=2)   # the counts themselves are fine


def test_real_time_factor():
    assert real_time_factor(1.5, 6.0) == pytest.approx(0.25)
    assert real_time_factor(0.0, 2.0) == 0.0
    for decode, audio in [(1.0, 0.0), (1.0, -2.0), (1.0, math.nan), (-1.0, 2.0)]:
        with pytest.raises(ValueError):
            real_time_factor(decode, audio)
