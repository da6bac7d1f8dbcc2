"""Low-rank adapters (LoRA) on dense layers, and the filters that freeze everything else.

``LoRALinear`` is an ``nnx.Linear`` (same ``kernel``/``bias`` names, so sharding rules and
weight converters see an ordinary dense layer) with an optional low-rank update::

    y = x @ kernel + bias + (alpha / rank) * (x @ lora_a) @ lora_b

``lora_a`` is ``(in, rank)`` and ``lora_b`` ``(rank, out)``. As in ``loralib`` (used by
Transformer4SED's PaSST-LoRA), ``lora_b`` starts at zero, so a fresh adapter leaves the model
unchanged, and ``lora_a`` starts U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's kaiming_uniform with
a=sqrt(5)). Converting loralib tensors: ``lora_A (rank, in) -> lora_a = lora_A.T`` and
``lora_B (out, rank) -> lora_b = lora_B.T``.

Freezing the base weights is the optimizer's job (the model stays a pure function): give
``lora_param_groups(...)`` to ``jaxaudio.train.optim.make_optimizer`` or filter paths with
``is_lora_path``.
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import torch_uniform

# Matches adapter parameters in '/'-joined parameter paths ('blocks/3/attention/query/lora_a').
LORA_PATH_PATTERN = r"(^|/)lora_(a|b)$"


class LoRALinear(nnx.Linear):
    """``nnx.Linear`` plus a rank-``rank`` update scaled by ``alpha / rank``; ``rank=0``: plain dense."""

    def __init__(self, in_features: int, out_features: int, *, rank: int = 0, alpha: float = 1.0,
                 rngs: nnx.Rngs, **linear_kwargs: Any):
        super().__init__(in_features, out_features, rngs=rngs, **linear_kwargs)
        if rank < 0:
            raise ConfigError(f"lora_rank={rank}; expected 0 (off) or a positive rank")
        self.rank = int(rank)
        self.scaling = float(alpha) / rank if rank else 0.0
        if rank:
            self.lora_a = nnx.Param(torch_uniform(in_features)(rngs.params(), (in_features, rank)))
            self.lora_b = nnx.Param(jnp.zeros((rank, out_features)))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        if self.rank:
            y = y + self.scaling * ((x @ self.lora_a[...]) @ self.lora_b[...])
        return y

    def merged_kernel(self) -> jax.Array:
        """``kernel + (alpha/rank) A B``: the dense weight an exporter can ship without adapters."""
        if not self.rank:
            return self.kernel[...]
        return self.kernel[...] + self.scaling * (self.lora_a[...] @ self.lora_b[...])


def merge_adapters(model: nnx.Module) -> int:
    """Fold every adapter of ``model`` into its kernel (``merged_kernel``) and zero its ``lora_b``,
    in place; the function the model computes is unchanged. Transformer4SED fine-tunes PaSST
    with merged weights (loralib merges in eval mode, and fine-tuning builds PaSST without
    adapters); freeze the adapters afterwards so they stay out. Returns the layers merged."""
    merged = 0
    for _, module in model.iter_modules():
        if isinstance(module, LoRALinear) and module.rank:
            module.kernel.value = module.merged_kernel()
            module.lora_b.value = jnp.zeros_like(module.lora_b.value)
            merged += 1
    return merged


def is_lora_path(path) -> bool:
    """True for adapter parameters; ``path`` is a '/'-joined string or a tuple of path keys."""
    if not isinstance(path, str):
        parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        while parts and parts[-1] in ("value", "raw_value"):
            parts.pop()
        path = "/".join(parts)
    return re.search(LORA_PATH_PATTERN, path) is not None


def lora_param_groups(prefix: str, lr: float, *, weight_decay: float = 0.0, schedule=None) -> list[dict]:
    """Optimizer groups training only the adapters under ``prefix`` (a regex such as ``'^encoder/'``).

    The first group trains ``lora_a``/``lora_b``; the second freezes every other parameter
    under ``prefix`` (first match wins in ``make_optimizer``). Put them before broader groups.
    """
    adapters = {"pattern": f"{prefix}(.*/)?lora_(a|b)$", "lr": lr, "weight_decay": weight_decay,
                "name": "lora"}
    if schedule is not None:
        adapters["schedule"] = schedule
    return [adapters, {"pattern": prefix, "lr": 0.0, "name": "lora_frozen_base"}]
