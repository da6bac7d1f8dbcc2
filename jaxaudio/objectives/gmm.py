"""Full-covariance Gaussian mixture (EM) in JAX: PMAM's prototypes and soft frame labels.

PMAM fits K=30 full-covariance Gaussians to 768-d frame features and uses the posteriors
γ_k(z) as soft pseudo labels. The fit must stream ~1e5 frames and shard them over devices, so:

* E step in the log domain: log N(x|μ,Σ) = -½(D log 2π + ||(x-μ)ᵀL||²) + log|L| with
  L = chol(Σ⁻¹) (the "precision Cholesky"), one batched matmul over components; posteriors
  through logsumexp, so float32 is enough.
* M step from sufficient statistics (Σγ, Σγ(x-c), Σγ(x-c)(x-c)ᵀ) summed chunk by chunk on
  each device and added across devices with psum. They are taken about the current means c
  (not the origin), so the covariance is not lost to cancellation in float32.
* Stops when the mean per-frame log-likelihood changes by less than ``tol`` (sklearn's rule).

Optional PCA in front (``pca_dim``) as in PMAM's gmm script.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
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
    chunk_size: rows per device per step; bounds memory at ~3·K·chunk·D floats."""

    n_components: int = 30
    max_iter: int = 100
    tol: float = 1e-3
    reg_covar: float = 1e-6
    init: str = "kmeans++"
    seed: int = 0
    pca_dim: Optional[int] = None
    chunk_size: int = 1024

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
# --------------------------------------------------------------------------------------------


def _stat_eps(dtype) -> float:
    # sklearn adds 10·eps to every Σγ so an empty component has a finite mean.
    return 10.0 * float(jnp.finfo(dtype).eps)


def _log_det_cholesky(precisions_cholesky):
    return jnp.sum(jnp.log(jnp.diagonal(precisions_cholesky, axis1=1, axis2=2)), axis=1)


def _weighted_log_prob(diff, weights, precisions_cholesky):
    """diff (K, c, D) = x - μ_k -> (K, c) log π_k + log N(x | μ_k, Σ_k)."""
    y = jnp.einsum("kcd,kde->kce", diff, precisions_cholesky)
    maha = jnp.sum(y * y, axis=-1)
    dim = diff.shape[-1]
    log_det = _log_det_cholesky(precisions_cholesky)
    return (
        -0.5 * (dim * math.log(2.0 * math.pi) + maha)
        + log_det[:, None]
        + jnp.log(weights)[:, None]
    )


def _moments(diff, resp):
    """Sufficient statistics about the current means; diff (K, c, D), resp (K, c)."""
    weighted = diff * resp[..., None]
    return {
        "n": jnp.sum(resp, axis=1),
        "s1": jnp.sum(weighted, axis=1),
        "s2": jnp.einsum("kcd,kce->kde", weighted, diff),
    }


def _em_chunk(x, valid, params):
    weights, means, precisions_cholesky = params
    diff = x[None, :, :] - means[:, None, :]
    log_prob = _weighted_log_prob(diff, weights, precisions_cholesky)
    log_norm = jax.nn.logsumexp(log_prob, axis=0)
    resp = jnp.exp(log_prob - log_norm[None, :]) * valid[None, :]
    stats = _moments(diff, resp)
    stats["log_likelihood"] = jnp.sum(log_norm * valid)
    return stats


def _hard_chunk(x, valid, means):
    diff = x[None, :, :] - means[:, None, :]
    nearest = jnp.argmin(jnp.sum(diff * diff, axis=-1), axis=0)
    resp = jax.nn.one_hot(nearest, means.shape[0], dtype=x.dtype).T * valid[None, :]
    return _moments(diff, resp)


def _log_likelihood_chunk(x, valid, params):
    weights, means, precisions_cholesky = params
    diff = x[None, :, :] - means[:, None, :]
    log_norm = jax.nn.logsumexp(_weighted_log_prob(diff, weights, precisions_cholesky), axis=0)
    return jnp.sum(log_norm * valid)


def _precision_cholesky(covariances):
    """Σ = C Cᵀ -> upper-triangular L = C⁻ᵀ with Σ⁻¹ = L Lᵀ; NaN if Σ is not positive definite."""
    chol = jnp.linalg.cholesky(covariances)
    eye = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype), covariances.shape)
    inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    return jnp.swapaxes(inv_chol, -1, -2)


def _from_moments(stats, centres, reg_covar):
    """Moments about ``centres`` -> (counts, means, covariances + reg_covar·I)."""
    n = stats["n"] + _stat_eps(stats["n"].dtype)
    delta = stats["s1"] / n[:, None]
    cov = stats["s2"] / n[:, None, None] - delta[:, :, None] * delta[:, None, :]
    cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
    cov = cov + reg_covar * jnp.eye(cov.shape[-1], dtype=cov.dtype)
    return n, centres + delta, cov


@functools.partial(jax.jit, static_argnames=("mesh",))
def _initial_from_assignment(x, valid, n_valid, means, reg_covar, mesh=None):
    stats = reduce_rows(_hard_chunk, x, valid, means, mesh)
    n, _, cov = _from_moments(stats, means, reg_covar)
    return n / jnp.sum(n), cov, _precision_cholesky(cov)


def _em_step(x, valid, n_valid, params, reg_covar, mesh):
    """One E + M step -> (new params, mean log-likelihood of the old params)."""
    _, means, _ = params
    stats = reduce_rows(_em_chunk, x, valid, params, mesh)
    n, new_means, cov = _from_moments(stats, means, reg_covar)
    weights = n / jnp.sum(n)
    precisions_cholesky = _precision_cholesky(cov)
    ll = stats["log_likelihood"] / n_valid
    return (weights, new_means, precisions_cholesky), cov, ll


@functools.partial(jax.jit, static_argnames=("mesh",))
def em_iteration(x, valid, n_valid, params, reg_covar, mesh=None):
    """One jitted EM iteration on prepared rows (exposed for benchmarks)."""
    return _em_step(x, valid, n_valid, params, reg_covar, mesh)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _em(x, valid, n_valid, params, covariances, max_iter, tol, reg_covar, mesh=None):
    def cond(carry):
        params, _, ll, prev_ll, n_iter = carry
        finite = jnp.all(jnp.isfinite(params[2]))
        converged = jnp.abs(ll - prev_ll) < tol
        return (n_iter < max_iter) & ~converged & finite

    def body(carry):
        params, _, ll, _, n_iter = carry
        new_params, cov, new_ll = _em_step(x, valid, n_valid, params, reg_covar, mesh)
        return new_params, cov, new_ll, ll, n_iter + 1

    init = (params, covariances, jnp.float32(-jnp.inf), jnp.float32(-jnp.inf), jnp.int32(0))
    params, covariances, ll, prev_ll, n_iter = jax.lax.while_loop(cond, body, init)
    # Both -inf before the first step: only a real change can count as convergence.
    converged = (jnp.abs(ll - prev_ll) < tol) & jnp.isfinite(ll)
    final_ll = reduce_rows(_log_likelihood_chunk, x, valid, params, mesh) / n_valid
    return params, covariances, final_ll, n_iter, converged


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def initial_state(
    x: Any, means: Any, *, reg_covar: float = 1e-6, mesh=None, chunk_size: int = 1024
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
        config.max_iter, config.tol, config.reg_covar, mesh=mesh,
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
    """(N, D) -> (N, K) log π_k N(x|k), computed chunk by chunk to bound memory."""
    if state.pca is not None:
        x = apply_pca(state.pca, x)
    n = x.shape[0]
    chunk = min(chunk_size, n)
    n_pad = -(-n // chunk) * chunk
    chunks = jnp.pad(x, ((0, n_pad - n), (0, 0))).reshape(n_pad // chunk, chunk, x.shape[1])

    def one(xc):
        diff = xc[None, :, :] - state.means[:, None, :]
        return _weighted_log_prob(diff, state.weights, state.precisions_cholesky).T

    return jax.lax.map(one, chunks).reshape(n_pad, -1)[:n]


def predict_proba(state: GMMState, x: Any, *, chunk_size: int = 1024) -> jax.Array:
    """(N, D) features -> (N, K) posteriors γ (rows sum to 1): PMAM's soft frame labels."""
    check_features(x)
    log_prob = _component_log_probs(state, jnp.asarray(x, jnp.float32), chunk_size)
    return jax.nn.softmax(log_prob, axis=1)


def log_likelihood(state: GMMState, x: Any, *, chunk_size: int = 1024) -> jax.Array:
    """Mean per-frame log-likelihood of (N, D) features (sklearn's ``score``)."""
    check_features(x)
    log_prob = _component_log_probs(state, jnp.asarray(x, jnp.float32), chunk_size)
    return jnp.mean(jax.nn.logsumexp(log_prob, axis=1))
