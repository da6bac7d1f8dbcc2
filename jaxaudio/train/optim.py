"""AdamW with parameter groups chosen by regex on the parameter path.

Recipes train parts of a model at different rates (encoder 5e-6, head 2e-4) and freeze
others. A group is a dict::

    {"pattern": r"^encoder/", "lr": 5e-6, "weight_decay": 1e-4,
     "schedule": {"kind": "warmup_exp_down", "warmup_steps": 100, "decay_start_step": 1500,
                  "exponent": -1.0}}

Missing keys come from ``default`` (which also covers every parameter no group matches).
``lr`` of ``0`` or ``"frozen"`` freezes the group: its updates are zero, it keeps no Adam
moments, and its gradients are left out of the clipping norm (as with ``requires_grad=False``).
The first group whose ``pattern`` matches (``re.search`` on ``layers/0/attention/query/kernel``
style paths) wins.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import optax

from jaxaudio.errors import ConfigError
from jaxaudio.train import schedules
from jaxaudio.train.sharding import path_to_str

DEFAULT_LABEL = "default"
FROZEN = "frozen"


def make_lr_schedule(lr: float, schedule: Mapping[str, Any] | None, total_steps: int) -> optax.Schedule:
    """``lr`` shaped by ``schedule`` ({'kind': 'constant'|'warmup_exp_down'|'noam'|'warmup_cosine', ...}).

    ``warmup_cosine`` (``warmup_steps``, optional ``end_fraction``, default 0): optax's linear warm-up
    to ``lr`` then cosine decay to ``lr * end_fraction`` at ``total_steps``, the usual image-CNN recipe."""
    cfg = dict(schedule or {})
    kind = cfg.pop("kind", "constant")
    if kind == "constant":
        if cfg:
            raise ConfigError(f"schedule kind 'constant' takes no options (got {sorted(cfg)})")
        return optax.constant_schedule(lr)
    if kind == "warmup_exp_down":
        return schedules.warmup_exp_down(lr, total_steps, **cfg)
    if kind == "noam":
        return schedules.noam(lr, **cfg)
    if kind == "warmup_cosine":
        unknown = sorted(set(cfg) - {"warmup_steps", "end_fraction"})
        if unknown:
            raise ConfigError(f"schedule kind 'warmup_cosine' takes warmup_steps and end_fraction (got {unknown})")
        warmup = int(cfg.get("warmup_steps", 0))
        if not 0 <= warmup < total_steps:
            raise ConfigError(f"schedule warmup_cosine: warmup_steps={warmup} must be in [0, {total_steps})")
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps,
                                                  end_value=lr * float(cfg.get("end_fraction", 0.0)))
    raise ConfigError(f"schedule.kind={kind!r} is unknown; expected constant, warmup_exp_down, noam or warmup_cosine")


def is_frozen(lr) -> bool:
    """A learning rate of 0 or 'frozen' means: do not train, keep no optimizer state."""
    if isinstance(lr, str):
        return lr == FROZEN
    return float(lr) == 0.0


def _resolved_groups(
    groups: Sequence[Mapping[str, Any]], default: Mapping[str, Any]
) -> list[tuple[str, str | None, dict]]:
    """[(label, pattern, settings)], the default group last with pattern None."""
    resolved = []
    for i, group in enumerate(groups):
        group = dict(group)
        if "pattern" not in group:
            raise ConfigError(f"optim.groups[{i}] needs a 'pattern' (regex on the parameter path)")
        pattern = group.pop("pattern")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"optim.groups[{i}].pattern={pattern!r} is not a valid regex: {err}") from None
        label = str(group.pop("name", f"group{i}"))
        if label in (DEFAULT_LABEL, FROZEN):
            raise ConfigError(f"optim.groups[{i}].name={label!r} is reserved")
        resolved.append((label, pattern, {**dict(default), **group}))
    resolved.append((DEFAULT_LABEL, None, dict(default)))
    return resolved


def group_labels(params, groups: Sequence[Mapping[str, Any]], default: Mapping[str, Any]):
    """Pytree like ``params`` holding each parameter's group label (the frozen ones: 'frozen')."""
    resolved = _resolved_groups(groups, default)

    def label_of(path, _leaf):
        name = path_to_str(path)
        for label, pattern, settings in resolved:
            if pattern is None or re.search(pattern, name):
                return FROZEN if is_frozen(settings.get("lr", 0.0)) else label
        raise AssertionError("the default group matches everything")

    return jax.tree_util.tree_map_with_path(label_of, params)


def make_optimizer(
    groups: Sequence[Mapping[str, Any]],
    default: Mapping[str, Any],
    clip_norm: float | None,
    total_steps: int,
) -> optax.GradientTransformation:
    """Zero frozen gradients, clip by global norm, then one AdamW per group.

    ``default`` keys: lr, weight_decay (0), schedule (constant), b1 (0.9), b2 (0.999), eps (1e-8).
    """
    if "lr" not in default:
        raise ConfigError("optim.default needs 'lr'")
    resolved = _resolved_groups(groups, default)
    per_group: dict[str, optax.GradientTransformation] = {FROZEN: optax.set_to_zero()}
    gate: dict[str, optax.GradientTransformation] = {FROZEN: optax.set_to_zero()}
    for label, _pattern, settings in resolved:
        if is_frozen(settings.get("lr", 0.0)):
            continue
        lr = make_lr_schedule(float(settings["lr"]), settings.get("schedule"), total_steps)
        per_group[label] = optax.adamw(
            learning_rate=lr,
            b1=float(settings.get("b1", 0.9)),
            b2=float(settings.get("b2", 0.999)),
            eps=float(settings.get("eps", 1e-8)),
            weight_decay=float(settings.get("weight_decay", 0.0)),
        )
        gate[label] = optax.identity()

    def labels(params):
        return group_labels(params, groups, default)

    chain = [optax.partition(gate, labels)]
    if clip_norm is not None:
        if clip_norm <= 0:
            raise ConfigError(f"optim.clip_norm must be positive or None (got {clip_norm})")
        chain.append(optax.clip_by_global_norm(clip_norm))
    chain.append(optax.partition(per_group, labels))
    return optax.chain(*chain)
