"""Test models with weights drawn in numpy: eager JAX compiles every initializer shape apart, which
the CNN-zoo and GeCo tests need not pay for (the models' own init is tested where it matters)."""
from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx

BATCHNORM_AT_INIT = {"scale": 1.0, "var": 1.0}


def with_numpy_weights(model: nnx.Module, seed: int = 0, *, fill=None, kernels=("kernel",)) -> nnx.Module:
    """``model`` (e.g. from ``nnx.eval_shape``) with He-normal ``kernels`` (N(0, 2 / fan-in)) and every
    other leaf at ``fill[leaf]`` (default: BatchNorm / LayerNorm scales and variances 1), else 0."""
    fill = BATCHNORM_AT_INIT if fill is None else fill
    rng = np.random.default_rng(seed)
    state = nnx.state(model)
    for path, var in nnx.to_flat_state(state):
        shape, leaf = var.get_value().shape, str(path[-1])
        if leaf in kernels:
            value = rng.normal(size=shape) * np.sqrt(2.0 / math.prod(shape[:-1]))
        else:
            value = np.full(shape, fill.get(leaf, 0.0))
        var.set_value(jax.device_put(value.astype(np.float32)))   # jnp.asarray would compile a program per shape
    nnx.update(model, state)
    return model
