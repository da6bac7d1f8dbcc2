"""Learning-rate schedules and consistency-weight ramps, as jit-able functions of the step.

``step`` is the optax count: 0 for the first update. All functions accept Python ints
or traced arrays, so they run inside the train step without a host round-trip.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

from jaxaudio.errors import ConfigError


def warmup_exp_down(
    base_lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    warmup_from: float = 0.1,
    decay_start_step: int = 0,
    exponent: float = -0.5,
) -> optax.Schedule:
    """The "ExponentialDown" schedule of the MAT-SED / PMAM recipes, times ``base_lr``.

    scale(step) = warmup_from + (1 - warmup_from) * step / warmup_steps   for step < warmup_steps
                = 1                                                      until decay_start_step
                = exp(exponent * phi**2), phi = (step - decay_start_step) / (total_steps - decay_start_step)
    with phi clipped to [0, 1]. The reference applies its first scale only after the first
    update (its first update runs at the unscaled rate); here update ``k`` uses scale(k).
    """
    if total_steps <= 0:
        raise ConfigError(f"train.total_steps must be positive (got {total_steps})")
    if not 0 <= decay_start_step < total_steps:
        raise ConfigError(
            f"schedule.decay_start_step={decay_start_step} must lie in [0, train.total_steps={total_steps})"
        )
    if warmup_steps < 0:
        raise ConfigError(f"schedule.warmup_steps must be >= 0 (got {warmup_steps})")
    decay_span = total_steps - decay_start_step

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps > 0:
            warm = warmup_from + (1.0 - warmup_from) * step / warmup_steps
        else:
            warm = jnp.ones_like(step)
        phi = jnp.clip((step - decay_start_step) / decay_span, 0.0, 1.0)
        down = jnp.exp(exponent * phi * phi)
        scale = jnp.where(step < warmup_steps, warm, jnp.where(step > decay_start_step, down, 1.0))
        return base_lr * scale

    return schedule


def noam(base_lr: float, warmup_steps: int) -> optax.Schedule:
    """Transformer ("Noam") warm-up used by Paraformer: lr * w**0.5 * min(s**-0.5, s * w**-1.5), s = step + 1."""
    if warmup_steps <= 0:
        raise ConfigError(f"schedule.warmup_steps must be positive for noam (got {warmup_steps})")

    def schedule(step):
        s = jnp.asarray(step, jnp.float32) + 1.0
        return base_lr * warmup_steps**0.5 * jnp.minimum(s**-0.5, s * warmup_steps**-1.5)

    return schedule


def _progress(step, rampup_steps):
    if rampup_steps <= 0:
        return jnp.ones_like(jnp.asarray(step, jnp.float32))
    return jnp.clip(jnp.asarray(step, jnp.float32) / rampup_steps, 0.0, 1.0)


def sigmoid_rampup(step, rampup_steps: int):
    """Classic mean-teacher ramp exp(-5 (1 - x)^2), x = step / rampup_steps clipped to [0, 1]."""
    x = _progress(step, rampup_steps)
    return jnp.exp(-5.0 * (1.0 - x) ** 2)


def logistic_rampup(step, rampup_steps: int):
    """MAT-SED stage-2 ramp 1 / (1 + exp(-10 (x - 0.5))); note it starts at ~0.0067, not 0."""
    x = _progress(step, rampup_steps)
    return 1.0 / (1.0 + jnp.exp(-10.0 * (x - 0.5)))


def linear_rampup(step, rampup_steps: int):
    """x = step / rampup_steps clipped to [0, 1]."""
    return _progress(step, rampup_steps)
