"""Which optimizer group, lr and weight decay each parameter of a stage gets: the paper-preset pinning
tests (PMAM, MAT-SED) compare these with the authors' groups."""
from __future__ import annotations

import re

import jax
import pytest

from jaxaudio.train.optim import DEFAULT_LABEL, FROZEN, group_labels
from jaxaudio.train.sharding import path_to_str


def assignment(stage, params) -> dict[str, tuple[str, float, float]]:
    """path -> (group label, lr, weight decay) as the trainer's optimizer sees the stage."""
    labels = group_labels(params, list(stage.groups), dict(stage.default_group))
    settings = {g["name"]: g for g in stage.groups}
    out = {}
    for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]:
        if label == FROZEN:
            out[path_to_str(path)] = (FROZEN, 0.0, 0.0)
            continue
        group = dict(stage.default_group) if label == DEFAULT_LABEL else {**stage.default_group, **settings[label]}
        out[path_to_str(path)] = (label, float(group["lr"]), float(group.get("weight_decay", 0.0)))
    return out


def expect(table: dict[str, tuple[str, float, float]], pattern: str, lr: float, wd: float | None = None):
    """Every path matching ``pattern`` trains at ``lr`` (0: frozen) with weight decay ``wd``."""
    hits = {p: v for p, v in table.items() if re.search(pattern, p)}
    assert hits, f"no parameter path matches {pattern!r}"
    for path, (label, got_lr, got_wd) in hits.items():
        if lr == 0.0:
            assert label == FROZEN, f"{path}: expected frozen, in group {label!r} at lr {got_lr}"
        else:
            assert got_lr == pytest.approx(lr, rel=1e-12), f"{path}: lr {got_lr} in {label!r}, expected {lr}"
            if wd is not None:
                assert got_wd == pytest.approx(wd, rel=1e-12), f"{path}: weight decay {got_wd}, expected {wd}"
    return hits
