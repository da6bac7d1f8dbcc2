"""The CNN zoo of the remote-sensing distillation paper (``spec/papers.md`` §5): ImageNet CNNs in
NNX that import timm weights, at the published size or a laptop-CPU size, for any channel count.

    from jaxaudio.models import cnn_zoo
    model = cnn_zoo.build("resnet50", "tiny", num_classes=45, in_channels=3, rngs=nnx.Rngs(0))

Members live one family per file (``mobilenet``, ``resnet``, ``inception``, ``efficientnet``,
``densenet``, ``convnext``); each declares ``ENTRIES`` (``base.ZooEntry``).
"""
from __future__ import annotations

import dataclasses
import importlib

from jaxaudio.errors import ConfigError
from jaxaudio.models.cnn_zoo.base import ZooEntry

FAMILIES = ("mobilenet", "resnet", "inception", "efficientnet", "densenet", "convnext")


def entries() -> dict[str, ZooEntry]:
    """Every member by name (families are imported on first use)."""
    out: dict[str, ZooEntry] = {}
    for family in FAMILIES:
        module = importlib.import_module(f"jaxaudio.models.cnn_zoo.{family}")
        out.update(module.ENTRIES)
    return out


def entry(name: str) -> ZooEntry:
    known = entries()
    if name not in known:
        raise ConfigError(f"unknown CNN-zoo model {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def config(name: str, preset: str = "tiny", **overrides):
    """The member's preset config with ``overrides`` (``num_classes``, ``in_channels``, ...)."""
    e = entry(name)
    if preset not in e.presets:
        raise ConfigError(f"{name}: unknown preset {preset!r}; presets: {', '.join(e.presets)}")
    cfg = e.presets[preset]
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"{name}: unknown config fields {unknown}; fields: {', '.join(sorted(fields))}")
    return dataclasses.replace(cfg, **overrides)


def build(name: str, preset: str = "tiny", *, rngs, **overrides):
    return entry(name).model(config(name, preset, **overrides), rngs=rngs)
