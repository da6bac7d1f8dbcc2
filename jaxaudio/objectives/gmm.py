"""Full-covariance Gaussian mixture (EM) in JAX: PMAM's prototypes and soft frame labels.

PMAM fits K=30 full-covariance Gaussians to 768-d frame features and uses the posteriors
γ_k(z) as soft pseudo labels. The fit must stream ~1e5 frames and shard them over devices, so:

* E step in the log domain: log N(x|μ,Σ) = -½(D log 2π + ||(x-μ)ᵀL||²) + log|L| with
  L = chol(Σ⁻¹) (the "precision Cholesky"); posteriors through logsumexp, so float32 is enough.
* M step from sufficient statistics (Σγ, Σγ(x-c), Σγ(x-c)(x-c)ᵀ) summed chunk by chunk on
  each device and added across devices with psum. They are taken about the current means c
  (not the origin), so the covariance is not lost to cancellation in float32.
* Both steps skip what cannot change a float32 result: the zero half of the triangular L and
  the mirrored half of the symmetric moment, and (frame, component) pairs whose posterior
  is provably 0 in float32 ("E and M steps" below): on well-separated components an order
  of magnitude fewer FLOPs than the plain 4·N·K·D² per iteration, same log-likelihood.
* Stops when the mean per-frame log-likelihood changes by less than ``tol`` (sklearn's rule).

Optional PCA in front (``pca_dim``) as in PMAM's gmm script.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxaudio.errors import ConfigError
from jaxaudio.objectives.kmeans import (
    Rows,
    check_features,
    kmeans,
    kmeans_plusplus,
    kmeans_plusplus_rows,
    prepare_rows,
    reduce_rows,
    squared_distances,
)

__all__ = [
    "GMMConfig",
    "GMMState",
    "PCAState",
    "fit_gmm",
    "initial_state",
    "predict_proba",
    "log_likelihood",
    "means_in_input_space",
    "fit_pca",
    "apply_pca",
    "kmeans_plusplus",
]

_INITS = ("kmeans++", "kmeans")


@dataclasses.dataclass(frozen=True)
class GMMConfig:
    """n_components: prototypes K (PMAM: 30). tol: on the change of the mean per-frame
    log-likelihood. reg_covar: added to every covariance diagonal. init: 'kmeans++' seeds the
    means directly, 'kmeans' refines them with Lloyd first. pca_dim: project features first.
    chunk_size: rows per device per step; memory ≈ 3·chunk·(D + 3K) + 3·K·1024·D floats (the
    dense parts run in blocks of 1024 rows). prune: skip (frame, component) pairs whose posterior is
    provably 0 in float32 (see "E and M steps"); same result, far fewer FLOPs when the
    components are well apart; used where D ≥ 64 and K - 1 ≤ D/2; False runs every pair."""

    n_components: int = 30
    max_iter: int = 100
    tol: float = 1e-3
    reg_covar: float = 1e-6
    init: str = "kmeans++"
    seed: int = 0
    pca_dim: Optional[int] = None
    chunk_size: int = 16384
    prune: bool = True

    def validate(self, n: int, dim: int) -> None:
        if not 1 <= self.n_components <= n:
            raise ConfigError(
                f"GMMConfig.n_components: must be between 1 and the number of frames ({n}), "
                f"got {self.n_components}"
            )
        if self.max_iter < 1:
            raise ConfigError(f"GMMConfig.max_iter: must be >= 1, got {self.max_iter}")
        if not self.tol >= 0:
            raise ConfigError(f"GMMConfig.tol: must be >= 0, got {self.tol}")
        if not self.reg_covar >= 0:
            raise ConfigError(f"GMMConfig.reg_covar: must be >= 0, got {self.reg_covar}")
        if self.init not in _INITS:
            raise ConfigError(f"GMMConfig.init: must be one of {_INITS}, got {self.init!r}")
        if self.pca_dim is not None and not 1 <= self.pca_dim <= dim:
            raise ConfigError(f"GMMConfig.pca_dim: must be between 1 and {dim}, got {self.pca_dim}")
        if self.chunk_size < 1:
            raise ConfigError(f"GMMConfig.chunk_size: must be >= 1, got {self.chunk_size}")


@struct.dataclass
class PCAState:
    """mean (D,); components (dim, D) orthonormal rows, largest variance first;
    explained_variance (dim,) with the N-1 denominator (as numpy/sklearn)."""

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array


@struct.dataclass
class GMMState:
    """A fitted mixture. weights (K,), means (K, D), covariances (K, D, D) (reg_covar included),
    precisions_cholesky (K, D, D) upper triangular with Σ⁻¹ = L Lᵀ (sklearn's layout),
    log_likelihood: mean per-frame log-likelihood of the returned parameters, n_iter: EM
    iterations run, converged. pca: the projection applied before the mixture, or None
    (then D is the feature dim)."""

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    pca: Optional[PCAState] = None


# --------------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("dim",))
def _pca(x, dim: int):
    mean = jnp.mean(x, axis=0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    eigvals, eigvecs = jnp.linalg.eigh(cov)
    order = jnp.argsort(eigvals)[::-1][:dim]
    components = eigvecs[:, order].T
    # Fix the sign so the fit is deterministic: largest-magnitude loading positive.
    pivot = jnp.take_along_axis(components, jnp.argmax(jnp.abs(components), axis=1)[:, None], 1)
    components = components * jnp.sign(pivot)
    return PCAState(mean, components, eigvals[order])


def fit_pca(x: Any, dim: int) -> PCAState:
    """PCA of (N, D) features to ``dim`` components via the D×D covariance (cheap for N ≫ D)."""
    n, d = check_features(x)
    if not 1 <= dim <= d:
        raise ConfigError(f"pca_dim: must be between 1 and {d}, got {dim}")
    if n < 2:
        raise ConfigError(f"x: PCA needs at least 2 rows, got {n}")
    return _pca(jnp.asarray(x, jnp.float32), dim)


@jax.jit
def apply_pca(pca: PCAState, x: jax.Array) -> jax.Array:
    """(N, D) -> (N, dim) projection onto the principal components."""
    return (jnp.asarray(x, jnp.float32) - pca.mean) @ pca.components.T


def means_in_input_space(state: GMMState) -> jax.Array:
    """(K, D_in) prototype means in the original feature space (PMAM compares them to its
    768-d head output); with PCA, the means are mapped back through the components."""
    if state.pca is None:
        return state.means
    return state.means @ state.pca.components + state.pca.mean


# --------------------------------------------------------------------------------------------
# E and M steps
#
# The plain EM iteration costs ≈ 4·N·K·D² FLOPs: (x-μ_k)ᵀL_k for every frame and component in
# the E step, Σγ(x-c)(x-c)ᵀ for every component in the M step. Two things cut that here:
#
# * Triangles. L_k is upper triangular and the second moment symmetric, so both products run
#   in column blocks (≤ 8, ≈ 96 wide) that skip the zero / mirrored blocks: 9/16 of the FLOPs.
#   The E step is one GEMM per column block against all K components at once, (x - x̄) @ [L_k],
#   minus the precomputed (μ_k - x̄) L_k, so no (K, rows, D) difference tensor is formed.
# * Pruning ("prune", on by default). With D = 768 most frames have a posterior that is 1 for
#   one component and 0 in float32 for all others, yet the plain E and M steps pay for all K.
#   Projecting y = L_kᵀ(x - μ_k) onto any orthonormal Q_k gives ||Q_kᵀy||² ≤ ||y||², a lower
#   bound on the Mahalanobis distance and so an upper bound on log p_k(x). Q_k spans the other
#   means as component k whitens them, L_kᵀ(μ_j - μ_k), where the separation between
#   components lies; the bound costs D·(K-1) per pair instead of D²/2. Per frame: the
#   component with the highest bound is computed exactly; every component whose bound is more
#   than _PRUNE_NATS below that exact value has γ < e^-104 < 1.4e-45 (the smallest float32),
#   i.e. exactly the 0 the plain float32 path computes for it, and is skipped; the rest are
#   computed exactly. The kept (frame, component) pairs are grouped by component into tiles
#   of rows, so the work stays GEMMs (rows × D × D): about 2·D² per kept pair in each step
#   instead of 2·K·D² per frame. A chunk where more than K/4 pairs per frame survive runs
#   densely, so overlapping mixtures stay correct and cost about what they cost unpruned.
# --------------------------------------------------------------------------------------------

_DENSE_ROWS = 1024  # rows per dense block: bounds the (K, rows, D) M-step intermediates
_PRUNE_NATS = 104.0  # e^-104 = 6.8e-46: below the smallest float32, so γ is 0 there anyway
_BOUND_SLACK = 1e-3  # relative margin on the bound for float32 rounding of both sides
_HIGHEST = jax.lax.Precision.HIGHEST


def _stat_eps(dtype) -> float:
    # sklearn adds 10·eps to every Σγ so an empty component has a finite mean.
    return 10.0 * float(jnp.finfo(dtype).eps)


def _log_det_cholesky(precisions_cholesky):
    return jnp.sum(jnp.log(jnp.diagonal(precisions_cholesky, axis1=1, axis2=2)), axis=1)


def _column_blocks(dim: int) -> tuple[tuple[int, int], ...]:
    """Column blocks for the triangular products: n ≤ 8 blocks ≥ 64 wide (cost (n+1)/2n)."""
    n = max(1, min(8, dim // 64))
    edges = [dim * i // n for i in range(n + 1)]
    return tuple(zip(edges[:-1], edges[1:]))


def _upper_block_mask(dim: int) -> np.ndarray:
    block = np.zeros(dim, np.int32)
    for i, (lo, hi) in enumerate(_column_blocks(dim)):
        block[lo:hi] = i
    return block[:, None] <= block[None, :]


def _tile_rows(chunk: int, k: int) -> int:
    """Rows per grouped GEMM tile: 128 (GEMM-efficient), smaller when chunk/K is small so
    the last, partly filled tile of each component wastes less."""
    return int(min(128, max(16, 2 ** int(math.log2(max(chunk // k, 1))))))


class _Mixture(NamedTuple):
    """Per-iteration tables of the E step (built once, shared by every chunk)."""

    means: jax.Array  # (K, D)
    prec_chol: jax.Array  # (K, D, D) upper triangular
    const: jax.Array  # (K,) log π_k + log|L_k| - D/2 log 2π
    centre: jax.Array  # (D,) mean of the means; rows are shifted by it before the GEMMs
    blocks: tuple  # per column block (lo, hi): (L[:, :hi, lo:hi] as (hi, K·w), (μ-x̄)L as (K·w,))
    bound: tuple  # (L_k Q_k as (D, K·r), (μ_k-x̄)ᵀL_k Q_k as (K·r,)); r = min(D, K-1)


def _bound_projection(means, prec):
    """(K, D, r) L_k Q_k, Q_k an orthonormal basis of the whitened L_kᵀ(μ_j - μ_k), j ≠ k."""
    k = means.shape[0]
    others = np.array([[j for j in range(k) if j != i] for i in range(k)], np.int32)
    apart = means[others] - means[:, None, :]  # (K, K-1, D)
    whitened = jnp.einsum("kjd,kde->kej", apart, prec, precision=_HIGHEST)  # (K, D, K-1)
    q = _orthonormal_columns(whitened)
    return jnp.einsum("kde,ker->kdr", prec, q, precision=_HIGHEST)


def _mixture(weights, means, precisions_cholesky, bound: bool = True) -> _Mixture:
    k, dim = means.shape
    prec = jnp.triu(precisions_cholesky)  # the block products rely on the zeros below
    const = jnp.log(weights) + _log_det_cholesky(prec) - 0.5 * dim * math.log(2.0 * math.pi)
    centre = jnp.mean(means, axis=0)
    shifted = means - centre

    def tables(w):  # (K, rows, cols) -> GEMM operand (rows, K·cols) and offsets (K·cols,)
        offset = jnp.einsum("kd,kde->ke", shifted[:, : w.shape[1]], w, precision=_HIGHEST)
        return jnp.transpose(w, (1, 0, 2)).reshape(w.shape[1], -1), offset.reshape(-1)

    blocks = tuple(tables(prec[:, :hi, lo:hi]) for lo, hi in _column_blocks(dim))
    bound = tables(_bound_projection(means, prec)) if bound and k > 1 else None
    return _Mixture(means, prec, const, centre, blocks, bound)


def _maha(xc, tables, edges):
    """Σ_blocks ||(x-x̄)[:, :hi] @ W - o||² per component: (rows, K)."""
    rows = xc.shape[0]
    total = None
    for (lo, hi), (w, offset) in zip(edges, tables):
        y = (xc[:, :hi] @ w - offset).reshape(rows, -1, hi - lo)
        part = jnp.sum(y * y, axis=-1)
        total = part if total is None else total + part
    return total


def _dense_log_prob(x, mix: _Mixture):
    """(rows, D) -> (rows, K) log π_k + log N(x | μ_k, Σ_k), all pairs."""
    return mix.const - 0.5 * _maha(x - mix.centre, mix.blocks, _column_blocks(x.shape[1]))


def _bound_log_prob(x, mix: _Mixture):
    """(rows, D) -> (rows, K) upper bound on the log prob (see "Pruning")."""
    if mix.bound is None:  # one component: nothing to prune
        return jnp.broadcast_to(mix.const, (x.shape[0], 1))
    w, offset = mix.bound
    y = ((x - mix.centre) @ w - offset).reshape(x.shape[0], mix.const.shape[0], -1)
    return mix.const - 0.5 * jnp.sum(y * y, axis=-1)


def _row_blocks(rows: int, size: int = _DENSE_ROWS) -> tuple[int, int]:
    n = -(-rows // size)
    return n, -(-rows // n)


def _split_rows(a, n: int, size: int):
    pad = n * size - a.shape[0]
    return jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)).reshape((n, size) + a.shape[1:])


def _map_rows(fn, x):
    """fn over row blocks of ≤ _DENSE_ROWS (bounds memory), outputs concatenated by row."""
    n, size = _row_blocks(x.shape[0])
    if n == 1:
        return fn(x)
    out = jax.lax.map(fn, _split_rows(x, n, size))
    return out.reshape((n * size,) + out.shape[2:])[: x.shape[0]]


def _sum_rows(fn, *arrays):
    """Σ fn(block...) over row blocks of ≤ _DENSE_ROWS of the arrays (padding rows zero)."""
    n, size = _row_blocks(arrays[0].shape[0])
    if n == 1:
        return fn(*arrays)
    blocks = [_split_rows(a, n, size) for a in arrays]
    first = fn(*(b[0] for b in blocks))

    def body(total, block):
        return jax.tree.map(jnp.add, total, fn(*block)), None

    total, _ = jax.lax.scan(body, first, tuple(b[1:] for b in blocks))
    return total


def _dense_moments(x, resp, centres):
    """Moments about ``centres`` from all (K, rows) pairs; s2 holds only the upper column
    blocks (zeros below), completed by _full_second_moment after the sums."""
    diff = x[None, :, :] - centres[:, None, :]
    weighted = diff * resp.T[..., None]
    edges = _column_blocks(x.shape[1])
    parts = [jnp.einsum("kcd,kce->kde", weighted[:, :, lo:hi], diff[:, :, lo:]) for lo, hi in edges]
    return {
        "n": jnp.sum(resp, axis=0),
        "s1": jnp.sum(weighted, axis=1),
        "s2": _upper_blocks(parts, edges),
    }


def _upper_blocks(parts, edges):
    """Row blocks (..., w_i, D - lo_i) of an upper-block matrix -> (..., D, D), zeros below."""
    pad = [((0, 0),) * (p.ndim - 1) + ((lo, 0),) for p, (lo, _) in zip(parts, edges)]
    return jnp.concatenate([jnp.pad(p, w) for p, w in zip(parts, pad)], axis=-2)


def _full_second_moment(s2):
    """Only the upper column blocks are summed (the triangle products); mirror them below."""
    mask = _upper_block_mask(s2.shape[-1])
    return jnp.where(mask, s2, jnp.swapaxes(s2, -1, -2))


def _varying_like(tree, ref):
    """Loop carries built inside shard_map must vary over the mesh axes like the data they
    meet; adding a zero derived from ``ref`` gives them its type (a no-op outside)."""
    zero = jnp.zeros_like(ref.reshape(-1)[0])
    return jax.tree.map(lambda a: a + zero.astype(a.dtype), tree)


def _tile_count(keep, tile: int):
    counts = jnp.sum(keep, axis=0, dtype=jnp.int32)
    return jnp.sum((counts + tile - 1) // tile)


def _tile_capacity(rows: int, k: int, tile: int) -> int:
    # Σ_k ⌈n_k / tile⌉ < rows / tile + K for Σ n_k ≤ rows pairs.
    return -(-rows // tile) + k


def _layout(keep, n_tiles: int, tile: int):
    """Kept (rows, K) pairs -> slots grouped by component in whole tiles: the row of each slot
    (``rows`` = an empty, zero row), each pair's slot, and each component's tile range."""
    rows, k = keep.shape
    counts = jnp.sum(keep, axis=0, dtype=jnp.int32)
    tiles = (counts + tile - 1) // tile
    start = jnp.cumsum(tiles) - tiles
    rank = jnp.cumsum(keep, axis=0, dtype=jnp.int32) - 1
    n_slots = n_tiles * tile
    slot = jnp.where(keep, start[None, :] * tile + rank, n_slots)
    frame = jnp.broadcast_to(jnp.arange(rows, dtype=jnp.int32)[:, None], (rows, k))
    slot_row = jnp.full((n_slots,), rows, jnp.int32).at[slot.reshape(-1)].set(
        frame.reshape(-1), mode="drop"
    )
    return slot_row, slot, start, tiles


def _grouped_log_prob(x, keep, mix: _Mixture, n_tiles: int, tile: int):
    """log prob of the kept (rows, K) pairs, -inf elsewhere; one (tile × D × D) GEMM per tile."""
    rows, dim = x.shape
    edges = _column_blocks(dim)
    slot_row, slot, start, tiles = _layout(keep, n_tiles, tile)
    x_pad = jnp.concatenate([x, jnp.zeros((1, dim), x.dtype)])

    def component(out, comp):
        mean, prec, const, first, count = comp

        def one_tile(t, out):
            idx = jax.lax.dynamic_slice(slot_row, (t * tile,), (tile,))
            diff = x_pad[idx] - mean
            maha = sum(
                jnp.sum(jnp.square(diff[:, :hi] @ prec[:hi, lo:hi]), axis=1) for lo, hi in edges
            )
            return jax.lax.dynamic_update_slice(out, const - 0.5 * maha, (t * tile,))

        return jax.lax.fori_loop(first, first + count, one_tile, out), None

    out = _varying_like(jnp.zeros((n_tiles * tile,), x.dtype), x)
    out, _ = jax.lax.scan(component, out, (mix.means, mix.prec_chol, mix.const, start, tiles))
    return jnp.where(keep, out[jnp.minimum(slot, n_tiles * tile - 1)], -jnp.inf)


def _grouped_moments(x, keep, resp, centres, n_tiles: int, tile: int):
    """Moments about ``centres`` from the kept (rows, K) pairs only (the rest have γ = 0)."""
    rows, dim = x.shape
    slot_row, slot, start, tiles = _layout(keep, n_tiles, tile)
    weight = jnp.zeros((n_tiles * tile,), x.dtype).at[slot.reshape(-1)].set(
        jnp.where(keep, resp, 0.0).reshape(-1), mode="drop"
    )
    x_pad = jnp.concatenate([x, jnp.zeros((1, dim), x.dtype)])
    edges = _column_blocks(dim)

    def component(_, comp):
        centre, first, count = comp

        def one_tile(t, acc):
            idx = jax.lax.dynamic_slice(slot_row, (t * tile,), (tile,))
            w = jax.lax.dynamic_slice(weight, (t * tile,), (tile,))
            diff = x_pad[idx] - centre
            weighted = diff * w[:, None]
            n, s1, s2 = acc
            s2 = tuple(p + weighted[:, lo:hi].T @ diff[:, lo:] for p, (lo, hi) in zip(s2, edges))
            return n + jnp.sum(w), s1 + jnp.sum(weighted, axis=0), s2

        zeros = (
            jnp.zeros((), x.dtype), jnp.zeros((dim,), x.dtype),
            tuple(jnp.zeros((hi - lo, dim - lo), x.dtype) for lo, hi in edges),
        )
        n, s1, s2 = jax.lax.fori_loop(first, first + count, one_tile, _varying_like(zeros, x))
        return None, (n, s1, _upper_blocks(s2, edges))

    _, (n, s1, s2) = jax.lax.scan(component, None, (centres, start, tiles))
    return {"n": n, "s1": s1, "s2": s2}


def _prunes(dim: int, k: int, prune: bool) -> bool:
    """Pruning pays where the bound (D·(K-1) per pair) is cheap next to what it can skip
    (D²/2 per pair and step); small problems take the dense path (and compile faster)."""
    return prune and k > 1 and dim >= 64 and k - 1 <= dim // 2


def _favourites(x, valid, mix: _Mixture, tile: int):
    """The first pass of pruning -> (log prob (rows, K), exact for each frame's favourite under
    the bound and -inf elsewhere; the other pairs the bound cannot rule out; their tile count;
    tiles used so far)."""
    rows, k = x.shape[0], mix.const.shape[0]
    real = (valid > 0)[:, None]
    bound = _map_rows(lambda xb: _bound_log_prob(xb, mix), x)
    first = (jnp.argmax(bound, axis=1)[:, None] == jnp.arange(k)[None, :]) & real
    log_prob = _grouped_log_prob(x, first, mix, _tile_capacity(rows, k, tile), tile)
    best = jnp.max(log_prob, axis=1, keepdims=True)
    slack = _BOUND_SLACK * (jnp.abs(bound) + jnp.abs(best))
    rest = (bound + slack >= best - _PRUNE_NATS) & ~first & real
    return log_prob, rest, _tile_count(rest, tile), _tile_count(first, tile).astype(x.dtype)


def _pruned_log_prob(x, valid, mix: _Mixture, tile: int):
    """(rows, K) log prob, exact for every pair that can matter and -inf for pruned ones
    (dense where more than _rest_capacity pairs survive the bound)."""
    log_prob, rest, n_rest, _ = _favourites(x, valid, mix, tile)
    cap = _rest_capacity(x.shape[0], mix.const.shape[0], tile)

    def sparse(_):
        return jnp.where(rest, _grouped_log_prob(x, rest, mix, cap, tile), log_prob)

    def dense(_):
        return _map_rows(lambda xb: _dense_log_prob(xb, mix), x)

    return jax.lax.cond(n_rest <= cap, sparse, dense, None)


def _rest_capacity(rows: int, k: int, tile: int) -> int:
    # Beyond ~K/4 pairs per frame the grouped tiles cost about what the dense blocks cost.
    return _tile_capacity(rows * max(1, k // 4), k, tile)


def _work(tiles=0.0, dense_rows=0.0, dtype=jnp.float32):
    return {"tiles": jnp.asarray(tiles, dtype), "dense_rows": jnp.asarray(dense_rows, dtype)}


def _dense_em_chunk(x, valid, mix: _Mixture):
    def block(xb, vb):
        log_prob = _dense_log_prob(xb, mix)
        log_norm = jax.nn.logsumexp(log_prob, axis=1)
        resp = jnp.exp(log_prob - log_norm[:, None]) * vb[:, None]
        stats = _dense_moments(xb, resp, mix.means)
        stats["log_likelihood"] = jnp.sum(log_norm * vb)
        return stats

    stats = _sum_rows(block, x, valid)
    stats.update(_work(0.0, x.shape[0], x.dtype))
    return stats


def _pruned_em_chunk(x, valid, mix: _Mixture):
    rows, k = x.shape[0], mix.const.shape[0]
    tile = _tile_rows(rows, k)
    cap = _rest_capacity(rows, k, tile)
    real = valid > 0
    log_prob, rest, n_rest, tiles = _favourites(x, valid, mix, tile)

    def sparse(_):
        lp = jnp.where(rest, _grouped_log_prob(x, rest, mix, cap, tile), log_prob)
        log_norm = jnp.where(real, jax.nn.logsumexp(lp, axis=1), 0.0)
        resp = jnp.where(real[:, None], jnp.exp(lp - log_norm[:, None]), 0.0)
        # γ = 0 in float32 contributes nothing; the kept pairs fit these tiles by construction.
        keep = resp > 0
        stats = _grouped_moments(x, keep, resp, mix.means, _tile_capacity(rows, k, tile) + cap, tile)
        stats["log_likelihood"] = jnp.sum(log_norm)
        used = tiles + n_rest.astype(x.dtype) + _tile_count(keep, tile).astype(x.dtype)
        stats.update(_work(used, 0.0, x.dtype))
        return stats

    def dense(_):
        stats = _dense_em_chunk(x, valid, mix)
        stats["tiles"] = stats["tiles"] + tiles
        return stats

    return jax.lax.cond(n_rest <= cap, sparse, dense, None)


def _log_likelihood_chunk(x, valid, mix: _Mixture, prune: bool = True):
    if _prunes(x.shape[1], mix.const.shape[0], prune):
        log_prob = _pruned_log_prob(x, valid, mix, _tile_rows(x.shape[0], mix.const.shape[0]))
    else:
        log_prob = _map_rows(lambda xb: _dense_log_prob(xb, mix), x)
    return jnp.sum(jnp.where(valid > 0, jax.nn.logsumexp(log_prob, axis=1), 0.0))


def _hard_chunk(x, valid, means):
    """Moments of the hard assignment to the nearest mean (sklearn's start for given means)."""
    rows, k = x.shape[0], means.shape[0]
    nearest = jnp.argmin(_map_rows(lambda xb: squared_distances(xb, means), x), axis=1)
    keep = (nearest[:, None] == jnp.arange(k)[None, :]) & (valid > 0)[:, None]
    tile = _tile_rows(rows, k)
    return _grouped_moments(x, keep, keep.astype(x.dtype), means, _tile_capacity(rows, k, tile), tile)


# Dense linear algebra of the M step, in plain JAX ops rather than jaxlib's LAPACK calls: those
# split a batch over XLA's intra-op thread pool and block waiting for it, which deadlocks when
# several CPU devices (a host mesh) call them at once, and which oversubscribes 2 cores with
# OpenBLAS's own threads (30 Choleskys of 768² took ~1 s instead of ~0.1 s here).

_LEAF = 64  # below this a factor is done column by column; above, recursively by GEMMs


def _inverse_cholesky(a):
    """(K, n, n) symmetric positive definite -> lower-triangular C⁻¹ where a = C Cᵀ.

    Recursive 2×2 blocking: C11⁻¹ from the leading block, C21 = A21 C11⁻ᵀ, the Schur
    complement A22 - C21 C21ᵀ gives C22⁻¹, and C⁻¹ = [[C11⁻¹, 0], [-C22⁻¹ C21 C11⁻¹, C22⁻¹]];
    all but the leaves are GEMMs. NaN where a is not positive definite (as LAPACK)."""
    n = a.shape[-1]
    if n <= _LEAF:
        return _inverse_cholesky_leaf(a)
    h = n // 2
    i11 = _inverse_cholesky(a[:, :h, :h])
    c21 = a[:, h:, :h] @ jnp.swapaxes(i11, 1, 2)
    i22 = _inverse_cholesky(a[:, h:, h:] - c21 @ jnp.swapaxes(c21, 1, 2))
    i21 = -(i22 @ (c21 @ i11))
    top = jnp.concatenate([i11, jnp.zeros((a.shape[0], h, n - h), a.dtype)], axis=2)
    return jnp.concatenate([top, jnp.concatenate([i21, i22], axis=2)], axis=1)


def _inverse_cholesky_leaf(a):
    k, m, _ = a.shape
    index = jnp.arange(m)

    def factor(j, c):  # right-looking: column j of C, then the rank-1 update of the rest
        col = jax.lax.dynamic_index_in_dim(c, j, axis=2, keepdims=False)  # (K, m)
        pivot = jnp.sqrt(jax.lax.dynamic_slice_in_dim(col, j, 1, axis=1))
        col = jnp.where(index >= j, col / pivot, 0.0)
        below = jnp.where(index > j, col, 0.0)
        c = c - below[:, :, None] * below[:, None, :]
        return jnp.where(index[None, None, :] == j, col[:, :, None], c)

    chol = jnp.tril(jax.lax.fori_loop(0, m, factor, a))

    def substitute(j, inv):  # forward substitution, row j of C⁻¹ from the rows above
        row = jax.lax.dynamic_index_in_dim(chol, j, axis=1, keepdims=False)  # (K, m)
        rhs = (index == j).astype(a.dtype) - jnp.einsum("km,kmn->kn", row, inv)
        pivot = jax.lax.dynamic_slice_in_dim(row, j, 1, axis=1)
        return jnp.where(index[None, :, None] == j, (rhs / pivot)[:, None, :], inv)

    return jax.lax.fori_loop(0, m, substitute, jnp.zeros_like(a))


def _orthonormal_columns(a):
    """(K, D, r), r ≤ D -> (K, D, r) orthonormal columns spanning those of ``a`` (Householder
    QR, so orthonormal even where columns are dependent)."""
    k, d, r = a.shape
    index = jnp.arange(d)

    def reflect(v, b):  # (I - 2vvᵀ) b for unit (or zero) v
        return b - 2.0 * v[:, :, None] * jnp.einsum("kd,kdr->kr", v, b)[:, None, :]

    def step(j, carry):
        a, vs = carry
        x = jnp.where(index >= j, jax.lax.dynamic_index_in_dim(a, j, axis=2, keepdims=False), 0.0)
        head = jax.lax.dynamic_slice_in_dim(x, j, 1, axis=1)
        norm = jnp.linalg.norm(x, axis=1, keepdims=True)
        alpha = -jnp.where(head >= 0, 1.0, -1.0) * norm
        v = x - jnp.where(index == j, alpha, 0.0)
        v_norm = jnp.linalg.norm(v, axis=1, keepdims=True)
        v = jnp.where(v_norm > 0, v / jnp.where(v_norm > 0, v_norm, 1.0), 0.0)
        return reflect(v, a), jax.lax.dynamic_update_index_in_dim(vs, v, j, axis=2)

    _, vs = jax.lax.fori_loop(0, r, step, (a, jnp.zeros_like(a)))
    q = jnp.broadcast_to(jnp.eye(d, r, dtype=a.dtype), a.shape)
    return jax.lax.fori_loop(
        0, r, lambda i, q: reflect(jax.lax.dynamic_index_in_dim(vs, r - 1 - i, axis=2, keepdims=False), q), q
    )


def _precision_cholesky(covariances):
    """Σ = C Cᵀ -> upper-triangular L = C⁻ᵀ with Σ⁻¹ = L Lᵀ; NaN if Σ is not positive definite."""
    return jnp.swapaxes(_inverse_cholesky(covariances), -1, -2)


def _from_moments(stats, centres, reg_covar):
    """Moments about ``centres`` -> (counts, means, covariances + reg_covar·I)."""
    n = stats["n"] + _stat_eps(stats["n"].dtype)
    delta = stats["s1"] / n[:, None]
    cov = _full_second_moment(stats["s2"]) / n[:, None, None] - delta[:, :, None] * delta[:, None, :]
    cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
    cov = cov + reg_covar * jnp.eye(cov.shape[-1], dtype=cov.dtype)
    return n, centres + delta, cov


@functools.partial(jax.jit, static_argnames=("mesh",))
def _initial_from_assignment(x, valid, n_valid, means, reg_covar, mesh=None):
    stats = reduce_rows(_hard_chunk, x, valid, means, mesh)
    n, _, cov = _from_moments(stats, means, reg_covar)
    return n / jnp.sum(n), cov, _precision_cholesky(cov)


def _em_step(x, valid, n_valid, params, reg_covar, mesh, prune=True):
    """One E + M step -> (new params, covariances, mean log-likelihood of the old params,
    work done: grouped tiles and rows computed densely, summed over chunks and devices)."""
    weights, means, precisions_cholesky = params
    k, dim = means.shape
    prune = _prunes(dim, k, prune)
    chunk_fn = _pruned_em_chunk if prune else _dense_em_chunk
    stats = reduce_rows(chunk_fn, x, valid, _mixture(weights, means, precisions_cholesky, prune), mesh)
    n, new_means, cov = _from_moments(stats, means, reg_covar)
    weights = n / jnp.sum(n)
    precisions_cholesky = _precision_cholesky(cov)
    ll = stats["log_likelihood"] / n_valid
    work = {"tiles": stats["tiles"], "dense_rows": stats["dense_rows"]}
    return (weights, new_means, precisions_cholesky), cov, ll, work


@functools.partial(jax.jit, static_argnames=("mesh", "prune"))
def em_iteration(x, valid, n_valid, params, reg_covar, mesh=None, prune=True):
    """One jitted EM iteration on prepared rows (exposed for benchmarks)."""
    return _em_step(x, valid, n_valid, params, reg_covar, mesh, prune)[:3]


@functools.partial(jax.jit, static_argnames=("mesh", "prune"))
def em_iteration_with_work(x, valid, n_valid, params, reg_covar, mesh=None, prune=True):
    """em_iteration plus what it computed: {'tiles': grouped tiles, 'dense_rows': rows
    done densely}, for FLOP accounting in benchmarks (tile size: _tile_rows)."""
    return _em_step(x, valid, n_valid, params, reg_covar, mesh, prune)


@functools.partial(jax.jit, static_argnames=("mesh", "prune"))
def _em(x, valid, n_valid, params, covariances, max_iter, tol, reg_covar, mesh=None, prune=True):
    def cond(carry):
        params, _, ll, prev_ll, n_iter = carry
        finite = jnp.all(jnp.isfinite(params[2]))
        converged = jnp.abs(ll - prev_ll) < tol
        return (n_iter < max_iter) & ~converged & finite

    def body(carry):
        params, _, ll, _, n_iter = carry
        new_params, cov, new_ll, _ = _em_step(x, valid, n_valid, params, reg_covar, mesh, prune)
        return new_params, cov, new_ll, ll, n_iter + 1

    init = (params, covariances, jnp.float32(-jnp.inf), jnp.float32(-jnp.inf), jnp.int32(0))
    params, covariances, ll, prev_ll, n_iter = jax.lax.while_loop(cond, body, init)
    # Both -inf before the first step: only a real change can count as convergence.
    converged = (jnp.abs(ll - prev_ll) < tol) & jnp.isfinite(ll)
    prune = _prunes(x.shape[-1], params[1].shape[0], prune)
    chunk_ll = functools.partial(_log_likelihood_chunk, prune=prune)
    final_ll = reduce_rows(chunk_ll, x, valid, _mixture(*params, bound=prune), mesh) / n_valid
    return params, covariances, final_ll, n_iter, converged


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def initial_state(
    x: Any, means: Any, *, reg_covar: float = 1e-6, mesh=None, chunk_size: int = 16384
) -> GMMState:
    """Start values as sklearn derives them: every frame goes to its nearest initial mean; the
    weights and covariances (+ reg_covar·I) come from that hard assignment, the means stay
    as given. Pass these to sklearn's means_init/weights_init/precisions_init for parity."""
    rows = prepare_rows(x, mesh=mesh, chunk_size=chunk_size)
    return _initial_state_rows(rows, means, reg_covar, mesh)


def _initial_state_rows(rows: Rows, means, reg_covar, mesh) -> GMMState:
    means = jnp.asarray(means, jnp.float32)
    if means.ndim != 2 or means.shape[1] != rows.x.shape[-1]:
        raise ConfigError(
            f"init_means: expected shape (n_components, {rows.x.shape[-1]}), got {means.shape}"
        )
    weights, cov, prec_chol = _initial_from_assignment(
        rows.x, rows.valid, rows.n_valid, means, reg_covar, mesh=mesh
    )
    return GMMState(
        weights, means, cov, prec_chol, jnp.float32(jnp.nan), jnp.int32(0), jnp.bool_(False)
    )


def fit_gmm(x: Any, config: GMMConfig = GMMConfig(), *, mesh=None, init_means: Any = None) -> GMMState:
    """Fit a full-covariance GMM to (N, D) frame features by EM.

    With a mesh, rows are sharded over its 'data' axis (x may be a host array or a global
    jax.Array); each device reduces its own rows and the statistics are psum'ed, so the result
    equals the single-device fit up to float32 summation order. ``init_means`` (K, D) replaces
    the k-means++ seeding (in PCA space when ``pca_dim`` is set).
    """
    n, d = check_features(x)
    config.validate(n, d)
    pca = None
    if config.pca_dim is not None:
        pca = fit_pca(x, config.pca_dim)
        x = apply_pca(pca, x)
    rows = prepare_rows(x, mesh=mesh, chunk_size=config.chunk_size)
    if init_means is None:
        key = jax.random.PRNGKey(config.seed)
        init_means = kmeans_plusplus_rows(key, rows, config.n_components)
        if config.init == "kmeans":
            flat = rows.x.reshape(-1, rows.x.shape[-1])[: rows.n_valid]
            init_means = kmeans(
                flat, config.n_components, init_centroids=init_means, mesh=mesh,
                chunk_size=config.chunk_size,
            ).centroids
    start = _initial_state_rows(rows, init_means, config.reg_covar, mesh)
    if start.means.shape[0] != config.n_components:
        raise ConfigError(
            f"init_means: has {start.means.shape[0]} rows, GMMConfig.n_components is "
            f"{config.n_components}"
        )
    params = (start.weights, start.means, start.precisions_cholesky)
    (weights, means, prec_chol), cov, ll, n_iter, converged = _em(
        rows.x, rows.valid, rows.n_valid, params, start.covariances,
        config.max_iter, config.tol, config.reg_covar, mesh=mesh, prune=config.prune,
    )
    if not bool(jnp.all(jnp.isfinite(prec_chol))):
        raise ConfigError(
            f"GMMConfig.reg_covar: a component covariance became singular after {int(n_iter)} "
            f"EM iterations with reg_covar={config.reg_covar}; raise reg_covar, lower "
            f"n_components or set pca_dim"
        )
    return GMMState(weights, means, cov, prec_chol, ll, n_iter, converged, pca)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _component_log_probs(state: GMMState, x, chunk_size: int):
    """(N, D) -> (N, K) log π_k N(x|k) chunk by chunk (bounded memory); pruned pairs (γ = 0 in
    float32 anyway) are -inf."""
    if state.pca is not None:
        x = apply_pca(state.pca, x)
    n = x.shape[0]
    chunk = min(chunk_size, n)
    n_chunks = -(-n // chunk)
    chunk = -(-n // n_chunks)  # balanced: padding under one row per chunk
    n_pad = n_chunks * chunk
    chunks = jnp.pad(x, ((0, n_pad - n), (0, 0))).reshape(n_chunks, chunk, x.shape[1])
    valid = (jnp.arange(n_pad) < n).astype(x.dtype).reshape(n_chunks, chunk)
    k = state.means.shape[0]
    prune = _prunes(x.shape[1], k, True)
    mix = _mixture(state.weights, state.means, state.precisions_cholesky, bound=prune)
    tile = _tile_rows(chunk, k)

    def one(args):
        if not prune:
            return _map_rows(lambda xb: _dense_log_prob(xb, mix), args[0])
        return _pruned_log_prob(args[0], args[1], mix, tile)

    return jax.lax.map(one, (chunks, valid)).reshape(n_pad, -1)[:n]


def predict_proba(state: GMMState, x: Any, *, chunk_size: int = 16384) -> jax.Array:
    """(N, D) features -> (N, K) posteriors γ (rows sum to 1): PMAM's soft frame labels."""
    check_features(x)
    log_prob = _component_log_probs(state, jnp.asarray(x, jnp.float32), chunk_size)
    return jax.nn.softmax(log_prob, axis=1)


def log_likelihood(state: GMMState, x: Any, *, chunk_size: int = 16384) -> jax.Array:
    """Mean per-frame log-likelihood of (N, D) features (sklearn's ``score``)."""
    check_features(x)
    log_prob = _component_log_probs(state, jnp.asarray(x, jnp.float32), chunk_size)
    return jnp.mean(jax.nn.logsumexp(log_prob, axis=1))
