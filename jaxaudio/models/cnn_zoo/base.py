"""What a CNN-zoo member declares, so the distillation system, the converter and the tests treat
every architecture alike.

A member is an ``nnx.Module`` built as ``Model(cfg, *, rngs)`` from a frozen config dataclass that
has at least ``num_classes``, ``in_channels`` and ``drop_rate``, with

* ``__call__(x, *, train: bool, rngs=None) -> logits (batch, num_classes)``, ``x`` NHWC images
  (or spectrograms with ``in_channels=1``);
* ``features(x, *, train: bool) -> (batch, num_features)``: the pooled pre-logit features (what
  "high-level features" of a fine-tuned backbone means; the classifier is one Linear on them);
* ``num_features``: that width.

Batch norm follows the convention: batch statistics and running-average updates with
``train=True``, the running averages with ``train=False``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One architecture: its model class, its size presets (``tiny`` for a laptop CPU, ``published``
    the paper's / timm's size), the timm model the ``published`` preset equals, where our module
    paths differ from timm's parameter names ``rename(our dotted module path) -> timm's``, and the
    path of the classifier."""

    name: str
    model: type
    presets: dict
    timm_name: str
    rename: Optional[Callable[[str], str]] = None
    classifier: str = "fc"  # our dotted path of the final Linear (kept fresh when the class count differs)
    skip_prefixes: tuple[str, ...] = ()   # checkpoint tensors the member does not build (InceptionV3's AuxLogits)
    min_size: int = 32      # smallest input side the published preset accepts
