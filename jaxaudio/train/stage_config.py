"""The one stage schema: ``config.stages.<name>`` -> the optimizer and loop fields of a Stage.

    config.stages.<name> = {steps, lr, weight_decay, schedule: {kind, ...}, groups: ((name,
      regex, lr, weight_decay), ...), clip_norm, ema (0: no EMA teacher), eval_every,
      log_every, checkpoint_every, keep, b1 / b2 / eps (Adam's; unset: optim's defaults),
      ...system-specific loss keys}

Why one schema: ``stage1_lr``-style keys multiply with every stage and every system; here
each stage is the same shape, so overrides read alike (``--config.stages.finetune2.lr=1e-4``).
"""
from __future__ import annotations

from typing import Any, Mapping

from jaxaudio.errors import ConfigError
from jaxaudio.utils.config import plain

LOOP_KEYS = ("log_every", "checkpoint_every", "keep", "eval_every")
ADAM_KEYS = ("b1", "b2", "eps")


def schedule_of(stage_cfg: Mapping[str, Any]) -> dict | None:
    """The stage's lr schedule; a decay start past the last step is moved to the last step."""
    schedule = plain(stage_cfg.get("schedule") or {})
    if not schedule:
        return None
    if "decay_start_step" in schedule:
        schedule["decay_start_step"] = min(int(schedule["decay_start_step"]), int(stage_cfg["steps"]) - 1)
    return schedule


def groups_of(stage_cfg: Mapping[str, Any], where: str, schedule: dict | None, extra=()) -> list[dict]:
    """``extra`` groups (dicts, e.g. parameters a stage never reads, frozen) then the config's
    ``(name, regex, lr, weight_decay)`` entries, each with the stage schedule."""
    groups = [dict(g) for g in extra]
    for i, entry in enumerate(stage_cfg.get("groups") or ()):
        if len(entry) != 4:
            raise ConfigError(f"{where}.groups[{i}]: expected (name, regex, lr, weight_decay), got {entry!r}")
        name, pattern, lr, wd = entry
        group = {"name": name, "pattern": pattern, "lr": lr, "weight_decay": wd}
        if schedule:
            group["schedule"] = schedule
        groups.append(group)
    return groups


def stage_fields(stage_cfg: Mapping[str, Any], where: str, *, extra_groups=(), loop_defaults=None) -> dict:
    """Keyword arguments for ``Stage(name, **fields, loss=..., batches=...)`` from the schema.

    ``loop_defaults`` (e.g. ``config.train``) fills loop keys the stage does not set.
    """
    if "steps" not in stage_cfg or int(stage_cfg["steps"]) < 1:
        raise ConfigError(f"{where}.steps: a training stage needs steps >= 1")
    schedule = schedule_of(stage_cfg)
    default: dict[str, Any] = {"lr": stage_cfg.get("lr", 0.0)}
    if stage_cfg.get("weight_decay") is not None:
        default["weight_decay"] = stage_cfg["weight_decay"]
    for key in ADAM_KEYS:
        if stage_cfg.get(key) is not None:
            default[key] = float(stage_cfg[key])
    if schedule:
        default["schedule"] = schedule
    fields: dict[str, Any] = {
        "steps": int(stage_cfg["steps"]),
        "default_group": default,
        "groups": tuple(groups_of(stage_cfg, where, schedule, extra_groups)),
        "clip_norm": stage_cfg.get("clip_norm", plain(loop_defaults or {}).get("clip_norm")),
        "ema": float(stage_cfg["ema"]) if stage_cfg.get("ema") else None,
        "lr_group": stage_cfg.get("lr_group") or None,
        "select": stage_cfg.get("select", "last"),
    }
    defaults = plain(loop_defaults or {})
    for key in LOOP_KEYS:
        value = stage_cfg.get(key, defaults.get(key))
        if value is not None:
            fields[key] = int(value)
    return fields
