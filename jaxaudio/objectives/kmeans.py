"""k-means in JAX: k-means++ seeding, Lloyd iterations and one-hot pseudo labels.

PMAM's alternative to GMM posteriors is a hard (one-hot) prototype label per frame; k-means++
also seeds the GMM. Both need to stream (N, D) frame features that may not fit one device, so
this file also holds the small row machinery the GMM shares: rows are padded to whole chunks,
sharded over the mesh's 'data' axis, reduced chunk by chunk on each device and summed across
devices (and hosts) with ``psum``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxaudio.errors import ConfigError

DATA_AXIS = "data"


class Rows(NamedTuple):
    """Feature rows laid out for chunked, sharded reduction.

    x: (n_chunks, chunk, dim) float32, padded with zero rows at the end; sharded on axis 0
       over the mesh's 'data' axis when a mesh is given. chunk ≤ the requested chunk_size,
       balanced so the padding is less than one row per chunk.
    valid: (n_chunks, chunk) float32, 1 for real rows and 0 for padding, so sums ignore padding.
    n_valid: number of real rows (a Python int).
    """

    x: jax.Array
    valid: jax.Array
    n_valid: int


def check_features(x: Any, name: str = "x") -> tuple[int, int]:
    """Return (rows, dim) of a 2-D feature array, or raise ConfigError naming the argument."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ConfigError(f"{name}: expected a non-empty (frames, dim) array, got shape {shape}")
    return int(shape[0]), int(shape[1])


def data_shards(mesh) -> int:
    """How many row shards a mesh gives (its 'data' axis), 1 without a mesh."""
    if mesh is None:
        return 1
    if DATA_AXIS not in mesh.axis_names:
        raise ConfigError(f"mesh: needs a '{DATA_AXIS}' axis to shard rows over, has {mesh.axis_names}")
    return int(mesh.shape[DATA_AXIS])


def prepare_rows(x: Any, *, mesh=None, chunk_size: int = 2048) -> Rows:
    """Pad (N, D) features to whole chunks per shard and lay them out as (n_chunks, chunk, D)."""
    n, _ = check_features(x)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size: must be >= 1, got {chunk_size}")
    shards = data_shards(mesh)
    per_shard = -(-n // shards)
    n_chunks = -(-per_shard // chunk_size)
    chunk = -(-per_shard // n_chunks)  # balanced: under one padding row per chunk, not a chunk
    per_shard = n_chunks * chunk
    n_pad = per_shard * shards
    out_sharding = None if mesh is None else NamedSharding(mesh, P(DATA_AXIS))

    @functools.partial(jax.jit, out_shardings=out_sharding)
    def layout(x):
        x = jnp.pad(jnp.asarray(x, jnp.float32), ((0, n_pad - n), (0, 0)))
        return x.reshape(n_pad // chunk, chunk, x.shape[1])

    valid = (np.arange(n_pad) < n).astype(np.float32).reshape(n_pad // chunk, chunk)
    valid = jax.device_put(valid, out_sharding) if mesh is not None else jnp.asarray(valid)
    return Rows(layout(x), valid, n)


def flat_rows(rows_x: jax.Array) -> jax.Array:
    """(n_chunks, chunk, D) -> (n_chunks * chunk, D); real rows first, padding last."""
    return rows_x.reshape(-1, rows_x.shape[-1])


def reduce_rows(stat_fn: Callable, x: jax.Array, valid: jax.Array, params: Any, mesh=None):
    """Sum ``stat_fn(x_chunk, valid_chunk, params)`` over all chunks of all shards.

    Call inside jit. Each device scans its own chunks (so memory stays at one chunk's
    intermediates); with a mesh the per-device sums are added across the 'data' axis.
    """

    def local(x, valid, params, varying=False):
        first = jax.eval_shape(stat_fn, x[0], valid[0], params)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
        if varying:  # the per-device sums differ across 'data'; the scan carry must say so
            zeros = jax.lax.pcast(zeros, (DATA_AXIS,), to="varying")

        def body(total, chunk):
            part = stat_fn(chunk[0], chunk[1], params)
            return jax.tree.map(jnp.add, total, part), None

        total, _ = jax.lax.scan(body, zeros, (x, valid))
        return total

    if mesh is None:
        return local(x, valid, params)

    def per_shard(x, valid, params):
        return jax.lax.psum(local(x, valid, params, varying=True), DATA_AXIS)

    return jax.shard_map(
        per_shard, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS), P()), out_specs=P()
    )(x, valid, params)


def squared_distances(x: jax.Array, centres: jax.Array) -> jax.Array:
    """(N, D), (K, D) -> (N, K) squared Euclidean distances via one matmul, clipped at 0."""
    x_sq = jnp.sum(x * x, axis=1, keepdims=True)
    c_sq = jnp.sum(centres * centres, axis=1)
    return jnp.maximum(x_sq - 2.0 * (x @ centres.T) + c_sq[None, :], 0.0)


# --------------------------------------------------------------------------------------------
# k-means++ seeding
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k", "n_valid", "n_trials", "replicated"))
def _kmeans_plusplus_flat(key, x, k: int, n_valid: int, n_trials: int, replicated=None):
    """Greedy k-means++ on rows x[:n_valid] (rows after n_valid are padding and never chosen).

    Candidates are drawn by inverse CDF over the cumulative D² weights, so the choice does not
    depend on how much padding follows the real rows (sharded and unsharded fits agree).
    ``replicated``: when x is sharded on rows, the (N,) D² vector is gathered to every device
    (N floats, cheap) so the cumulative sum can run; x itself stays sharded.
    """
    n_rows = x.shape[0]
    valid = (jnp.arange(n_rows) < n_valid).astype(x.dtype)
    x_sq = jnp.sum(x * x, axis=1)
    key, first_key = jax.random.split(key)
    first = jax.random.randint(first_key, (1,), 0, n_valid)

    def take(indices):  # rows of x; a one-hot matmul also works when x is sharded on rows
        one_hot = jax.nn.one_hot(indices, n_rows, dtype=x.dtype)
        return jnp.matmul(one_hot, x, precision=jax.lax.Precision.HIGHEST)

    def dist_to(rows):  # (T, D) -> (T, N)
        r_sq = jnp.sum(rows * rows, axis=1)
        return jnp.maximum(r_sq[:, None] - 2.0 * (rows @ x.T) + x_sq[None, :], 0.0) * valid

    first_row = take(first)
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first_row[0])
    closest = dist_to(first_row)[0]

    def step(i, carry):
        centres, closest = carry
        if replicated is not None:
            closest = jax.sharding.reshard(closest, replicated)
        cumulative = jnp.cumsum(closest)
        total = cumulative[-1]
        u = jax.random.uniform(jax.random.fold_in(key, i), (n_trials,)) * total
        candidates = jnp.searchsorted(cumulative, u, side="right")
        # All remaining D² are zero (duplicate points): fall back to uniform picks.
        uniform = jax.random.randint(jax.random.fold_in(key, -i), (n_trials,), 0, n_valid)
        candidates = jnp.where(total > 0, jnp.minimum(candidates, n_valid - 1), uniform)
        rows = take(candidates)
        trial = jnp.minimum(closest[None, :], dist_to(rows))
        best = jnp.argmin(jnp.sum(trial, axis=1))
        return centres.at[i].set(rows[best]), trial[best]

    centres, _ = jax.lax.fori_loop(1, k, step, (centres, closest))
    return centres


def default_local_trials(k: int) -> int:
    """Greedy k-means++ tries 2 + ln(k) candidates per centre (Arthur & Vassilvitskii)."""
    return 2 + int(math.log(k))


def kmeans_plusplus(key: jax.Array, x: Any, k: int, *, n_local_trials: int | None = None) -> jax.Array:
    """k-means++ seeds: (N, D) rows -> (k, D) centres, each a row of x; deterministic in key."""
    n, _ = check_features(x)
    if not 1 <= k <= n:
        raise ConfigError(f"n_components: must be between 1 and the number of rows ({n}), got {k}")
    trials = default_local_trials(k) if n_local_trials is None else n_local_trials
    return _kmeans_plusplus_flat(key, jnp.asarray(x, jnp.float32), k, n, trials)


def kmeans_plusplus_rows(key: jax.Array, rows: Rows, k: int, n_local_trials: int | None = None):
    """k-means++ on already prepared (padded, possibly sharded) rows."""
    if not 1 <= k <= rows.n_valid:
        raise ConfigError(
            f"n_components: must be between 1 and the number of rows ({rows.n_valid}), got {k}"
        )
    trials = default_local_trials(k) if n_local_trials is None else n_local_trials
    sharding = rows.x.sharding
    replicated = NamedSharding(sharding.mesh, P()) if isinstance(sharding, NamedSharding) else None
    return _kmeans_plusplus_flat(key, flat_rows(rows.x), k, rows.n_valid, trials, replicated)


# --------------------------------------------------------------------------------------------
# Lloyd's k-means
# --------------------------------------------------------------------------------------------


@struct.dataclass
class KMeansState:
    """centroids (K, D); inertia: sum of squared distances to the nearest centroid (as
    sklearn's ``inertia_``) for the returned centroids; n_iter; converged."""

    centroids: jax.Array
    inertia: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _assignment_stats(x, valid, centroids):
    d2 = squared_distances(x, centroids)
    one_hot = jax.nn.one_hot(jnp.argmin(d2, axis=1), centroids.shape[0], dtype=x.dtype)
    one_hot = one_hot * valid[:, None]
    return {
        "count": jnp.sum(one_hot, axis=0),
        "sum": one_hot.T @ x,
        "inertia": jnp.sum(jnp.min(d2, axis=1) * valid),
    }


@functools.partial(jax.jit, static_argnames=("mesh",))
def _lloyd(x, valid, centroids, max_iter, shift_tol, mesh=None):
    def cond(carry):
        _, n_iter, converged = carry
        return (n_iter < max_iter) & ~converged

    def body(carry):
        centroids, n_iter, _ = carry
        stats = reduce_rows(_assignment_stats, x, valid, centroids, mesh)
        count = stats["count"][:, None]
        # An empty cluster keeps its centre (sklearn relocates it; rare with k-means++ seeds).
        new = jnp.where(count > 0, stats["sum"] / jnp.maximum(count, 1.0), centroids)
        shift = jnp.sum((new - centroids) ** 2)
        return new, n_iter + 1, shift <= shift_tol

    centroids, n_iter, converged = jax.lax.while_loop(
        cond, body, (centroids, jnp.int32(0), jnp.bool_(False))
    )
    inertia = reduce_rows(_assignment_stats, x, valid, centroids, mesh)["inertia"]
    return KMeansState(centroids, inertia, n_iter, converged)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _mean_feature_variance(x, valid, n_valid, mesh=None):
    """Mean over features of the per-feature variance, in two passes (mean, then squares about
    it) so float32 does not lose it to cancellation."""
    mean = reduce_rows(lambda xc, vc, _: vc @ xc, x, valid, None, mesh) / n_valid
    squares = reduce_rows(lambda xc, vc, m: vc @ ((xc - m) ** 2), x, valid, mean, mesh)
    return jnp.mean(squares / n_valid)


def kmeans(
    x: Any,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    init_centroids: Any = None,
    mesh=None,
    chunk_size: int = 4096,
) -> KMeansState:
    """Lloyd's k-means seeded by k-means++; stops when the total squared centre shift is at most
    ``tol`` times the mean per-feature variance (sklearn's rule). Rows shard over 'data'."""
    if max_iter < 1:
        raise ConfigError(f"max_iter: must be >= 1, got {max_iter}")
    rows = prepare_rows(x, mesh=mesh, chunk_size=chunk_size)
    if init_centroids is None:
        init_centroids = kmeans_plusplus_rows(jax.random.PRNGKey(seed), rows, k)
    init_centroids = jnp.asarray(init_centroids, jnp.float32)
    if init_centroids.shape != (k, rows.x.shape[-1]):
        raise ConfigError(
            f"init_centroids: expected shape {(k, rows.x.shape[-1])}, got {init_centroids.shape}"
        )
    shift_tol = tol * _mean_feature_variance(rows.x, rows.valid, rows.n_valid, mesh=mesh)
    return _lloyd(rows.x, rows.valid, init_centroids, max_iter, shift_tol, mesh=mesh)


@jax.jit
def one_hot_labels(centroids: jax.Array, x: jax.Array) -> jax.Array:
    """(N, D) -> (N, K) one-hot frame labels of the nearest centroid (PMAM's hard alternative)."""
    d2 = squared_distances(jnp.asarray(x, jnp.float32), centroids)
    return jax.nn.one_hot(jnp.argmin(d2, axis=1), centroids.shape[0], dtype=jnp.float32)
