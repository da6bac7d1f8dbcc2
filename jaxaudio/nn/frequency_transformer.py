"""AST-SED's frequency-wise Transformer encoder (FTE): one vector per time step from its patches.

Mean pooling over frequency (AST-GRU, MAT-SED) treats every band alike; the FTE lets each time
step attend over its frequency patches instead (Li et al., ICASSP 2023; Transformer4SED
``src/models/ast/ast_models.py`` ``AST_SED``, ``f_pool='frequency_wise_tranformer_encoder'``)::

    grid (batch, F, T, dim) -> per time step t: [tag, patch_(0,t), ..., patch_(F-1,t)]  (F + 1 tokens)
      -> ``depth`` pre-norm Transformer blocks (``heads`` heads, MLP ``mlp_ratio`` x dim, no qkv bias)
      -> LayerNorm -> the tag token's output -> (batch, T, dim)

The tag token is a learned ``Linear(1 -> dim)`` applied to the constant 1 (the reference's
``linear_emb(torch.ones(...))``), so it is ``kernel[0] + bias``; kept as a Linear so that the
authors' weights map one to one. The reference's blocks are timm 0.4.5 ``Block`` with its defaults
(``qkv_bias=False``, ``nn.LayerNorm`` eps 1e-5, exact GELU); the heads do not attend across time:
time steps are batch rows here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.attention import TransformerBlock
from jaxaudio.nn.cnn import torch_uniform


def _torch_dense(rngs: nnx.Rngs):
    """``torch.nn.Linear``'s default init for the blocks' projections (timm's Block outside a ViT)."""

    def dense(name: str, fan_in: int, fan_out: int, *, use_bias: bool = True) -> nnx.Linear:
        init = torch_uniform(fan_in)
        return nnx.Linear(fan_in, fan_out, use_bias=use_bias, kernel_init=init, bias_init=init, rngs=rngs)

    return dense


class FrequencyTransformer(nnx.Module):
    """``(batch, F, T, dim)`` patch grid -> ``(batch, T, dim)``, one tag-token output per time step."""

    def __init__(self, dim: int, *, depth: int = 2, heads: int = 4, mlp_ratio: float = 4.0,
                 norm_eps: float = 1e-5, rngs: nnx.Rngs):
        if depth < 1 or heads < 1 or dim % heads:
            raise ConfigError(f"frequency transformer: depth={depth}, heads={heads} for width {dim}; expected "
                              "depth >= 1 and heads dividing the width")
        self.dim = dim
        self.tag_embed = nnx.Linear(1, dim, kernel_init=torch_uniform(1), bias_init=torch_uniform(1), rngs=rngs)
        dense = _torch_dense(rngs)
        self.blocks = nnx.List([
            TransformerBlock(dim, heads, int(dim * mlp_ratio), norm_eps=norm_eps, qkv_bias=False, dense=dense,
                             rngs=rngs)
            for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)

    def __call__(self, grid: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        if grid.ndim != 4 or grid.shape[-1] != self.dim:
            raise ConfigError(f"frequency transformer input has shape {grid.shape}; expected (batch, F, T, {self.dim})")
        batch, n_freq, n_time, dim = grid.shape
        rows = jnp.swapaxes(grid, 1, 2).reshape(batch * n_time, n_freq, dim)  # one row per time step
        tag = self.tag_embed(jnp.ones((1, 1), grid.dtype))                   # (1, dim)
        x = jnp.concatenate([jnp.broadcast_to(tag[None], (rows.shape[0], 1, dim)), rows], axis=1)
        for block in self.blocks:
            x = block(x, train=train, rngs=rngs)
        return self.norm(x)[:, 0].reshape(batch, n_time, dim)
