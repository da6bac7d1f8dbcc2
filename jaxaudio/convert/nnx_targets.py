"""Where each PyTorch tensor goes in an nnx model: the walk that the name-mapped importers share.

The timm and FunASR importers name our submodules so that a dotted module path, renamed, is the
torch module's prefix; the leaf's torch name and its layout then follow from our layer type:

    nnx.Conv       kernel (k..., in/groups, out) <- weight (out, in/groups, k...); bias
    nnx.Linear     kernel (in, out) <- weight (out, in) (or a 1x1 conv's (out, in, 1, 1)); bias
    nnx.BatchNorm  scale <- weight, bias, mean <- running_mean, var <- running_var
    nnx.LayerNorm, nnx.GroupNorm   scale <- weight, bias
    nnx.Embed      embedding <- weight (as is)
    other Params   the same name and shape
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import numpy as np
from flax import nnx

LEAVES = {
    nnx.Conv: {"kernel": "weight", "bias": "bias"},
    nnx.Linear: {"kernel": "weight", "bias": "bias"},
    nnx.BatchNorm: {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"},
    nnx.LayerNorm: {"scale": "weight", "bias": "bias"},
    nnx.GroupNorm: {"scale": "weight", "bias": "bias"},
    nnx.Embed: {"embedding": "weight"},
}


@dataclasses.dataclass(frozen=True)
class Target:
    """One parameter (or batch statistic) of ours and the torch leaf name it takes."""
    path: tuple
    variable: nnx.Variable
    kind: Optional[type]      # the LEAVES layer type that owns it, None for a bare parameter
    module: str               # our dotted module path, e.g. "encoder.encoders.0.attention.query"
    leaf: str                 # our leaf name, e.g. "kernel"
    torch_leaf: str           # torch's, e.g. "weight"

    @property
    def label(self) -> str:
        return "/".join(str(p) for p in self.path)

    def torch_name(self, prefix: str) -> str:
        """The full torch name under the (renamed) module ``prefix``."""
        return f"{prefix}.{self.torch_leaf}" if prefix else self.torch_leaf

    @property
    def shape(self) -> tuple:
        return tuple(self.variable.get_value().shape)

    def assign(self, array: np.ndarray) -> None:
        self.variable.set_value(array.astype(self.variable.get_value().dtype))


def targets(model: nnx.Module, state) -> Iterator[Target]:
    """Every ``nnx.Param`` / ``nnx.BatchStat`` of ``state`` (``nnx.state(model)``; update the
    model from it afterwards), RNG state and the like left out."""
    owners = {tuple(path): type(module) for path, module in nnx.iter_modules(model)}
    for path, variable in nnx.to_flat_state(state):
        if not isinstance(variable, (nnx.Param, nnx.BatchStat)):
            continue
        owner, leaf = tuple(path[:-1]), str(path[-1])
        kind = next((k for k in LEAVES if issubclass(owners.get(owner, object), k)), None)
        torch_leaf = LEAVES[kind].get(leaf, leaf) if kind is not None else leaf
        yield Target(tuple(path), variable, kind, ".".join(str(p) for p in owner), leaf, torch_leaf)


def torch_layout(kind: Optional[type], leaf: str, array: np.ndarray) -> np.ndarray:
    """A torch tensor in our layout for a ``leaf`` of layer type ``kind`` (module docstring)."""
    if leaf == "kernel" and kind is nnx.Conv and array.ndim >= 3:
        return array.transpose(*range(2, array.ndim), 1, 0)
    if leaf == "kernel" and kind is nnx.Linear and array.ndim == 4 and array.shape[2:] == (1, 1):
        array = array[:, :, 0, 0]     # a 1x1-conv classifier (timm ResNetV2's head) is a Linear
    if leaf == "kernel" and kind is nnx.Linear and array.ndim == 2:
        return array.T
    return array
