"""CTC prefix scoring for joint CTC / attention beam search (Watanabe et al. 2017, "Hybrid CTC/attention
architecture for end-to-end speech recognition", Algorithm 2), batched like ESPnet's ``CTCPrefixScoreTH``
(``espnet/nets/ctc_prefix_score.py``) and used by ``ar_asr.beam_search``. Fixed shapes, ``jit``-able.

For CTC frame log-posteriors ``x_t(k)`` (``log_softmax`` of the CTC head, blank 0) over the ``L`` valid
encoder frames of an utterance, and a prefix ``g`` (``<s>`` not counted), the forward variables are

    r^n_t(g) = log P(x_0..x_t collapse to g, the path's frame t is g's last token)   ("ends in non-blank")
    r^b_t(g) = log P(x_0..x_t collapse to g, frame t is blank)                       ("ends in blank")

with ``r^n_t(()) = -inf`` and ``r^b_t(()) = sum_{tau <= t} x_tau(blank)`` for the empty prefix. Extending
``g`` by a token ``c`` (``h = g + c``), with ``phi_t = logaddexp(r^n_t(g), r^b_t(g))``, or ``r^b_t(g)``
alone when ``c`` equals ``g``'s last token (a repeat needs a blank between the two), and
``phi_{-1} = 0`` when ``g`` is empty (the first token may start at frame 0), ``-inf`` otherwise:

    r^n_t(h) = logaddexp(r^n_{t-1}(h), phi_{t-1}) + x_t(c)        (r^n_{-1}(h) = -inf)
    r^b_t(h) = logaddexp(r^n_{t-1}(h), r^b_{t-1}(h)) + x_t(blank) (r^b_{-1}(h) = -inf)
    log psi(h) = logsumexp_{0 <= t < L} (phi_{t-1} + x_t(c))

``psi(h)`` is the prefix probability: the probability that the CTC output sequence starts with ``h``
(sum over the alignments whose collapse starts with ``h``). For ``</s>`` the score is the full-sequence
probability ``log P(g) = logaddexp(r^n_{L-1}(g), r^b_{L-1}(g))``. Frames ``t >= L`` (padding) do not count:
the recursion freezes there (``r_t = r_{t-1}``, no ``psi`` term), so the last frame holds ``r_{L-1}``.

Layout: hypotheses are ``(B, K)`` (utterance, beam slot); the frame posteriors stay ``(T, B, V)``
(time-major, shared by the ``K`` hypotheses of an utterance, not repeated); a hypothesis's state holds
its ``r`` over all frames ``(T, B, K, 2)``, its ``log psi`` and its last token. ``score`` evaluates
``M`` candidate ids per hypothesis in one ``lax.scan`` over frames, vectorised over ``(B, K, M)``;
``select`` gathers the surviving candidates' forward variables as the new state. Candidate ids have
three meanings: a token (extend), ``eos`` (end: full-sequence probability) and ``blank`` (no extension:
the hypothesis carried over as it is, its state and score unchanged; how ``ar_asr.beam_search`` keeps
finished hypotheses in the beam).

Everything is float32 with ``-inf`` for log 0 (ESPnet uses a finite ``logzero = -1e10``); ``jnp.logaddexp``
keeps ``-inf`` exact, so impossible prefixes (more tokens than frames allow) score ``-inf``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


class CTCPrefixScorer(NamedTuple):
    """The utterances' CTC evidence, fixed during the search: ``log_probs (T, B, V)`` float32 time-major
    frame log-posteriors, ``frame_mask (T, B)`` bool (True on the valid frames ``t < L_b``)."""

    log_probs: jax.Array
    frame_mask: jax.Array
    blank: int
    eos: int


class CTCPrefixState(NamedTuple):
    """Per hypothesis ``(B, K)``: ``r (T, B, K, 2)`` float32 (``[..., 0]`` = ``r^n_t``, ``[..., 1]`` = ``r^b_t``
    of its prefix, frozen on padding frames), ``log_psi (B, K)`` (its prefix log-probability; the
    full-sequence one once it took ``</s>``; 0 for the empty prefix) and ``last (B, K)`` int32 (its last
    token, -1 for the empty prefix)."""

    r: jax.Array
    log_psi: jax.Array
    last: jax.Array


def prepare(ctc_logits: jax.Array, mask: jax.Array | None = None, *, blank: int = 0, eos: int = 2) -> CTCPrefixScorer:
    """``ctc_logits (B, T, V)`` (the CTC head's logits; ``log_softmax`` over ``V`` here), ``mask (B, T)``
    (True on valid frames; None: all valid)."""
    log_probs = jax.nn.log_softmax(ctc_logits.astype(jnp.float32), axis=-1)
    if mask is None:
        mask = jnp.ones(ctc_logits.shape[:2], bool)
    return CTCPrefixScorer(jnp.swapaxes(log_probs, 0, 1), jnp.swapaxes(mask.astype(bool), 0, 1), int(blank), int(eos))


def init_state(scorer: CTCPrefixScorer, hyps: int) -> CTCPrefixState:
    """Every one of the ``hyps`` hypotheses per utterance holds the empty prefix."""
    x_blank = jnp.where(scorer.frame_mask, scorer.log_probs[..., scorer.blank], 0.0)   # padding frames add nothing
    r_b = jnp.cumsum(x_blank, axis=0)                                                   # (T, B)
    r = jnp.stack([jnp.full_like(r_b, NEG_INF), r_b], axis=-1)                          # (T, B, 2)
    batch = r_b.shape[1]
    r = jnp.broadcast_to(r[:, :, None, :], (r.shape[0], batch, hyps, 2))
    return CTCPrefixState(r, jnp.zeros((batch, hyps), jnp.float32), jnp.full((batch, hyps), -1, jnp.int32))


def full_log_prob(state: CTCPrefixState) -> jax.Array:
    """``(B, K)``: ``log P(prefix)``, the probability that the CTC output is exactly the prefix."""
    return jnp.logaddexp(state.r[-1, ..., 0], state.r[-1, ..., 1])


def score(scorer: CTCPrefixScorer, state: CTCPrefixState, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Candidate ids ``(B, K, M)`` int -> ``(log_psi (B, K, M), r (T, B, K, M, 2))``: the prefix log-probability
    of ``prefix + id`` and its forward variables. ``eos``: the full-sequence probability of the prefix
    (``r`` = the prefix's own); ``blank``: no extension (``log_psi`` and ``r`` = the prefix's own)."""
    ids = ids.astype(jnp.int32)
    frames, batch, vocab = scorer.log_probs.shape
    hyps, cands = ids.shape[1], ids.shape[2]
    # x_t(c) for every candidate, gathered from the shared (T, B, V) posteriors: (T, B, K, M)
    x_c = jnp.take_along_axis(scorer.log_probs, ids.reshape(1, batch, hyps * cands), axis=2)
    x_c = x_c.reshape(frames, batch, hyps, cands)
    x_b = scorer.log_probs[..., scorer.blank][:, :, None, None]                           # (T, B, 1, 1)
    r_n_prev, r_b_prev = state.r[..., 0], state.r[..., 1]                                 # (T, B, K)
    phi_any = jnp.logaddexp(r_n_prev, r_b_prev)
    repeat = ids == state.last[..., None]                                                 # (B, K, M)
    empty = state.last < 0                                                                # (B, K)
    # phi_{t-1} at frame t: shifted by one frame, phi_{-1} = 0 for the empty prefix, -inf otherwise
    phi_first = jnp.where(empty, 0.0, NEG_INF)[None]
    phi_any = jnp.concatenate([phi_first, phi_any[:-1]], axis=0)
    phi_rep = jnp.concatenate([phi_first, r_b_prev[:-1]], axis=0)
    valid = scorer.frame_mask[:, :, None, None]                                           # (T, B, 1, 1)

    def step(carry, inputs):
        r_n, r_b, log_psi = carry                                                          # (B, K, M) each
        xc, xb, p_any, p_rep, ok = inputs
        phi = jnp.where(repeat, p_rep[..., None], p_any[..., None])
        new_n = jnp.logaddexp(r_n, phi) + xc
        new_b = jnp.logaddexp(r_n, r_b) + xb
        log_psi = jnp.where(ok, jnp.logaddexp(log_psi, phi + xc), log_psi)
        r_n, r_b = jnp.where(ok, new_n, r_n), jnp.where(ok, new_b, r_b)
        return (r_n, r_b, log_psi), jnp.stack([r_n, r_b], axis=-1)

    start = jnp.full(ids.shape, NEG_INF, jnp.float32)
    (_, _, log_psi), r = jax.lax.scan(step, (start, start, start), (x_c, x_b, phi_any, phi_rep, valid))
    own_r = state.r[:, :, :, None, :]
    is_eos, is_blank = ids == scorer.eos, ids == scorer.blank
    log_psi = jnp.where(is_eos, full_log_prob(state)[..., None], log_psi)
    log_psi = jnp.where(is_blank, state.log_psi[..., None], log_psi)
    r = jnp.where((is_eos | is_blank)[None, ..., None], own_r, r)
    return log_psi, r


def select(scorer: CTCPrefixScorer, state: CTCPrefixState, ids: jax.Array, log_psi: jax.Array, r: jax.Array,
           flat: jax.Array) -> CTCPrefixState:
    """The new state of the survivors: ``flat (B, K')`` indexes the ``K * M`` candidates of each utterance
    (``parent * M + column``, as ``lax.top_k`` over the flattened ``(B, K * M)`` candidate scores returns
    it); ``ids``, ``log_psi (B, K, M)`` and ``r (T, B, K, M, 2)`` are ``score``'s input and outputs. The last
    token becomes the candidate's for a token, the parent's for ``eos`` and ``blank``."""
    frames, batch, hyps, cands, _ = r.shape
    pick = lambda a: jnp.take_along_axis(a.reshape(batch, hyps * cands), flat, axis=1)  # noqa: E731
    tok = pick(ids.astype(jnp.int32))
    parent_last = jnp.take_along_axis(state.last, flat // cands, axis=1)
    last = jnp.where((tok == scorer.blank) | (tok == scorer.eos), parent_last, tok)
    new_r = jnp.take_along_axis(r.reshape(frames, batch, hyps * cands, 2), flat[None, :, :, None], axis=2)
    return CTCPrefixState(new_r, pick(log_psi), last)


def pre_beam(step_log_probs: jax.Array, tokens: int, *, blank: int = 0, eos: int = 2) -> jax.Array:
    """Candidate ids ``(B, K, tokens + 2)`` for ``score`` from the decoder's masked step log-probabilities
    ``(B, K, V)`` (disallowed ids ``-inf``): column 0 ``blank`` (the carry-over slot), column 1 ``eos``, then
    the ``tokens`` best other ids by the decoder's score (ESPnet's pre-beam, ``lax.top_k`` order; ids the
    decoder disallows can fill it when fewer are allowed, they keep their ``-inf``)."""
    vocab = step_log_probs.shape[-1]
    ids = jnp.arange(vocab)
    others = jnp.where((ids == eos) | (ids == blank), -jnp.inf, step_log_probs)
    _, top = jax.lax.top_k(others, int(tokens))
    fixed = jnp.broadcast_to(jnp.array([blank, eos], jnp.int32), top.shape[:-1] + (2,))
    return jnp.concatenate([fixed, top.astype(jnp.int32)], axis=-1)


__all__ = ["CTCPrefixScorer", "CTCPrefixState", "prepare", "init_state", "full_log_prob", "score", "select",
           "pre_beam"]
