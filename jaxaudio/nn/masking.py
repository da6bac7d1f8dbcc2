"""Block masking for masked audio modelling (MAT-SED, PMAM), with static shapes for jit.

Two steps, each a pure function of a PRNG key:

* ``block_mask`` picks which frames are hidden. The time axis is cut into blocks of ``block``
  frames (PMAM/MAT-SED: 10 frames = 0.1 s at 100 fps); each example hides a fixed number of
  whole blocks, chosen as the ones with the smallest uniform noise (the ranking of a sorted
  noise vector, as Transformer4SED's ``MlmModule.block_mask``). Frames after the last whole
  block are never masked. Because the count is fixed, every example hides the same number of
  frames and the loss normalisation does not depend on the draw.
* ``replacement_plan`` decides what each hidden frame shows the context network: the learned
  mask token (``p_mask``), a frame drawn uniformly from the whole batch (``p_random``; the
  reference draws over all ``batch*time`` frames, so it can hit the frame itself), or the frame
  unchanged (the rest). ``apply_replacement`` carries the plan out.

Block count. The reference takes the noise value at rank ``int(n*rate)`` as a threshold and
masks every block with noise ``<=`` it, which hides ``min(int(n*rate), n-1) + 1`` blocks
(81 of 100 at rate 0.8). We hide ``round(n*rate)`` blocks by default (80 of 100: the rate
the papers state); ``reference_count=True`` reproduces the reference's count.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxaudio.errors import ConfigError


def masked_block_count(n_blocks: int, rate: float, *, reference_count: bool = False) -> int:
    """Blocks hidden per example out of ``n_blocks`` (see the module docstring)."""
    if reference_count:
        return min(int(n_blocks * rate), n_blocks - 1) + 1
    return int(round(n_blocks * rate))


def block_mask(key: jax.Array, batch: int, length: int = 1000, block: int = 10, rate: float = 0.8, *,
               reference_count: bool = False) -> jax.Array:
    """``(batch, length)`` bool, True on hidden frames; whole blocks of ``block`` frames.

    Exactly ``masked_block_count(length // block, rate)`` blocks per example.
    """
    if block < 1 or length < block:
        raise ConfigError(f"mask block={block} must be in 1..length={length}")
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"mask rate={rate}; expected a fraction in [0, 1]")
    n_blocks = length // block
    n_masked = masked_block_count(n_blocks, rate, reference_count=reference_count)
    noise = jax.random.uniform(key, (batch, n_blocks))
    # rank of each block's noise; the n_masked smallest are hidden
    rank = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
    hidden_blocks = rank < n_masked
    hidden = jnp.repeat(hidden_blocks, block, axis=1)
    tail = length - n_blocks * block
    if tail:
        hidden = jnp.concatenate([hidden, jnp.zeros((batch, tail), bool)], axis=1)
    return hidden


class ReplacementPlan(NamedTuple):
    """What each frame shows the context network; all ``(batch, time)``.

    use_token: hidden frames replaced by the mask token.
    use_random: hidden frames replaced by frame ``source_index`` of the flattened batch.
    source_index: int32 index into ``batch*time`` frames (drawn for every frame; used only
      where ``use_random``). Hidden frames with neither flag stay unchanged.
    """

    use_token: jax.Array
    use_random: jax.Array
    source_index: jax.Array


def replacement_plan(key: jax.Array, mask: jax.Array, p_mask: float = 0.9, p_random: float = 0.05) -> ReplacementPlan:
    """Split the hidden frames of ``mask (batch, time)`` into token / random / unchanged.

    One uniform ``u`` per frame: ``u < p_mask`` -> token, ``p_mask <= u < p_mask + p_random``
    -> random frame, else unchanged (the reference's rule).
    """
    if p_mask < 0 or p_random < 0 or p_mask + p_random > 1.0 + 1e-9:
        raise ConfigError(f"mask style p_mask={p_mask}, p_random={p_random}; expected non-negative, sum <= 1")
    if mask.ndim != 2:
        raise ConfigError(f"mask has shape {mask.shape}; expected (batch, time)")
    batch, time = mask.shape
    key_style, key_source = jax.random.split(key)
    u = jax.random.uniform(key_style, (batch, time))
    mask = mask.astype(bool)
    use_token = mask & (u < p_mask)
    use_random = mask & (u >= p_mask) & (u < p_mask + p_random)
    source_index = jax.random.randint(key_source, (batch, time), 0, batch * time, dtype=jnp.int32)
    return ReplacementPlan(use_token, use_random, source_index)


def token_only_plan(mask: jax.Array) -> ReplacementPlan:
    """Every hidden frame gets the mask token (deterministic; evaluation and tests)."""
    mask = mask.astype(bool)
    return ReplacementPlan(mask, jnp.zeros_like(mask), jnp.zeros(mask.shape, jnp.int32))


def apply_replacement(x: jax.Array, plan: ReplacementPlan, mask_token: jax.Array) -> jax.Array:
    """Carry out ``plan`` on frames ``x (batch, time, dim)``; ``mask_token`` broadcasts to ``(dim,)``.

    Random replacements read the *original* frames (not already-tokenised ones).
    """
    batch, time, dim = x.shape
    if plan.use_token.shape != (batch, time):
        raise ConfigError(
            f"replacement plan has shape {plan.use_token.shape}; expected (batch, time) = {(batch, time)}"
        )
    donors = jnp.take(x.reshape(batch * time, dim), plan.source_index.reshape(-1), axis=0).reshape(batch, time, dim)
    token = jnp.broadcast_to(jnp.reshape(mask_token, (dim,)).astype(x.dtype), x.shape)
    out = jnp.where(plan.use_random[..., None], donors, x)
    return jnp.where(plan.use_token[..., None], token, out)
