"""The SED recipes' in-step augmentation: frame shift, mixup within each source, FilterAugment."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxaudio.audio import augment, features


def filter_units_per_db(fe: features.FrontEndConfig) -> float:
    """Feature units per dB of filter gain: 1 for dB features; ln(10)/20 over the normalising
    std for natural-log features (Transformer4SED's PaSST features: ln(10)/20/5)."""
    if fe.log == "db":
        return 1.0
    return math.log(10.0) / 20.0 / (fe.norm_std or 1.0)


def make_augment(segments: list[tuple[int, int]], *, frame_shift_sigma: float, mixup_prob: float,
                 filter_augment: bool, units_per_db: float = 1.0):
    """``augment(key, feats, strong, weak) -> (feats, strong, weak)``.

    segments: the row ranges of each source in the batch; mixup stays inside a segment so
    labelled and unlabelled rows never blend.
    """

    def augment_batch(key, feats, strong, weak):
        k_shift, k_mix, k_filter = jax.random.split(key, 3)
        if frame_shift_sigma > 0:
            feats, strong = augment.frame_shift(k_shift, feats, strong, frame_shift_sigma)
        if mixup_prob > 0:
            parts = []
            for i, (start, stop) in enumerate(segments):
                parts.append(augment.mixup(jax.random.fold_in(k_mix, i), feats[start:stop], strong[start:stop],
                                           weak[start:stop], prob=mixup_prob))
            feats, strong, weak = (jnp.concatenate(p, axis=0) for p in zip(*parts))
        if filter_augment:
            feats = augment.filter_augment(k_filter, feats, units_per_db=units_per_db)
        return feats, strong, weak

    return augment_batch


def batch_segments(counts) -> list[tuple[int, int]]:
    """Row ranges of consecutive sources with these per-batch counts (zeros skipped)."""
    counts = [c for c in counts if c > 0]
    return [(sum(counts[:i]), sum(counts[:i + 1])) for i in range(len(counts))]
