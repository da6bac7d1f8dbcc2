"""Paraformer's Continuous Integrate-and-Fire (CIF) predictor, after FunASR's ``CifPredictor``
(``funasr/models/paraformer/cif_predictor.py``; the AISHELL-1 Paraformer recipe uses this class,
``predictor: CifPredictor``, threshold 1.0, l_order = r_order = 1, tail_threshold 0.45).

* ``CIFPredictor``: encoder frames ``h (B, T, D)`` -> weights ``alpha (B, T)``:

      c     = pad(h, (1, 1)) -> depthwise Conv1d(D, kernel 3, groups=D)
      alpha = sigmoid(Linear_{D->1}(relu(dropout(c + h)))) * mask

* ``integrate_and_fire``: accumulate ``alpha_t`` (and ``alpha_t h_t``) frame by frame; when the
  accumulator reaches the threshold a token embedding is emitted. With ``acc`` the weight
  accumulated before frame t (FunASR's ``cif``):

      acc + alpha_t >= threshold  ->  emit  frame + (1 - acc) h_t,   next frame = (alpha_t - (1 - acc)) h_t,
                                          acc <- acc + alpha_t - 1
      otherwise                   ->  frame += alpha_t h_t,          acc <- acc + alpha_t

  "Exactly at the threshold" fires (FunASR compares ``integrate >= threshold``); the next token
  then starts from a zero weight. The emitted part always completes the weight to 1 and the
  accumulator always drops by 1, whatever ``threshold`` is: ``threshold`` only moves the comparison,
  as in FunASR. A frame fires at most once (FunASR does not loop within a frame): with sigmoid
  weights (``alpha_t <= 1``) and threshold 1, ``acc < 1`` before every frame, so ``acc + alpha_t < 2``
  can reach the threshold only once. Scaled training weights can exceed 1; a carry ``>= threshold``
  left by such a frame then fires on the *next* frame with the weight ``1 - acc < 0`` (FunASR's
  behaviour, reproduced here), so a token is never lost but that frame's embedding is off.

  Tokens go into a fixed buffer of ``max_tokens`` slots (static shapes, jit-able); fires beyond it
  are dropped (FunASR sizes its output by ``round(sum(alpha))`` instead). The ``lax.scan`` carries
  the accumulator, the partial embedding and the write index; it returns each frame's candidate
  embedding and slot, scattered into the buffer after the scan (carrying the buffer itself would
  make the backward pass keep a (B, max_tokens, D) copy per frame).

* Training (FunASR ``forward`` with a target): ``scale_alpha`` rescales the weights so that
  ``sum(alpha) = target length``, so exactly that many tokens fire; ``quantity_loss`` is FunASR's
  ``mae_loss(normalize_length=False)``, ``sum_b |N_b - sum_t alpha_bt| / B``, on the *unscaled*
  weights (FunASR's ``token_num`` is summed before the scaling). Float32 accumulation ends at
  ``1 +- a few ulp`` after a sum of exactly N, so the last token fails to fire for roughly half of
  the utterances (as in FunASR, whose ``cif`` pads to ``round(sum(alpha))``; FunASR PR #1791): mask
  the decoder with the target lengths, as FunASR does, and its last slot may then be zero.
* Inference (FunASR ``tail_process_fn``): ``add_tail`` appends a frame of weight ``tail_threshold``
  (0.45) and zero hidden state at each utterance's true length, so that a residual ``>= 0.55``
  still fires; the token count is ``floor(sum(alpha))`` of the extended weights. ``cif_inference``
  combines the two.

Padding: alphas are zero on padded frames, so those frames add nothing. Two deliberate
differences from FunASR make a padded batch give the same results as each utterance alone:
``CIFPredictor`` zeroes padded frames of ``h`` before the convolution (FunASR lets the encoder's
padded outputs reach the last real frame through the kernel), and ``add_tail``'s tail frame has a
zero hidden state for every utterance (FunASR appends a zero frame at ``T`` only, so a shorter
utterance's tail frame carries the encoder output at its first padded frame).
FunASR's ``smooth_factor`` / ``noise_threshold`` (``relu(alpha * 1 - 0)`` by default) are left out.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import as_rngs, torch_uniform

THRESHOLD = 1.0
TAIL_THRESHOLD = 0.45


class CIFPredictor(nnx.Module):
    """CIF weight predictor: ``h (B, T, dim)``, ``mask (B, T)`` (1 = real frame) -> ``alpha (B, T)``.

    Layout of FunASR's ``CifPredictor``: zero padding ``(l_order, r_order)``, a depthwise conv
    (kernel ``l_order + r_order + 1``, groups = dim; kernel shape ``(k, 1, dim)``) plus a residual,
    dropout, ReLU, ``Linear(dim, 1)``, sigmoid; zero on padded frames. PyTorch's default init
    (U(+-1/sqrt(fan_in)), fan_in = k for the depthwise conv, dim for the output layer).
    """

    def __init__(self, dim: int, *, l_order: int = 1, r_order: int = 1, dropout: float = 0.1,
                 rngs: nnx.Rngs):
        if l_order < 0 or r_order < 0:
            raise ConfigError(f"CIFPredictor l_order={l_order}, r_order={r_order}; expected >= 0")
        k = l_order + r_order + 1
        self.conv = nnx.Conv(dim, dim, kernel_size=(k,), feature_group_count=dim, padding=((l_order, r_order),),
                             kernel_init=torch_uniform(k), bias_init=torch_uniform(k), rngs=rngs)
        self.output = nnx.Linear(dim, 1, kernel_init=torch_uniform(dim), bias_init=torch_uniform(dim), rngs=rngs)
        self.dropout_rate = dropout
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, h: jax.Array, mask: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """``train``: dropout on (needs ``rngs`` when the rate is above 0)."""
        rngs = as_rngs(rngs)
        if train and self.dropout_rate > 0 and rngs is None:
            raise ConfigError(f"CIFPredictor dropout={self.dropout_rate} needs `rngs` when train=True")
        mask = mask.astype(h.dtype)
        h = h * mask[..., None]
        x = self.conv(h) + h
        x = self.dropout(x, deterministic=not train, rngs=rngs)
        alpha = jax.nn.sigmoid(self.output(jax.nn.relu(x)))[..., 0]
        return alpha * mask


def _fire_step(threshold):
    def step(carry, inputs):
        acc, frame, count = carry
        alpha_t, h_t = inputs  # (B,), (B, D)
        completion = 1.0 - acc
        total = acc + alpha_t
        fire = total >= threshold
        cur = jnp.where(fire, completion, alpha_t)
        emitted = frame + cur[:, None] * h_t
        frame = jnp.where(fire[:, None], (alpha_t - cur)[:, None] * h_t, emitted)
        acc = jnp.where(fire, total - 1.0, total)
        return (acc, frame, count + fire.astype(count.dtype)), (fire, emitted, count)

    return step


def integrate_and_fire(hidden: jax.Array, alpha: jax.Array, max_tokens: int, threshold: float = THRESHOLD):
    """CIF over time: ``hidden (B, T, D)``, ``alpha (B, T)`` -> tokens in a buffer of ``max_tokens``.

    Returns ``(embeddings (B, max_tokens, D), token_mask (B, max_tokens) bool, fire_positions
    (B, max_tokens) int32)``: slot n holds the n-th fired embedding and the frame index that fired it;
    empty slots are zero, False and -1. Fires beyond ``max_tokens`` are dropped. ``alpha`` must be
    zero on padded frames. Rules in the module docstring (FunASR's ``cif``).
    """
    batch, time, dim = hidden.shape
    alpha = alpha.astype(hidden.dtype)
    init = (jnp.zeros((batch,), hidden.dtype), jnp.zeros((batch, dim), hidden.dtype), jnp.zeros((batch,), jnp.int32))
    _, (fire, emitted, slot) = jax.lax.scan(
        _fire_step(threshold), init, (jnp.swapaxes(alpha, 0, 1), jnp.swapaxes(hidden, 0, 1)))
    fire, emitted, slot = fire.T, jnp.swapaxes(emitted, 0, 1), slot.T  # (B, T), (B, T, D), (B, T)
    slot = jnp.where(fire, slot, max_tokens)  # out of range: dropped by the scatter
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], slot.shape)
    frames = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32)[None, :], slot.shape)
    embeddings = jnp.zeros((batch, max_tokens, dim), hidden.dtype).at[rows, slot].set(emitted, mode="drop")
    fire_positions = jnp.full((batch, max_tokens), -1, jnp.int32).at[rows, slot].set(frames, mode="drop")
    count = jnp.sum(fire, axis=1)
    token_mask = jnp.arange(max_tokens)[None, :] < count[:, None]
    return embeddings, token_mask, fire_positions


def scale_alpha(alpha: jax.Array, mask: jax.Array, target_lengths: jax.Array) -> jax.Array:
    """Training weights: ``alpha * N / sum(alpha)`` per utterance (zero on padding), so ``sum = N``.

    FunASR divides without a guard; an utterance whose weights are all zero stays all zero here.
    """
    alpha = alpha * mask.astype(alpha.dtype)
    total = jnp.sum(alpha, axis=-1)
    total = jnp.where(total > 0, total, 1.0)
    return alpha * (target_lengths.astype(alpha.dtype) / total)[:, None]


def quantity_loss(alpha: jax.Array, mask: jax.Array, target_lengths: jax.Array) -> jax.Array:
    """FunASR's ``mae_loss(normalize_length=False)``: ``sum_b |N_b - sum_t alpha_bt| / B`` (unscaled alpha)."""
    predicted = jnp.sum(alpha * mask.astype(alpha.dtype), axis=-1)
    return jnp.sum(jnp.abs(target_lengths.astype(alpha.dtype) - predicted)) / alpha.shape[0]


def add_tail(hidden: jax.Array, alpha: jax.Array, mask: jax.Array, tail_threshold: float = TAIL_THRESHOLD):
    """FunASR's ``tail_process_fn``: one frame more, of weight ``tail_threshold`` and zero hidden state,
    at each utterance's length (``mask`` a prefix of ones). Returns ``(hidden (B, T+1, D), alpha (B, T+1),
    mask (B, T+1))``, the mask covering the tail frame."""
    mask = mask.astype(alpha.dtype)
    zero = jnp.zeros((mask.shape[0], 1), mask.dtype)
    tail = jnp.concatenate([jnp.ones_like(zero), mask], 1) - jnp.concatenate([mask, zero], 1)  # 1 at the length
    alpha = jnp.concatenate([alpha * mask, zero], 1) + tail_threshold * tail
    hidden = jnp.concatenate([hidden * mask[..., None].astype(hidden.dtype),
                              jnp.zeros_like(hidden[:, :1])], 1)
    return hidden, alpha, jnp.concatenate([mask, zero], 1) + tail


def cif_inference(hidden: jax.Array, alpha: jax.Array, mask: jax.Array, max_tokens: int,
                  threshold: float = THRESHOLD, tail_threshold: float = TAIL_THRESHOLD):
    """Inference CIF: ``add_tail`` then ``integrate_and_fire``.

    Returns ``(embeddings, token_mask, token_num (B,) int32, fire_positions)``. ``token_num`` is
    FunASR's ``floor(sum(alpha))`` of the tail-extended weights (what its decoder is masked with);
    ``token_mask`` is ``slot < token_num`` (capped at ``max_tokens``) and embeddings outside it are
    zero. With threshold 1 it equals the number of fires up to float rounding of the accumulator.
    """
    hidden, alpha, _ = add_tail(hidden, alpha, mask, tail_threshold)
    embeddings, _, fire_positions = integrate_and_fire(hidden, alpha, max_tokens, threshold)
    token_num = jnp.floor(jnp.sum(alpha, axis=-1)).astype(jnp.int32)
    token_mask = jnp.arange(max_tokens)[None, :] < token_num[:, None]
    embeddings = embeddings * token_mask[..., None].astype(embeddings.dtype)
    fire_positions = jnp.where(token_mask, fire_positions, -1)
    return embeddings, token_mask, token_num, fire_positions
