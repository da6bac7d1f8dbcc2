"""Scaling-study pieces shared by the SED systems: the batch layout of a fine-tuning step."""
from __future__ import annotations

import jax.numpy as jnp

from jaxaudio.data.sed.desed import DESED_CLASSES
from jaxaudio.errors import ConfigError


def quarter_segments(name: str, batch: int) -> list[tuple[int, int]]:
    """Rows 1/2 strong, 1/4 weak, 1/4 unlabeled of a global batch (mixup stays inside each)."""
    if batch % 4:
        raise ConfigError(f"{name} scaling case: global batch {batch} must divide by 4 (strong/weak/unlabeled)")
    return [(0, batch // 2), (batch // 2, 3 * batch // 4), (3 * batch // 4, batch)]


def finetune_batch_spec(samples: int, frames: int):
    classes = len(DESED_CLASSES)

    def batch_spec(batch: int):
        return {"audio": ((batch, samples), jnp.float32), "strong": ((batch, frames, classes), jnp.float32),
                "weak": ((batch, classes), jnp.float32), "has_strong": ((batch,), jnp.bool_),
                "has_weak": ((batch,), jnp.bool_)}

    return batch_spec
