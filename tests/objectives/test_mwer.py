"""MWER for Paraformer: the batched edit distance against jiwer and a plain DP, the hypothesis
sampler against numpy log-softmax sums and softmax frequencies, and the loss against a numpy
transcription of the formula, with its gradient's direction checked by hand cases."""
import math

import jax
import jax.numpy as jnp
import jiwer
import numpy as np
import pytest

from jaxaudio.errors import ConfigError
from jaxaudio.objectives.mwer import edit_distance, mwer_from_hypotheses, mwer_loss, sample_hypotheses

edit = jax.jit(edit_distance)
sample = jax.jit(sample_hypotheses, static_argnames="n")
loss_fn = jax.jit(mwer_loss, static_argnames="n")


def levenshtein(a, b):
    """Textbook Wagner-Fischer table, in Python."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[len(a)][len(b)]


def jiwer_distance(hyp, ref):
    """S + D + I from jiwer's character alignment, one CJK character per token id (no whitespace)."""
    out = jiwer.process_characters("".join(chr(0x4E00 + t) for t in ref), "".join(chr(0x4E00 + t) for t in hyp))
    return out.substitutions + out.deletions + out.insertions


def log_softmax_np(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def mwer_np(log_prob, wer, valid):
    """The paper's formula, utterance by utterance, in float64."""
    log_prob, wer = np.asarray(log_prob, np.float64), np.asarray(wer, np.float64)
    terms = []
    for b in range(log_prob.shape[1]):
        if not valid[b]:
            continue
        p = np.exp(log_prob[:, b] - log_prob[:, b].max())
        p /= p.sum()
        terms.append(float(np.sum(p * (wer[:, b] - wer[:, b].mean()))))
    return sum(terms) / max(len(terms), 1)


# ---------------------------------------------------------------- edit_distance

def test_edit_distance_matches_jiwer_and_plain_dp_on_random_pairs():
    rng = np.random.default_rng(0)
    batch, l1, l2 = 300, 9, 7
    hyp = rng.integers(0, 4, (batch, l1))  # small vocabulary: many matches, so all edit kinds occur
    ref = rng.integers(0, 4, (batch, l2))
    hyp_len = rng.integers(0, l1 + 1, batch)
    ref_len = rng.integers(0, l2 + 1, batch)
    # the special cases, explicitly
    hyp_len[0], ref_len[0] = 0, 5  # empty hypothesis
    hyp_len[1], ref_len[1] = 6, 0  # empty reference
    hyp_len[2], ref_len[2] = 0, 0  # both empty
    hyp[3, :5], hyp_len[3], ref[3, :5], ref_len[3] = ref[3, :5], 5, ref[3, :5], 5  # equal sequences
    hyp[4], hyp_len[4], ref[4], ref_len[4] = ref[4, 0], l1, ref[4], l2  # full lengths
    got = np.asarray(edit(jnp.asarray(hyp, jnp.int32), jnp.asarray(hyp_len, jnp.int32),
                          jnp.asarray(ref, jnp.int32), jnp.asarray(ref_len, jnp.int32)))
    assert got.dtype == np.int32 and got.shape == (batch,)
    want = [levenshtein(list(hyp[b, :hyp_len[b]]), list(ref[b, :ref_len[b]])) for b in range(batch)]
    want_jiwer = [jiwer_distance(hyp[b, :hyp_len[b]], ref[b, :ref_len[b]]) for b in range(batch)]
    assert want == want_jiwer  # the two references agree with each other
    np.testing.assert_array_equal(got, want)
    assert got[0] == 5 and got[1] == 6 and got[2] == 0 and got[3] == 0
    assert len(set(want)) > 5  # the random pairs span a range of distances


def test_edit_distance_ignores_padding_beyond_lengths():
    rng = np.random.default_rng(1)
    batch, l1, l2 = 64, 8, 10
    hyp = rng.integers(0, 5, (batch, l1))
    ref = rng.integers(0, 5, (batch, l2))
    hyp_len = rng.integers(0, l1 + 1, batch)
    ref_len = rng.integers(0, l2 + 1, batch)
    garbage_hyp, garbage_ref = hyp.copy(), ref.copy()
    for b in range(batch):
        garbage_hyp[b, hyp_len[b]:] = rng.integers(-3, 100, l1 - hyp_len[b])
        garbage_ref[b, ref_len[b]:] = rng.integers(-3, 100, l2 - ref_len[b])
    args = (jnp.asarray(hyp_len, jnp.int32), jnp.asarray(ref_len, jnp.int32))
    clean = edit(jnp.asarray(hyp, jnp.int32), args[0], jnp.asarray(ref, jnp.int32), args[1])
    dirty = edit(jnp.asarray(garbage_hyp, jnp.int32), args[0], jnp.asarray(garbage_ref, jnp.int32), args[1])
    np.testing.assert_array_equal(clean, dirty)
    want = [levenshtein(list(hyp[b, :hyp_len[b]]), list(ref[b, :ref_len[b]])) for b in range(batch)]
    np.testing.assert_array_equal(dirty, want)


def test_edit_distance_hand_cases():
    # kitten -> sitting = 3; "ab" vs "ba" = 2; one insertion; one deletion
    cases = [("kitten", "sitting", 3), ("ab", "ba", 2), ("abc", "abxc", 1), ("abxc", "abc", 1)]
    l1 = l2 = 8
    hyp = np.zeros((len(cases), l1), np.int32)
    ref = np.full((len(cases), l2), 7, np.int32)
    for k, (h, r, _) in enumerate(cases):
        hyp[k, :len(h)] = [ord(c) for c in h]
        ref[k, :len(r)] = [ord(c) for c in r]
    got = edit(jnp.asarray(hyp), jnp.asarray([len(h) for h, _, _ in cases], jnp.int32),
               jnp.asarray(ref), jnp.asarray([len(r) for _, r, _ in cases], jnp.int32))
    np.testing.assert_array_equal(got, [d for _, _, d in cases])


# ---------------------------------------------------------------- sample_hypotheses

def test_sample_hypotheses_argmax_and_log_prob():
    rng = np.random.default_rng(2)
    batch, length, vocab, n = 5, 6, 7, 5
    logits = rng.normal(size=(batch, length, vocab)).astype(np.float32) * 2
    token_len = np.array([6, 3, 0, 1, 5], np.int32)
    ids, log_prob = sample(jax.random.key(0), jnp.asarray(logits), jnp.asarray(token_len), n=n)
    ids, log_prob = np.asarray(ids), np.asarray(log_prob)
    assert ids.shape == (n, batch, length) and ids.dtype == np.int32
    assert log_prob.shape == (n, batch) and log_prob.dtype == np.float32
    valid = np.arange(length)[None, :] < token_len[:, None]
    np.testing.assert_array_equal(ids[0][valid], logits.argmax(-1)[valid])
    assert (ids[:, ~valid] == 0).all()
    lsm = log_softmax_np(logits)
    want = np.array([[sum(lsm[b, t, ids[i, b, t]] for t in range(token_len[b])) for b in range(batch)]
                     for i in range(n)])
    np.testing.assert_allclose(log_prob, want, rtol=1e-5, atol=1e-5)
    assert (log_prob[:, 2] == 0).all()  # no valid position: log P = 0
    assert (ids[1:][:, valid] != ids[0][None][:, valid]).any()  # at temperature 2 some samples differ


def test_sample_hypotheses_padding_logits_do_not_matter():
    rng = np.random.default_rng(3)
    batch, length, vocab = 3, 5, 4
    logits = rng.normal(size=(batch, length, vocab)).astype(np.float32)
    token_len = np.array([2, 5, 3], np.int32)
    changed = logits.copy()
    for b in range(batch):
        changed[b, token_len[b]:] = rng.normal(size=(length - token_len[b], vocab)) * 50
    key = jax.random.key(4)
    ids_a, lp_a = sample(key, jnp.asarray(logits), jnp.asarray(token_len), n=6)
    ids_b, lp_b = sample(key, jnp.asarray(changed), jnp.asarray(token_len), n=6)
    np.testing.assert_array_equal(lp_a, lp_b)
    np.testing.assert_array_equal(ids_a, ids_b)


def test_peaked_logits_sample_the_argmax():
    rng = np.random.default_rng(5)
    batch, length, vocab = 4, 6, 9
    best = rng.integers(0, vocab, (batch, length))
    logits = np.zeros((batch, length, vocab), np.float32)
    np.put_along_axis(logits, best[..., None], 1000.0, axis=-1)
    ids, log_prob = sample(jax.random.key(1), jnp.asarray(logits), jnp.full((batch,), length, jnp.int32), n=8)
    np.testing.assert_array_equal(np.asarray(ids), np.broadcast_to(best, (8, batch, length)))
    np.testing.assert_allclose(log_prob, 0.0, atol=1e-6)


def test_sample_frequencies_match_softmax():
    logits = np.array([1.0, 0.0, -0.5], np.float32)
    p = np.exp(log_softmax_np(logits))
    batch, n = 2000, 11  # 2000 * 10 = 20000 draws of one position (index 0 is the argmax, excluded)
    tiled = jnp.broadcast_to(jnp.asarray(logits), (batch, 1, 3))
    ids, _ = sample(jax.random.key(7), tiled, jnp.ones((batch,), jnp.int32), n=n)
    draws = np.asarray(ids)[1:, :, 0].ravel()
    count = draws.size
    freq = np.bincount(draws, minlength=3) / count
    sigma = np.sqrt(p * (1 - p) / count)  # binomial standard error of each frequency
    assert np.all(np.abs(freq - p) < 4 * sigma), (freq, p, sigma)


# ---------------------------------------------------------------- the loss

def test_mwer_from_hypotheses_matches_numpy_and_its_gradient():
    rng = np.random.default_rng(8)
    n, batch = 4, 6
    log_prob = rng.normal(size=(n, batch)).astype(np.float32) * 3
    wer = rng.integers(0, 5, (n, batch)).astype(np.float32) / 4
    valid = np.array([1, 1, 0, 1, 0, 1], bool)
    got = mwer_from_hypotheses(jnp.asarray(log_prob), jnp.asarray(wer), jnp.asarray(valid))
    assert got.shape == ()
    np.testing.assert_allclose(float(got), mwer_np(log_prob, wer, valid), rtol=1e-5, atol=1e-6)
    # d/d logP_i of sum_i P^_i (W_i - mean W) = P^_i (W_i - sum_j P^_j W_j) / (number of valid utterances)
    grad = np.asarray(jax.grad(mwer_from_hypotheses)(jnp.asarray(log_prob), jnp.asarray(wer), jnp.asarray(valid)))
    p = np.exp(log_softmax_np(log_prob.T.astype(np.float64))).T
    want = p * (wer - (p * wer).sum(0, keepdims=True)) / valid.sum() * valid[None, :]
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    # the W are constants: no gradient reaches them
    np.testing.assert_array_equal(jax.grad(mwer_from_hypotheses, argnums=1)(
        jnp.asarray(log_prob), jnp.asarray(wer), jnp.asarray(valid)), 0.0)
    assert float(mwer_from_hypotheses(jnp.asarray(log_prob), jnp.asarray(wer), jnp.zeros(batch, bool))) == 0.0


def test_mwer_loss_end_to_end_against_numpy():
    rng = np.random.default_rng(9)
    batch, length, vocab, l2, n = 4, 7, 5, 6, 4
    logits = rng.normal(size=(batch, length, vocab)).astype(np.float32) * 1.5
    token_len = np.array([7, 4, 2, 5], np.int32)
    targets = rng.integers(0, vocab, (batch, l2)).astype(np.int32)
    target_len = np.array([6, 3, 4, 0], np.int32)  # the last utterance has no reference: excluded
    key = jax.random.key(11)
    loss, aux = loss_fn(key, jnp.asarray(logits), jnp.asarray(token_len), jnp.asarray(targets),
                        jnp.asarray(target_len), n=n)
    ids, _ = sample(key, jnp.asarray(logits), jnp.asarray(token_len), n=n)  # the same key: the same hypotheses
    ids = np.asarray(ids)
    lsm = log_softmax_np(logits)
    log_prob = np.array([[sum(lsm[b, t, ids[i, b, t]] for t in range(token_len[b])) for b in range(batch)]
                         for i in range(n)])
    wer = np.array([[levenshtein(list(ids[i, b, :token_len[b]]), list(targets[b, :target_len[b]]))
                     / max(target_len[b], 1) for b in range(batch)] for i in range(n)])
    valid = target_len > 0
    np.testing.assert_allclose(float(loss), mwer_np(log_prob, wer, valid), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(aux["mwer_mean_wer"]), wer[:, valid].mean(), rtol=1e-6)
    np.testing.assert_allclose(float(aux["mwer_1best_wer"]), wer[0, valid].mean(), rtol=1e-6)
    assert len(np.unique(wer[:, valid])) > 1  # a case where the hypotheses' errors differ
    assert abs(float(loss)) > 1e-4


def test_mwer_loss_is_zero_when_all_hypotheses_equally_wrong():
    # One position, reference of one token that is never predicted: every hypothesis has W = 1.
    logits = jnp.asarray([[[0.3, -0.2, 0.1, -20.0]]])
    loss, aux = loss_fn(jax.random.key(0), logits, jnp.asarray([1]), jnp.asarray([[3]]), jnp.asarray([1]), n=6)
    assert float(loss) == 0.0 and float(aux["mwer_mean_wer"]) == 1.0
    # ... and its gradient is 0 too
    grad = jax.grad(lambda x: mwer_loss(jax.random.key(0), x, jnp.asarray([1]), jnp.asarray([[3]]),
                                        jnp.asarray([1]), n=6)[0])(logits)
    np.testing.assert_allclose(grad, 0.0, atol=1e-7)


def test_gradient_step_lowers_the_worse_hypothesis():
    # One position, three tokens; the reference is token 1 but the argmax is token 0 (W = 1).
    # Find a key whose one sample is token 1 (W = 0): the loss must push mass from 0 to 1.
    logits = jnp.asarray([[[0.5, 0.2, -1.0]]])
    token_len, targets, target_len = jnp.asarray([1]), jnp.asarray([[1]]), jnp.asarray([1])
    key = next(k for k in (jax.random.key(s) for s in range(100))
               if int(sample(k, logits, token_len, n=2)[0][1, 0, 0]) == 1)
    ids, _ = sample(key, logits, token_len, n=2)
    assert np.asarray(ids)[:, 0, 0].tolist() == [0, 1]

    def expected_wer(x):  # the renormalised expectation of W over these two fixed hypotheses
        lp = log_softmax_np(np.asarray(x))[0, 0, [0, 1]]
        p = np.exp(lp - lp.max())
        p /= p.sum()
        return p[0] * 1.0 + p[1] * 0.0

    loss, grad = jax.value_and_grad(lambda x: mwer_loss(key, x, token_len, targets, target_len, n=2)[0])(logits)
    # P^ = (p0, p1) over the pair; L = p0 * (1 - 0.5) + p1 * (0 - 0.5) = p0 - 0.5
    p0 = 1 / (1 + math.exp(0.2 - 0.5))
    np.testing.assert_allclose(float(loss), p0 - 0.5, rtol=1e-5)
    g = np.asarray(grad)[0, 0]
    assert g[0] > 0 > g[1]  # descending raises the better token's logit, lowers the worse one's
    np.testing.assert_allclose(g[2], 0.0, atol=1e-7)  # a token in neither hypothesis: renormalised away
    # d L / d x0 = p0 p1, d L / d x1 = -p0 p1 (the pair's softmax)
    np.testing.assert_allclose(g[:2], [p0 * (1 - p0), -p0 * (1 - p0)], rtol=1e-5)
    stepped = logits - 0.5 * grad
    assert expected_wer(stepped) < expected_wer(logits)


def test_mwer_loss_jits_and_rejects_one_hypothesis():
    logits = jnp.zeros((2, 3, 4))
    args = (jnp.asarray([3, 2]), jnp.zeros((2, 3), jnp.int32), jnp.asarray([3, 1]))

    @jax.jit
    def step(key, x):
        (loss, aux), grad = jax.value_and_grad(lambda y: mwer_loss(key, y, *args, n=3), has_aux=True)(x)
        return loss, aux, grad

    loss, aux, grad = step(jax.random.key(0), logits)
    assert np.isfinite(float(loss)) and grad.shape == logits.shape and np.isfinite(np.asarray(grad)).all()
    assert set(aux) >= {"mwer_mean_wer", "mwer_1best_wer"}
    with pytest.raises(ConfigError):
        mwer_loss(jax.random.key(0), logits, *args, n=1)
