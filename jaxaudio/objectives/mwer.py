"""Minimum word error rate (MWER) training for Paraformer's non-autoregressive decoder.

Why: the decoder is trained with per-position cross-entropy, but it is judged by the error
rate of whole hypotheses. Gao et al. (Interspeech 2022, arXiv 2206.08317) fine-tune with "MWER
training with negative sampling": N hypotheses per utterance, their probabilities renormalised
over those N, and

    L = sum_i P^(y_i|x) * (W(y_i, y) - mean_j W(y_j, y)),   P^(y_i|x) = P(y_i|x) / sum_j P(y_j|x).

The paper gives no more detail and there is no public implementation, so this module is
**our reading** of it:

* Hypotheses. Index 0 is the 1-best, the argmax at every position (what our greedy decoding
  outputs); indices 1..N-1 are the negative samples, each position drawn independently from
  softmax(logits) with ``jax.random.categorical``. All N have the predicted length
  ``token_len``: the CIF predictor fixes the length, so MWER here trains which token goes at
  each position, not how many there are. Samples are not de-duplicated (fixed shapes); a
  hypothesis drawn twice simply counts twice in the renormalisation.
* log P(y_i|x) is the sum of log_softmax(logits) at the hypothesis's tokens over the valid
  positions, and P^ is the softmax of these N sums. The gradient flows through P^ only.
* W(y_i, y) is the Levenshtein distance between the hypothesis (length ``token_len``) and the
  reference (length ``target_len``), divided by max(target_len, 1): for Chinese the "words"
  are characters, so W is the relative character error. W and its mean over the N are
  constants (stop_gradient). Since the P^ sum to 1 the mean does not change the gradient, only
  the loss's value (it centres it, so the loss is 0 when all hypotheses are equally wrong).
* The loss is the mean over utterances with a non-empty reference (target_len 0 contributes
  nothing, and is not counted in the denominator).

Everything is jit-able with fixed shapes: the edit distance is a dynamic programme carried
through ``lax.scan`` over hypothesis positions, one DP row (over reference positions) at a
time, and a row's insertion chain is resolved with a cumulative minimum instead of a loop.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxaudio.errors import ConfigError, ShapeError


def edit_distance(hyp: jax.Array, hyp_len: jax.Array, ref: jax.Array, ref_len: jax.Array) -> jax.Array:
    """Levenshtein distance (unit costs) of ``hyp[b, :hyp_len[b]]`` and ``ref[b, :ref_len[b]]``, ``(B,)`` int32.

    hyp: ``(B, L1)``, ref: ``(B, L2)`` integer token ids; entries beyond the lengths are ignored.
    Lengths are clipped to ``[0, L1]`` and ``[0, L2]``.
    """
    if hyp.ndim != 2 or ref.ndim != 2 or hyp.shape[0] != ref.shape[0]:
        raise ShapeError(f"edit_distance: hyp {tuple(hyp.shape)} and ref {tuple(ref.shape)}; expected (B, L1), (B, L2)")
    batch, l1 = hyp.shape
    l2 = ref.shape[1]
    hyp_len = jnp.clip(jnp.asarray(hyp_len, jnp.int32), 0, l1)
    ref_len = jnp.clip(jnp.asarray(ref_len, jnp.int32), 0, l2)
    cols = jnp.arange(l2 + 1, dtype=jnp.int32)  # j = 0..L2: reference prefix length

    def step(carry, inputs):
        row, result = carry  # row[b, j] = distance(hyp[b, :i], ref[b, :j])
        i, token = inputs  # token = hyp[:, i]; the new row is for the prefix of length i + 1
        cost = (token[:, None] != ref).astype(jnp.int32)  # (B, L2)
        # Deletion (from the row above) or match/substitution (diagonal); column 0 is i + 1.
        best = jnp.minimum(row[:, 1:] + 1, row[:, :-1] + cost)
        best = jnp.concatenate([jnp.full((batch, 1), i + 1, jnp.int32), best], axis=1)
        # Insertions chain along the row: new[j] = min_{k <= j} best[k] + (j - k).
        new = jax.lax.cummin(best - cols, axis=1) + cols
        at_ref_len = jnp.take_along_axis(new, ref_len[:, None], axis=1)[:, 0]
        result = jnp.where(i + 1 == hyp_len, at_ref_len, result)
        return (new, result), None

    row0 = jnp.broadcast_to(cols, (batch, l2 + 1))
    (_, result), _ = jax.lax.scan(step, (row0, ref_len), (jnp.arange(l1, dtype=jnp.int32), hyp.astype(jnp.int32).T))
    return result  # hyp_len 0 keeps the initial value, ref_len


def sample_hypotheses(key: jax.Array, logits: jax.Array, token_len: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The 1-best and ``n - 1`` sampled hypotheses with their log-probabilities.

    logits: ``(B, L, V)``; token_len: ``(B,)``, valid positions per utterance. Returns ids
    ``(n, B, L)`` int32 (index 0 the per-position argmax, 1..n-1 drawn from softmax(logits);
    0 beyond token_len) and log_prob ``(n, B)`` float32, the sum over valid positions of
    log_softmax(logits) at the ids, differentiable w.r.t. logits.
    """
    if logits.ndim != 3:
        raise ShapeError(f"sample_hypotheses: logits have shape {tuple(logits.shape)}; expected (B, L, V)")
    if int(n) < 1:
        raise ConfigError(f"sample_hypotheses: n={n}; expected >= 1")
    batch, length, _ = logits.shape
    if jnp.shape(token_len) != (batch,):
        raise ShapeError(f"sample_hypotheses: token_len has shape {jnp.shape(token_len)}; expected ({batch},)")
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    frozen = jax.lax.stop_gradient(log_p)
    best = jnp.argmax(frozen, axis=-1).astype(jnp.int32)
    drawn = jax.random.categorical(key, frozen, axis=-1, shape=(int(n) - 1, batch, length)).astype(jnp.int32)
    ids = jnp.concatenate([best[None], drawn], axis=0)
    valid = jnp.arange(length)[None, :] < jnp.asarray(token_len)[:, None]  # (B, L)
    ids = jnp.where(valid[None], ids, 0)
    stacked = jnp.broadcast_to(log_p[None], (int(n),) + log_p.shape)
    picked = jnp.take_along_axis(stacked, ids[..., None], axis=-1)[..., 0]
    return ids, jnp.sum(jnp.where(valid[None], picked, 0.0), axis=-1)


def mwer_from_hypotheses(log_prob: jax.Array, wer: jax.Array, valid: jax.Array) -> jax.Array:
    """The batch mean of ``sum_i softmax_i(log_prob) * (W_i - mean_j W_j)``, a scalar.

    log_prob, wer: ``(n, B)``; valid: ``(B,)`` bool, the utterances that count. W is a constant.
    """
    wer = jax.lax.stop_gradient(wer.astype(jnp.float32))
    p_hat = jax.nn.softmax(log_prob.astype(jnp.float32), axis=0)
    per_utt = jnp.sum(p_hat * (wer - jnp.mean(wer, axis=0, keepdims=True)), axis=0)
    valid = valid.astype(bool)
    return jnp.sum(jnp.where(valid, per_utt, 0.0)) / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def mwer_loss(key: jax.Array, logits: jax.Array, token_len: jax.Array, targets: jax.Array, target_len: jax.Array,
              *, n: int = 4) -> tuple[jax.Array, dict]:
    """Paraformer's MWER loss with negative sampling (module docstring), and metrics.

    logits: ``(B, L, V)`` decoder logits, token_len ``(B,)`` the predicted lengths; targets
    ``(B, L2)`` int, target_len ``(B,)``. The hypotheses are ``sample_hypotheses(key, logits,
    token_len, n)``. Returns ``(loss, aux)``; aux: "mwer_mean_wer" (W over all hypotheses),
    "mwer_1best_wer" (W of the argmax), both means over utterances with target_len > 0.
    """
    if int(n) < 2:
        raise ConfigError(f"mwer_loss: n={n}; expected >= 2 (one hypothesis gives a constant 0)")
    if targets.ndim != 2 or targets.shape[0] != logits.shape[0]:
        raise ShapeError(f"mwer_loss: targets have shape {tuple(targets.shape)}; expected ({logits.shape[0]}, L2)")
    ids, log_prob = sample_hypotheses(key, logits, token_len, n)
    n_hyp, batch, length = ids.shape
    target_len = jnp.asarray(target_len, jnp.int32)
    dist = edit_distance(ids.reshape(n_hyp * batch, length), jnp.tile(jnp.asarray(token_len, jnp.int32), n_hyp),
                         jnp.tile(targets, (n_hyp, 1)), jnp.tile(target_len, n_hyp)).reshape(n_hyp, batch)
    wer = dist.astype(jnp.float32) / jnp.maximum(target_len, 1).astype(jnp.float32)
    valid = target_len > 0
    count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    loss = mwer_from_hypotheses(log_prob, wer, valid)
    aux = {"mwer_loss": loss,
           "mwer_mean_wer": jnp.sum(jnp.where(valid, jnp.mean(wer, axis=0), 0.0)) / count,
           "mwer_1best_wer": jnp.sum(jnp.where(valid, wer[0], 0.0)) / count}
    return loss, aux


__all__ = ["edit_distance", "sample_hypotheses", "mwer_from_hypotheses", "mwer_loss"]
