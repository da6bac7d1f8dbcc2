"""The device mesh and how a batch is laid out on it.

One mesh with axes ``('data', 'fsdp', 'tensor')`` serves every kind of parallelism:
data-parallel, FSDP and tensor-parallel differ only in the axis sizes. The batch's
leading axis is split over ``('data', 'fsdp')`` (FSDP shards parameters *and* batch);
the ``tensor`` axis sees the whole per-group batch.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxaudio.errors import ConfigError

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(num_devices: int, data: int = -1, fsdp: int = 1, tensor: int = 1) -> tuple[int, int, int]:
    """Turn the configured sizes (one may be -1) into three sizes whose product is ``num_devices``."""
    sizes = {"mesh.data": int(data), "mesh.fsdp": int(fsdp), "mesh.tensor": int(tensor)}
    free = [key for key, size in sizes.items() if size == -1]
    bad = [key for key, size in sizes.items() if size == 0 or size < -1]
    described = ", ".join(f"{k}={v}" for k, v in sizes.items())
    if bad:
        raise ConfigError(f"{', '.join(bad)} must be a positive size or -1 (got {described})")
    if len(free) > 1:
        raise ConfigError(f"only one of mesh.data/mesh.fsdp/mesh.tensor may be -1 (got {described})")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise ConfigError(
                f"{described}: the fixed sizes multiply to {fixed}, which does not divide the "
                f"{num_devices} devices, so {free[0]}=-1 cannot fill the rest"
            )
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ConfigError(
            f"{described}: mesh.data*mesh.fsdp*mesh.tensor = {fixed} but there are {num_devices} "
            "devices; set one of them to -1 to fill the rest"
        )
    return sizes["mesh.data"], sizes["mesh.fsdp"], sizes["mesh.tensor"]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
    """Build the ``('data', 'fsdp', 'tensor')`` mesh over ``devices`` (default: all global devices).

    Axes are ``Auto`` so that jit's ``in_shardings``/``out_shardings`` decide the layout and
    the model code stays free of sharding annotations.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(len(devices), data, fsdp, tensor)
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def batch_axis_size(mesh: Mesh) -> int:
    """How many shards the batch's leading axis is cut into; the global batch must divide by it."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over ``('data', 'fsdp')``, every other axis replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full value on every device (scalars, RNG keys, metrics)."""
    return NamedSharding(mesh, P())


def process_batch_slice(mesh: Mesh, global_batch_size: int) -> slice:
    """The rows of each global batch that *this process* must load and feed.

    Data loaders use this so that every process reads a disjoint part of the batch and
    ``global_batch`` can assemble the whole batch from the local parts.
    """
    shards = batch_axis_size(mesh)
    if global_batch_size % shards:
        raise ConfigError(
            f"data.batch_size={global_batch_size} must be divisible by mesh.data*mesh.fsdp={shards}"
        )
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
    rows = sorted({(idx[0].start or 0, idx[0].stop or global_batch_size) for idx in index_map.values()})
    start, stop = rows[0][0], rows[-1][1]
    covered = sum(b - a for a, b in rows)
    if covered != stop - start:
        raise ConfigError(
            "this process's devices hold non-contiguous rows of the batch; build the mesh with "
            "make_mesh (process-major device order) so each process feeds one block of rows"
        )
    return slice(start, stop)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble the global batch from this process's rows (see ``process_batch_slice``).

    Every process must call this with arrays of the same shapes in the same order; on one
    process the local batch is the global batch.
    """
    sharding = batch_sharding(mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for key, value in local_batch.items()
    }
