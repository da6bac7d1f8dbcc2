"""Rows routed by machine type, for modules that hold one network per machine type (GeCo's PAEs,
the DCASE2020 autoencoder bank).

A batch mixes machine types; each row's ID class names its type through a class -> type table
(``experiments/asd/data.py: class_types``). Training sums each network's mean over its own rows,
so every network's gradient is that of its own per-type training; inference takes each row from
its own type's network.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def row_types(class_types: Sequence[int], class_id: jax.Array) -> jax.Array:
    """``(batch,)`` int32: the machine type of each row's ID class (``class_types[class_id]``)."""
    return jnp.asarray(class_types, jnp.int32)[jnp.asarray(class_id, jnp.int32)]


def own_rows_mean(values: jax.Array, types: jax.Array, k: int) -> jax.Array:
    """The mean of ``values (batch,)`` over the rows of type ``k``; 0 when the batch has none."""
    mine = (types == k).astype(jnp.float32)
    return jnp.sum(values * mine) / jnp.maximum(jnp.sum(mine), 1.0)


def own_type_rows(per_type: Sequence[jax.Array], types: jax.Array) -> jax.Array:
    """Row i of ``per_type[types[i]]``: ``per_type`` holds one ``(batch, ...)`` output per type."""
    out = jnp.zeros_like(per_type[0])
    for k, values in enumerate(per_type):
        mine = (types == k).reshape((-1,) + (1,) * (values.ndim - 1))
        out = jnp.where(mine, values, out)
    return out
