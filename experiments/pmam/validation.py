"""Validation of a PMAM pre-training round: the masked pseudo-label BCE on the validation clips.

The reference keeps the pre-training epoch whose validation loss is lowest: the prototype BCE on
the hidden frames of the validation clips against the round's GMM posteriors (ref
recipes/desed/pmam/train.py ``validation``, main.py:184-206; sed_recipes.md row 14). The masks
here are drawn from a fixed key per batch, so every epoch is scored on the same hidden frames
and the ranking reflects the weights, not the draw.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.pmam.model import mel_frames
from jaxaudio.data.source import eval_batches
from jaxaudio.nn.masking import block_mask, replacement_plan
from jaxaudio.objectives.sed import binary_cross_entropy

PRIMARY = "pseudo_bce"


class PseudoLabelBCE:
    """``run(predict)`` -> ``{"pseudo_bce": mean BCE per hidden frame and prototype}`` (lower is better)."""

    primary_metric = PRIMARY

    def __init__(self, source, labels: np.ndarray, batch_size: int):
        if len(labels) != len(source):
            raise ValueError(f"pseudo labels for {len(labels)} clips, the validation subset has {len(source)}")
        self.source, self.labels, self.batch_size = source, labels, batch_size

    def run(self, predict, *, plot_dir=None, plot_prefix="", title="") -> dict[str, float]:
        total = count = 0.0
        for batch in eval_batches(self.source, self.batch_size, shard_index=jax.process_index(),
                                  shard_count=jax.process_count()):
            rows = np.maximum(batch["index"], 0)
            out = predict({**batch, "gamma": np.asarray(self.labels[rows], np.float32)})
            keep = out["index"] >= 0
            total += float(out["bce_sum"][keep].sum())
            count += float(out["count"][keep].sum())
        return {PRIMARY: total / max(count, 1.0)}


def forward_fn(config, fe, prototypes: np.ndarray):
    """``(model, batch) -> {bce_sum, count}`` per clip: the eval-mode masked pass on fixed masks."""
    p, frames = config.pretrain, config.model.frames
    means = jnp.asarray(prototypes, jnp.float32)
    reference_count = bool(p.get("mask_reference_count", False))

    def forward(model, batch):
        key = jax.random.fold_in(jax.random.key(config.seed + 7), batch["index"][0])
        k_mask, k_plan = jax.random.split(key)
        mel = mel_frames(batch["audio"], fe, frames)
        mask = block_mask(k_mask, mel.shape[0], frames, p.mask_block, p.mask_rate, reference_count=reference_count)
        plan = replacement_plan(k_plan, mask, p.p_mask_token, p.p_random)
        out = model.mam_forward(mel, mask, plan, prototypes=means, train=False)
        per_frame = jnp.mean(binary_cross_entropy(out["prototype_probs"], batch["gamma"]), axis=-1)
        hidden = mask.astype(jnp.float32)
        return {"bce_sum": jnp.sum(per_frame * hidden, axis=1), "count": jnp.sum(hidden, axis=1) * 1.0}

    return forward
