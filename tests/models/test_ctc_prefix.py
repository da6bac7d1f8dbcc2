"""CTC prefix scoring (``jaxaudio/models/ctc_prefix.py``) and joint CTC / attention beam search
(``ar_asr.beam_search(ctc_weight=...)``) against independent references: brute-force enumeration of every
CTC alignment, ``optax.ctc_loss``, the attention-only beam search as it was before ``ctc_weight`` existed
(verbatim copy), a plain-Python joint beam search whose prefix probabilities come from ``optax.ctc_loss``
on truncated inputs, and a peaked hand-made CTC case whose answer is the argmax collapse."""
import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models import ar_asr as A
from jaxaudio.models import ctc_prefix as C

BLANK, EOS = 0, 4   # scorer unit tests: vocabulary 5 = blank, tokens 1 2 3, and an "end" id 4
VOCAB = 5
BEAM = nnx.jit(A.beam_search, static_argnames=("beam", "ctc_weight", "ctc_tokens"))
GREEDY = nnx.jit(A.greedy_decode, static_argnames="ctc_weight")
SMALL = dataclasses.replace(A.TINY, vocab_size=8, max_tokens=5)   # tokens 3..7 (<unk> 3 is a token)
SCORE = jax.jit(C.score)
SELECT = jax.jit(C.select)


def key(seed):
    return jax.random.key(seed, impl="rbg")


def lengths_mask(lengths, width):
    return jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None]


def collapse(path, blank=0):
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(int(s))
        prev = s
    return tuple(out)


def brute_force(logp, length):
    """{collapsed label sequence: probability} over every alignment of the first ``length`` frames of
    ``logp (T, V)`` (float64)."""
    probs = np.exp(np.asarray(logp, np.float64)[:length])
    table = {}
    for path in itertools.product(range(probs.shape[1]), repeat=length):
        p = float(np.prod(probs[np.arange(length), list(path)]))
        seq = collapse(path)
        table[seq] = table.get(seq, 0.0) + p
    return table


def prefix_prob(table, h):
    return sum(p for seq, p in table.items() if seq[:len(h)] == tuple(h))


def assert_log_close(got, want, atol=2e-5):
    """``got`` (log) against ``want`` (probability): equal logs, or -inf where the probability is 0."""
    if want == 0.0:
        assert got == -np.inf, (got, want)
    else:
        np.testing.assert_allclose(got, math.log(want), atol=atol, rtol=1e-5)


def random_scorer(seed, lengths, frames=6):
    logits = 1.5 * jax.random.normal(key(seed), (len(lengths), frames, VOCAB))
    mask = lengths_mask(lengths, frames)
    return logits, mask, C.prepare(logits, mask, blank=BLANK, eos=EOS)


ALL_IDS = jnp.arange(VOCAB, dtype=jnp.int32)


@pytest.mark.parametrize("prefix", [(1, 2, 3), (2, 2, 1), (3, 1, 3, 1), (1, 1, 1)])
def test_prefix_probabilities_match_brute_force(prefix):
    """Walk ``prefix`` one token at a time; at every step score every id (each token, the end id, blank =
    no extension) for both utterances (6 and 4 valid frames, garbage on the padding) and compare with the
    enumeration of all 5^6 / 5^4 alignments: tokens -> prefix probability of prefix + c (repeats included:
    (2, 2), (1, 1, 1)), end -> full-sequence probability, blank -> the prefix's own."""
    lengths = [6, 4]
    logits, mask, scorer = random_scorer(0, lengths)
    tables = [brute_force(jax.nn.log_softmax(logits[b]), n) for b, n in enumerate(lengths)]
    state = C.init_state(scorer, 1)
    ids = jnp.broadcast_to(ALL_IDS, (2, 1, VOCAB))
    for depth in range(len(prefix) + 1):
        g = prefix[:depth]
        log_psi, r = SCORE(scorer, state, ids)
        for b in range(2):
            for c in range(VOCAB):
                got = float(log_psi[b, 0, c])
                if c == BLANK:
                    want = prefix_prob(tables[b], g) if g else 1.0
                elif c == EOS:
                    want = tables[b].get(g, 0.0)
                else:
                    want = prefix_prob(tables[b], g + (c,))
                assert_log_close(got, want)
        if depth < len(prefix):
            state = SELECT(scorer, state, ids, log_psi, r, jnp.full((2, 1), prefix[depth]))
            np.testing.assert_array_equal(np.asarray(state.last), prefix[depth])
    # some of these are impossible in 4 frames (3 1 3 1 needs 4, 1 1 1 needs 5): -inf, not a small number
    if prefix == (1, 1, 1):
        assert float(log_psi[1, 0, EOS]) == -np.inf


def test_full_probability_is_optax_ctc_and_padding_is_ignored():
    lengths = [6, 5, 3]
    logits, mask, scorer = random_scorer(1, lengths)
    labels = [(1, 2), (3, 3), (2,)]
    state = C.init_state(scorer, 1)
    for step in range(2):
        tok = jnp.array([[lab[min(step, len(lab) - 1)] if step < len(lab) else BLANK] for lab in labels])
        ids = jnp.broadcast_to(ALL_IDS, (3, 1, VOCAB))
        log_psi, r = SCORE(scorer, state, ids)
        state = SELECT(scorer, state, ids, log_psi, r, tok)   # blank: row 2 keeps (2,)
    got = np.asarray(C.full_log_prob(state))[:, 0]
    label_arr = np.zeros((3, 2), np.int32)
    label_pad = np.ones((3, 2), np.float32)
    for b, lab in enumerate(labels):
        label_arr[b, :len(lab)], label_pad[b, :len(lab)] = lab, 0.0
    loss = optax.ctc_loss(logits, 1.0 - mask.astype(jnp.float32), jnp.asarray(label_arr), jnp.asarray(label_pad),
                          blank_id=BLANK)
    np.testing.assert_allclose(got, -np.asarray(loss), rtol=1e-5, atol=1e-5)
    for b, n in enumerate(lengths):
        want = brute_force(jax.nn.log_softmax(logits[b]), n).get(labels[b], 0.0)
        assert_log_close(float(got[b]), want)
    # padding frames do not count: other values there change nothing
    noisy = logits + jnp.where(mask[..., None], 0.0, 5.0 * jax.random.normal(key(9), logits.shape))
    other = C.prepare(noisy, mask, blank=BLANK, eos=EOS)
    o_state = C.init_state(other, 1)
    for step in range(2):
        tok = jnp.array([[lab[min(step, len(lab) - 1)] if step < len(lab) else BLANK] for lab in labels])
        ids = jnp.broadcast_to(ALL_IDS, (3, 1, VOCAB))
        log_psi, r = SCORE(other, o_state, ids)
        o_state = SELECT(other, o_state, ids, log_psi, r, tok)
    np.testing.assert_allclose(np.asarray(C.full_log_prob(o_state)), np.asarray(C.full_log_prob(state)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(o_state.log_psi), np.asarray(state.log_psi), atol=1e-6)


def test_hypotheses_vectorised_and_selected_independently():
    """Three hypotheses per utterance that diverge (select picks different parents and columns, a carry
    included), scored together on a different candidate list each; every entry equals brute force."""
    lengths = [6, 5]
    logits, mask, scorer = random_scorer(2, lengths)
    tables = [brute_force(jax.nn.log_softmax(logits[b]), n) for b, n in enumerate(lengths)]
    state = C.init_state(scorer, 3)
    ids = jnp.broadcast_to(ALL_IDS, (2, 3, VOCAB))
    log_psi, r = SCORE(scorer, state, ids)
    # -> (1,), (2,), (3,) in both utterances
    state = SELECT(scorer, state, ids, log_psi, r, jnp.array([[1, VOCAB + 2, 2 * VOCAB + 3]] * 2))
    log_psi, r = SCORE(scorer, state, ids)
    # utterance 0: (1, 1), (3, 2), (2,) carried; utterance 1: (2, 3), (1,) carried, (2, 2)
    flat = jnp.array([[1, 2 * VOCAB + 2, VOCAB + BLANK], [VOCAB + 3, BLANK, VOCAB + 2]])
    state = SELECT(scorer, state, ids, log_psi, r, flat)
    prefixes = [[(1, 1), (3, 2), (2,)], [(2, 3), (1,), (2, 2)]]
    np.testing.assert_array_equal(np.asarray(state.last), [[1, 2, 2], [3, 1, 2]])
    cands = jnp.array([[[3, 1, EOS], [2, BLANK, 1], [2, 2, 3]], [[EOS, 3, 1], [1, 2, 3], [BLANK, 2, EOS]]])
    log_psi, _ = jax.jit(C.score)(scorer, state, cands)
    for b in range(2):
        for j, g in enumerate(prefixes[b]):
            assert_log_close(float(state.log_psi[b, j]), prefix_prob(tables[b], g))
            for m, c in enumerate(np.asarray(cands[b, j]).tolist()):
                want = (tables[b].get(g, 0.0) if c == EOS else prefix_prob(tables[b], g) if c == BLANK
                        else prefix_prob(tables[b], g + (c,)))
                assert_log_close(float(log_psi[b, j, m]), want)


# ---------------------------------------------------------------------------------------------------------
# beam search


def sharpened(cfg, seed, *, eos_bias=0.0, ctc_scale=1.0):
    """As ``test_ar_asr.sharpened`` (audio-dependent, peaked decoder outputs), the CTC head scaled."""
    model = A.ARASR(cfg, rngs=nnx.Rngs(seed))
    model.decoder.embed.embedding[...] = model.decoder.embed.embedding[...] * 0.3
    out = model.decoder.output_layer
    out.kernel[...] = out.kernel[...] * 2.0
    out.bias[...] = out.bias[...].at[A.EOS].add(eos_bias)
    model.ctc.kernel[...] = model.ctc.kernel[...] * ctc_scale
    return model


def attention_only_beam_search(model, feats, mask=None, *, beam, length_penalty=None):
    """``ar_asr.beam_search`` verbatim as it was before ``ctc_weight`` (the ``ctc_weight == 0`` oracle)."""
    cfg = model.cfg
    penalty = cfg.length_penalty if length_penalty is None else length_penalty
    k, n, vocab = int(beam), cfg.max_tokens, cfg.vocab_size
    enc, enc_mask = model.encode(feats, mask, train=False)
    batch = enc.shape[0]
    enc, enc_mask = jnp.repeat(enc, k, axis=0), jnp.repeat(enc_mask, k, axis=0)
    slots = jnp.arange(n + 1)[None, None, :]
    emittable = A._emittable(vocab)
    only_eos = jnp.arange(vocab) == A.EOS
    neg_inf = jnp.float32(-jnp.inf)

    def body(state):
        i, buf, score, logp_sum, lengths, finished = state
        logp = A._step_log_probs(model, buf.reshape(batch * k, n + 1), i, enc, enc_mask).reshape(batch, k, vocab)
        allowed = jnp.where(i < n, emittable, only_eos)[None, None, :] & ~finished[..., None]
        step = jnp.where(allowed, logp, neg_inf)
        cand_logp = logp_sum[..., None] + step
        cand_score = score[..., None] + step + penalty
        cand_logp = cand_logp.at[..., A.BLANK].set(jnp.where(finished, logp_sum, neg_inf))
        cand_score = cand_score.at[..., A.BLANK].set(jnp.where(finished, score, neg_inf))
        score, flat = jax.lax.top_k(cand_score.reshape(batch, k * vocab), k)
        parent, tok = flat // vocab, flat % vocab
        logp_sum = jnp.take_along_axis(cand_logp.reshape(batch, k * vocab), flat, axis=1)
        buf = jnp.take_along_axis(buf, parent[..., None], axis=1)
        emit = (tok != A.BLANK) & (tok != A.EOS)
        buf = jnp.where((slots == i + 1) & emit[..., None], tok[..., None].astype(jnp.int32), buf)
        lengths = jnp.take_along_axis(lengths, parent, axis=1) + emit
        finished = jnp.take_along_axis(finished, parent, axis=1) | (tok == A.EOS)
        return i + 1, buf, score, logp_sum, lengths, finished

    def cond(state):
        i, _, score, _, _, finished = state
        return (i <= n) & jnp.any(~finished & (score > neg_inf))

    buf = jnp.zeros((batch, k, n + 1), jnp.int32).at[..., 0].set(A.SOS)
    start = jnp.full((batch, k), neg_inf).at[:, 0].set(0.0)
    state = (jnp.int32(0), buf, start, start, jnp.zeros((batch, k), jnp.int32), jnp.zeros((batch, k), bool))
    _, buf, _, logp_sum, lengths, finished = jax.lax.while_loop(cond, body, state)
    normalised = jnp.where(finished, logp_sum / (lengths + 1).astype(jnp.float32), neg_inf)
    best = jnp.argmax(normalised, axis=1)[:, None]
    pick = lambda x: jnp.take_along_axis(x, best, axis=1)[:, 0]  # noqa: E731
    return dict(tokens=jnp.take_along_axis(buf, best[..., None], axis=1)[:, 0, 1:], lengths=pick(lengths),
                scores=pick(logp_sum))


OLD_BEAM = nnx.jit(attention_only_beam_search, static_argnames="beam")


@pytest.mark.parametrize("beam", [1, 3])
def test_zero_ctc_weight_is_the_attention_only_search(beam):
    lengths = [32, 27, 22, 18]
    feats = jax.random.normal(key(6), (4, 32, 20))
    mask = lengths_mask(lengths, 32)
    for seed, penalty in [(5, 0.0), (11, 1.0), (3, -0.5)]:
        model = sharpened(SMALL, seed)
        old = OLD_BEAM(model, feats, mask, beam=beam, length_penalty=penalty)
        new = BEAM(model, feats, mask, beam=beam, length_penalty=penalty, ctc_weight=0.0)
        for name in ("tokens", "lengths", "scores"):
            np.testing.assert_array_equal(np.asarray(new[name]), np.asarray(old[name]), err_msg=name)


ENCODE = nnx.jit(lambda model, feats, mask: model.encode(feats, mask, train=False))
CTC_LOGP = nnx.jit(lambda model, enc: jax.nn.log_softmax(model.ctc(enc), axis=-1))
NEXT = nnx.jit(lambda model, prefix, enc, enc_mask: model.decode_logits(prefix, jnp.ones(prefix.shape, bool), enc,
                                                                        enc_mask, train=False)[0, -1])
TRUNCATED_CTC = jax.jit(lambda logp, pads, labels, label_pads: optax.ctc_loss(logp, pads, labels, label_pads))


def truncated_probs(logp, length, g, width):
    """``F[t] = P(the CTC collapse of frames 0..t-1 is g)`` for ``t = 0 ... length`` from ``optax.ctc_loss``
    on the input cut at ``t`` frames (float64)."""
    frames = logp.shape[0]
    pads = (np.arange(frames)[None, :] >= np.arange(length + 1)[:, None]).astype(np.float32)
    labels = np.zeros((length + 1, width), np.int32)
    label_pads = np.ones((length + 1, width), np.float32)
    labels[:, :len(g)], label_pads[:, :len(g)] = g, 0.0
    loss = TRUNCATED_CTC(jnp.broadcast_to(logp, (length + 1,) + logp.shape), jnp.asarray(pads), jnp.asarray(labels),
                         jnp.asarray(label_pads))
    f = np.exp(-np.asarray(loss, np.float64))
    f[0] = 1.0 if not g else 0.0
    return f


def oracle_log_psi(logp, length, g, c, width):
    """Prefix probability of ``g + c`` split by the frame ``t`` where ``c`` starts: frames before collapse to
    ``g`` (and, when ``c`` repeats ``g``'s last token, frame ``t - 1`` is blank), frame ``t`` is ``c``."""
    y = np.exp(np.asarray(logp, np.float64))
    f = truncated_probs(logp, length, g, width)
    total = 0.0
    for t in range(length):
        if t == 0:
            before = 1.0 if not g else 0.0
        elif g and c == g[-1]:
            before = f[t - 1] * y[t - 1, 0]
        else:
            before = f[t]
        total += before * y[t, c]
    return math.log(total) if total > 0 else -math.inf, (math.log(f[length]) if f[length] > 0 else -math.inf)


def reference_joint_beam_search(model, enc, enc_mask, logp, beam, weight, penalty, n_tok):
    """Plain Python over one utterance: the documented joint rule (pre-beam of the decoder's ``n_tok`` best
    tokens plus ``</s>``, joint score ``(1 - w) sum log p_att + w log p_ctc + penalty * emitted``, prune to
    ``beam``, finished hypotheses kept, final choice by the joint score / (tokens + 1))."""
    cfg = model.cfg
    length, width = int(enc_mask.sum()), cfg.max_tokens + 1
    hyps = [(0.0, 0.0, (), False, 0.0)]   # search score, sum log p_att, tokens, finished, log p_ctc
    for step in range(cfg.max_tokens + 1):
        if all(h[3] for h in hyps):
            break
        candidates = []
        for score, att, tokens, finished, ctc in hyps:
            if finished:
                candidates.append((score, att, tokens, True, ctc))
                continue
            logits = np.asarray(NEXT(model, jnp.asarray([[A.SOS, *tokens]]), enc, enc_mask), np.float64)
            la = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
            ids = [A.EOS]
            if step < cfg.max_tokens:
                ids += sorted(range(3, cfg.vocab_size), key=lambda v: (-la[v], v))[:n_tok]
            for v in ids:
                psi, full = oracle_log_psi(logp, length, tokens, v, width)
                ctc_v = full if v == A.EOS else psi
                emitted = len(tokens) + 1
                joint = (1 - weight) * (att + la[v]) + weight * ctc_v
                candidates.append((joint + penalty * emitted, att + la[v],
                                   tokens if v == A.EOS else tokens + (v,), v == A.EOS, ctc_v))
        hyps = sorted(candidates, key=lambda h: -h[0])[:beam]
    joint = lambda h: (1 - weight) * h[1] + weight * h[4]  # noqa: E731
    best = max((h for h in hyps if h[3]), key=lambda h: joint(h) / (len(h[2]) + 1))
    return best[2], joint(best)


@pytest.mark.parametrize("weight, penalty, beam", [(0.5, 0.0, 3), (0.3, 3.0, 3), (0.5, 0.0, 2), (1.0, 0.0, 3)])
def test_joint_search_matches_python_reference(weight, penalty, beam):
    """Tokens and joint scores equal the plain-Python search's on random models (decoder and CTC head
    depending on the audio) for 4 utterances of 7, 6, 4 and 3 encoder frames; the cases exercise what
    they should: the CTC term changes choices, the length penalty does, the pre-beam does (beam 2: 3 of
    the 5 tokens), and ctc_weight 1 (every token a candidate, the decoder's weight 0)."""
    model = sharpened(SMALL, 7, ctc_scale=3.0)
    lengths = [32, 27, 22, 18]
    feats = jax.random.normal(key(6), (4, 32, 20))
    mask = lengths_mask(lengths, 32)
    out = BEAM(model, feats, mask, beam=beam, length_penalty=penalty, ctc_weight=weight)
    enc, enc_mask = ENCODE(model, feats, mask)
    logp = np.asarray(CTC_LOGP(model, enc))
    n_tok = 5 if weight == 1.0 else int(1.5 * beam)
    mattered = False
    for b in range(len(lengths)):
        args = (model, enc[b:b + 1], enc_mask[b:b + 1], logp[b], beam, weight)
        tokens, score = reference_joint_beam_search(*args, penalty, n_tok)
        n = int(out["lengths"][b])
        assert np.asarray(out["tokens"][b, :n]).tolist() == list(tokens), (b, out["tokens"][b], tokens)
        assert (np.asarray(out["tokens"][b, n:]) == 0).all()
        np.testing.assert_allclose(float(out["scores"][b]), score, atol=1e-4)
        if penalty:
            mattered |= reference_joint_beam_search(*args, 0.0, n_tok)[0] != tokens
        elif beam == 2:
            mattered |= reference_joint_beam_search(*args, penalty, 5)[0] != tokens
        else:   # the CTC term: the attention-only choice differs
            mattered |= reference_joint_beam_search(*args[:-1], 0.0, penalty, 5)[0] != tokens
    assert mattered


class FixedCTC(nnx.Module):
    """A CTC head that ignores the encoder: the given ``(B, T', V)`` logits."""

    def __init__(self, logits):
        self.logits = nnx.Variable(jnp.asarray(logits, jnp.float32))

    def __call__(self, enc):
        return self.logits[...]


def test_ctc_only_on_peaked_posteriors_is_the_argmax_collapse():
    """ctc_weight 1 with a decoder made uniform (zero output layer) and hand-made peaked CTC posteriors:
    the search returns the collapse of the frame argmax (repeats through a blank included, padding frames
    peaked on another token ignored), its score the full-sequence CTC log-probability (optax)."""
    cfg = SMALL
    model = A.ARASR(cfg, rngs=nnx.Rngs(0))
    out = model.decoder.output_layer
    out.kernel[...], out.bias[...] = jnp.zeros_like(out.kernel[...]), jnp.zeros_like(out.bias[...])
    frames = [[4, 4, 0, 4, 5, 5, 0, 6, 0, 0, 7], [7, 0, 3, 3, 0, 5, 5, 5, 5, 5, 5]]   # 48 feature frames -> 11
    valid = [11, 5]   # 24 feature frames -> 5 encoder frames; the rest of row 1 is padding (peaked on 5)
    logits = 8.0 * jax.nn.one_hot(jnp.asarray(frames), cfg.vocab_size)
    model.ctc = FixedCTC(logits)
    feats = jax.random.normal(key(3), (2, 48, 20))
    mask = lengths_mask([48, 24], 48)
    expected = [(4, 4, 5, 6, 7), (7, 3)]
    labels = np.zeros((2, 5), np.int32)
    label_pads = np.ones((2, 5), np.float32)
    for b, e in enumerate(expected):
        labels[b, :len(e)], label_pads[b, :len(e)] = e, 0.0
    full = -np.asarray(optax.ctc_loss(logits, 1.0 - lengths_mask(valid, 11).astype(jnp.float32),
                                      jnp.asarray(labels), jnp.asarray(label_pads)))
    # ctc_weight 1 scores every token (ESPnet: no pre-beam); at 0.5 the uniform decoder's pre-beam would keep
    # the lowest ids only (lax.top_k ties), so all five are asked for
    for weight, ctc_tokens in ((1.0, None), (0.5, 5)):
        got = BEAM(model, feats, mask, beam=3, ctc_weight=weight, ctc_tokens=ctc_tokens)
        for b, e in enumerate(expected):
            n = int(got["lengths"][b])
            assert np.asarray(got["tokens"][b, :n]).tolist() == list(e), (weight, b, got["tokens"][b])
        if weight == 1.0:
            np.testing.assert_allclose(np.asarray(got["scores"]), full, rtol=1e-4, atol=1e-4)
    # the attention-only search on this uniform decoder finds none of it
    plain = BEAM(model, feats, mask, beam=3)
    assert np.asarray(plain["tokens"][0, :5]).tolist() != list(expected[0])


def test_joint_decoding_rows_are_independent_and_greedy_routes_through_beam_one():
    model = sharpened(A.TINY, 3, eos_bias=-0.5, ctc_scale=3.0)
    long = jax.random.normal(key(8), (1, 48, 20))
    short = jax.random.normal(key(9), (1, 32, 20))
    batch = jnp.concatenate([long, jnp.pad(short, ((0, 0), (0, 16), (0, 0)), constant_values=3.0)])
    mask = lengths_mask([48, 32], 48)
    alone = BEAM(model, short, jnp.ones((1, 32), bool), beam=3, ctc_weight=0.4)
    both = BEAM(model, batch, mask, beam=3, ctc_weight=0.4)
    assert int(alone["lengths"][0]) >= 1
    np.testing.assert_array_equal(np.asarray(both["tokens"][1]), np.asarray(alone["tokens"][0]))
    np.testing.assert_array_equal(np.asarray(both["lengths"][1]), np.asarray(alone["lengths"][0]))
    np.testing.assert_allclose(float(both["scores"][1]), float(alone["scores"][0]), atol=1e-4)
    greedy = GREEDY(model, batch, mask, ctc_weight=0.4)
    one = BEAM(model, batch, mask, beam=1, ctc_weight=0.4)
    assert set(greedy) == {"tokens", "lengths"}
    np.testing.assert_array_equal(np.asarray(greedy["tokens"]), np.asarray(one["tokens"]))
    np.testing.assert_array_equal(np.asarray(greedy["lengths"]), np.asarray(one["lengths"]))


def test_bad_weights_name_the_argument():
    model = A.ARASR(A.TINY, rngs=nnx.Rngs(0))
    feats = jnp.zeros((1, 16, 20))
    with pytest.raises(ConfigError, match="ctc_weight"):
        A.beam_search(model, feats, beam=2, ctc_weight=1.5)
    with pytest.raises(ConfigError, match="ctc_tokens"):
        A.beam_search(model, feats, beam=2, ctc_weight=0.5, ctc_tokens=0)
