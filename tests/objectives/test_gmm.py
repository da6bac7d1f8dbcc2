"""GMM prototypes (PMAM): EM against scikit-learn, sharded vs single device, k-means, PCA."""
import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from jaxaudio.errors import ConfigError
from jaxaudio.objectives import gmm as G
from jaxaudio.objectives.kmeans import kmeans, kmeans_plusplus, one_hot_labels, prepare_rows


def make_mixture(n, means, seed):
    """Draws from a mixture with equal weights and full, strongly non-diagonal covariances."""
    rng = np.random.default_rng(seed)
    k, d = means.shape
    factors = np.eye(d) + rng.normal(0.0, 0.5, (k, d, d))
    covs = factors @ np.transpose(factors, (0, 2, 1))
    labels = rng.integers(0, k, n)
    z = rng.standard_normal((n, d))
    x = means[labels] + np.einsum("nd,nde->ne", z, np.transpose(factors[labels], (0, 2, 1)))
    return x.astype(np.float32), labels, covs


@pytest.fixture(scope="module")
def separated():
    rng = np.random.default_rng(0)
    true_means = rng.normal(0.0, 10.0, (4, 8))
    x, labels, covs = make_mixture(4000, true_means, seed=1)
    return x, labels, true_means, covs


def sklearn_from(start: G.GMMState, config: G.GMMConfig, **kw):
    """sklearn's GaussianMixture started from exactly our start parameters."""
    weights = np.asarray(start.weights, np.float64)
    prec_chol = np.asarray(start.precisions_cholesky, np.float64)
    return GaussianMixture(
        config.n_components, covariance_type="full", tol=config.tol, max_iter=config.max_iter,
        reg_covar=config.reg_covar, weights_init=weights / weights.sum(),
        means_init=np.asarray(start.means, np.float64),
        precisions_init=prec_chol @ np.transpose(prec_chol, (0, 2, 1)), **kw,
    )


def test_fit_recovers_means_and_matches_sklearn(separated):
    x, labels, true_means, covs = separated
    config = G.GMMConfig(n_components=4, max_iter=200, tol=1e-4)
    init = G.kmeans_plusplus(jax.random.PRNGKey(3), x, 4)
    start = G.initial_state(x, init, reg_covar=config.reg_covar)
    state = G.fit_gmm(x, config, init_means=init)
    ref = sklearn_from(start, config).fit(x.astype(np.float64))

    # Means recovered to within 5 standard errors of a sample mean (sqrt(Σ_dd / n_k)).
    fitted = np.asarray(state.means)
    cost = ((fitted[:, None, :] - true_means[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    counts = np.bincount(labels, minlength=4)[cols]
    stderr = np.sqrt(np.diagonal(covs[cols], axis1=1, axis2=2) / counts[:, None])
    assert np.all(np.abs(fitted[rows] - true_means[cols]) <= 5 * stderr)

    # Same optimum as sklearn from the same start: log-likelihood, means, posteriors.
    ref_ll = ref.score(x.astype(np.float64))
    assert abs(float(state.log_likelihood) - ref_ll) <= 0.005 * abs(ref_ll)
    assert abs(float(G.log_likelihood(state, x)) - ref_ll) <= 1e-4 * abs(ref_ll)
    np.testing.assert_allclose(fitted, ref.means_, atol=1e-3)
    np.testing.assert_allclose(np.asarray(state.weights), ref.weights_, atol=1e-4)
    np.testing.assert_allclose(np.asarray(state.covariances), ref.covariances_, atol=2e-3, rtol=1e-3)
    resp = np.asarray(G.predict_proba(state, x))
    np.testing.assert_allclose(resp, ref.predict_proba(x.astype(np.float64)), atol=1e-3)
    assert bool(state.converged) and ref.converged_
    assert abs(int(state.n_iter) - ref.n_iter_) <= 1


def test_em_iterations_track_sklearn_on_overlapping_mixture():
    # Overlapping components: many EM steps, each must follow sklearn's step for step.
    rng = np.random.default_rng(5)
    x, _, _ = make_mixture(3000, rng.normal(0.0, 2.0, (3, 5)), seed=6)
    config = G.GMMConfig(n_components=3, max_iter=15, tol=0.0)
    init = G.kmeans_plusplus(jax.random.PRNGKey(0), x, 3)
    state = G.fit_gmm(x, config, init_means=init)
    start = G.initial_state(x, init)
    ref = sklearn_from(start, config).fit(x.astype(np.float64))
    assert int(state.n_iter) == ref.n_iter_ == 15
    np.testing.assert_allclose(np.asarray(state.means), ref.means_, atol=2e-3)
    np.testing.assert_allclose(float(state.log_likelihood), ref.score(x.astype(np.float64)), rtol=1e-5)


def test_log_likelihood_and_posteriors_match_sklearn_for_given_parameters(separated):
    x = separated[0]
    state = G.initial_state(x, G.kmeans_plusplus(jax.random.PRNGKey(0), x, 4))
    ref = GaussianMixture(4, covariance_type="full")
    ref.weights_ = np.asarray(state.weights, np.float64)
    ref.means_ = np.asarray(state.means, np.float64)
    ref.precisions_cholesky_ = np.asarray(state.precisions_cholesky, np.float64)
    ref.covariances_ = np.asarray(state.covariances, np.float64)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(float(G.log_likelihood(state, x, chunk_size=333)), ref.score(x64), rtol=1e-5)
    resp = np.asarray(G.predict_proba(state, x, chunk_size=333))
    np.testing.assert_allclose(resp.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(resp, ref.predict_proba(x64), atol=1e-4)
    # Precision Cholesky really is chol(Σ⁻¹): L Lᵀ Σ = I.
    prec = np.asarray(state.precisions_cholesky, np.float64)
    eye = prec @ np.transpose(prec, (0, 2, 1)) @ np.asarray(state.covariances, np.float64)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(8), eye.shape), atol=1e-4)


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_sharded_fit_matches_single_device(axis_type):
    rng = np.random.default_rng(2)
    x, _, _ = make_mixture(4003, rng.normal(0.0, 3.0, (5, 6)), seed=3)  # 4003: ragged shards
    config = G.GMMConfig(n_components=5, max_iter=30, tol=1e-5, chunk_size=128)
    mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "tensor"), axis_types=(axis_type,) * 3)
    single = G.fit_gmm(x, config)
    sharded = G.fit_gmm(x, config, mesh=mesh)
    assert int(single.n_iter) > 3  # the fits had to move, not just agree at the start
    assert int(sharded.n_iter) == int(single.n_iter)
    np.testing.assert_allclose(np.asarray(sharded.means), np.asarray(single.means), atol=1e-4)
    np.testing.assert_allclose(np.asarray(sharded.weights), np.asarray(single.weights), atol=1e-5)
    np.testing.assert_allclose(float(sharded.log_likelihood), float(single.log_likelihood), rtol=1e-6)


def test_kmeans_plusplus_picks_distinct_data_rows_deterministically(separated):
    x = separated[0]
    a = np.asarray(kmeans_plusplus(jax.random.PRNGKey(7), x, 6))
    b = np.asarray(kmeans_plusplus(jax.random.PRNGKey(7), x, 6))
    c = np.asarray(kmeans_plusplus(jax.random.PRNGKey(8), x, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    dist = ((a[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    assert np.all(dist.min(1) == 0.0)  # every centre is a data row ...
    assert len(set(dist.argmin(1).tolist())) == 6  # ... and no row is picked twice


def test_kmeans_matches_sklearn_lloyd_from_same_start(separated):
    x = separated[0]
    init = np.asarray(kmeans_plusplus(jax.random.PRNGKey(1), x, 4))
    ours = kmeans(x, 4, init_centroids=init, max_iter=50, tol=1e-6, chunk_size=500)
    ref = KMeans(4, init=init, n_init=1, algorithm="lloyd", max_iter=50, tol=1e-6).fit(x.astype(np.float64))
    np.testing.assert_allclose(np.asarray(ours.centroids), ref.cluster_centers_, atol=1e-3)
    np.testing.assert_allclose(float(ours.inertia), ref.inertia_, rtol=1e-4)
    labels = np.asarray(one_hot_labels(ours.centroids, x))
    assert labels.shape == (4000, 4) and np.all(labels.sum(1) == 1)
    np.testing.assert_array_equal(labels.argmax(1), ref.predict(x.astype(np.float64)))


def test_kmeans_sharded_matches_single_device(separated):
    x = separated[0]
    mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "tensor"))
    single = kmeans(x, 4, seed=3, chunk_size=256)
    sharded = kmeans(x, 4, seed=3, chunk_size=256, mesh=mesh)
    np.testing.assert_allclose(np.asarray(sharded.centroids), np.asarray(single.centroids), atol=1e-4)
    assert int(sharded.n_iter) == int(single.n_iter)


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12)) * np.linspace(3, 0.3, 12) + 5).astype(np.float32)
    pca = G.fit_pca(x, 4)
    centred = x.astype(np.float64) - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    components = np.asarray(pca.components, np.float64)
    np.testing.assert_allclose(np.abs((components * vt[:4]).sum(1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(pca.explained_variance), s[:4] ** 2 / 499, rtol=1e-4)
    projected = np.asarray(G.apply_pca(pca, x))
    np.testing.assert_allclose(np.abs(projected), np.abs(centred @ vt[:4].T), atol=2e-3)


def test_fit_with_pca_labels_input_space_frames(separated):
    x = separated[0]
    state = G.fit_gmm(x, G.GMMConfig(n_components=4, pca_dim=3))
    assert state.means.shape == (4, 3)
    assert G.means_in_input_space(state).shape == (4, 8)
    resp = np.asarray(G.predict_proba(state, x))  # takes 8-d frames; the PCA is in the state
    assert resp.shape == (4000, 4)
    np.testing.assert_allclose(resp.sum(1), 1.0, atol=1e-5)
    # Well separated in 3 principal directions too: posteriors are nearly hard and pure.
    purity = sum(np.bincount(separated[1][resp.argmax(1) == k]).max() for k in range(4) if np.any(resp.argmax(1) == k))
    assert purity / len(x) > 0.95


def test_bad_config_and_singular_covariance_raise_config_error():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    with pytest.raises(ConfigError, match="n_components"):
        G.fit_gmm(x, G.GMMConfig(n_components=51))
    with pytest.raises(ConfigError, match="init"):
        G.fit_gmm(x, G.GMMConfig(n_components=2, init="random"))
    with pytest.raises(ConfigError, match="x"):
        G.fit_gmm(x[0], G.GMMConfig(n_components=2))
    flat = x.copy()
    flat[:, 2] = 0.0  # a plane in 3-d: singular covariances without regularisation
    with pytest.raises(ConfigError, match="reg_covar"):
        G.fit_gmm(flat, G.GMMConfig(n_components=2, reg_covar=0.0))


# --------------------------------------------------------------------------------------------
# The fast paths: triangle-blocked products and pruning of pairs with γ = 0 in float32
# --------------------------------------------------------------------------------------------


def random_state(k, d, seed, scale=1.0, offset=0.0):
    """Random weights, means and well-conditioned full covariances (not a fit)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(offset, scale, (k, d))
    factors = np.eye(d) + rng.normal(0.0, 0.3 / np.sqrt(d), (k, d, d))
    covs = factors @ np.transpose(factors, (0, 2, 1)) * rng.uniform(0.5, 2.0, (k, 1, 1))
    prec_chol = np.transpose(np.linalg.inv(np.linalg.cholesky(covs)), (0, 2, 1))
    weights = rng.dirichlet(np.ones(k))
    return weights, means, covs, prec_chol


def reference_log_prob(x, weights, means, prec_chol):
    """float64 log π_k N(x | μ_k, Σ_k) as sklearn computes it, (N, K)."""
    x = np.asarray(x, np.float64)
    y = np.einsum("nd,kde->nke", x, prec_chol) - np.einsum("kd,kde->ke", means, prec_chol)[None]
    log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(1)
    d = x.shape[1]
    return -0.5 * (d * np.log(2 * np.pi) + (y**2).sum(-1)) + log_det + np.log(weights)


@pytest.mark.parametrize("d", [8, 130, 300])
def test_block_triangular_log_prob_and_bound(d):
    # 300 dims: 4 column blocks; the data sit far from the origin (float32 cancellation).
    k = 6
    weights, means, _, prec_chol = random_state(k, d, seed=d, scale=0.3, offset=20.0)
    rng = np.random.default_rng(1)
    x = (means[rng.integers(0, k, 500)] + rng.normal(0.0, 1.0, (500, d))).astype(np.float32)
    mix = G._mixture(*(jax.numpy.asarray(a, jax.numpy.float32) for a in (weights, means, prec_chol)))
    ref = reference_log_prob(x, weights, means, prec_chol)
    dense = np.asarray(G._dense_log_prob(jax.numpy.asarray(x), mix), np.float64)
    np.testing.assert_allclose(dense, ref, rtol=2e-5, atol=1e-2)
    # The projected distance is a lower bound: the bound never undercuts the exact log prob.
    bound = np.asarray(G._bound_log_prob(jax.numpy.asarray(x), mix), np.float64)
    assert np.all(bound >= ref - 1e-3 * np.abs(ref))


def well_separated(n, k, d, seed):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 2.0, (k, d))
    labels = rng.integers(0, k, n)
    x = means[labels] + rng.normal(0.0, 1.0, (n, d)) @ (np.eye(d) + rng.normal(0, 0.1 / np.sqrt(d), (d, d)))
    return x.astype(np.float32)


def test_pruned_em_equals_unpruned_and_skips_most_pairs():
    # 130 dims (two column blocks), 6 components far apart: nearly every frame has one
    # component with γ > 0 in float32, so pruning computes ~1 pair per frame, not 6.
    x = well_separated(3000, 6, 130, seed=4)
    rows = prepare_rows(x, chunk_size=1000)
    init = G.kmeans_plusplus(jax.random.PRNGKey(1), x, 6)
    start = G.initial_state(x, init, chunk_size=1000)
    params = {p: (start.weights, start.means, start.precisions_cholesky) for p in (True, False)}
    for _ in range(3):
        out = {
            p: G.em_iteration_with_work(rows.x, rows.valid, rows.n_valid, params[p], 1e-6, prune=p)
            for p in (True, False)
        }
        params = {p: out[p][0] for p in out}
        np.testing.assert_allclose(float(out[True][2]), float(out[False][2]), rtol=1e-6)
        for a, b in zip(out[True][0], out[False][0]):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out[True][1]), np.asarray(out[False][1]), atol=1e-5)
        work = out[True][3]
        assert float(work["dense_rows"]) == 0.0
        chunks, tile = rows.x.shape[0], G._tile_rows(rows.x.shape[1], 6)
        # E and M tiles for ~1 pair per frame, plus a partly filled tile per component and
        # chunk in each: far from the 6 pairs per frame of the dense path.
        assert float(work["tiles"]) * tile <= 2 * (1.05 * 3000 + chunks * 6 * tile)
    # Posteriors of the fitted parameters (pruned E step) against sklearn's float64 formula.
    weights, means, prec_chol = params[True]
    state = G.GMMState(weights, means, None, prec_chol, None, None, None)
    resp = np.asarray(G.predict_proba(state, x, chunk_size=700))
    log_prob = reference_log_prob(x, *(np.asarray(a, np.float64) for a in params[True]))
    ref = np.exp(log_prob - log_prob.max(1, keepdims=True))
    np.testing.assert_allclose(resp, ref / ref.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(
        float(G.log_likelihood(state, x)), np.mean(np.log(np.exp(log_prob).sum(1))), rtol=1e-6
    )


def test_pruning_falls_back_to_dense_on_overlapping_components():
    # 12 components cut out of one Gaussian blob: more than K/4 pairs per frame survive the
    # bound, so the chunks run densely, with the same result as the unpruned path.
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (2000, 64)).astype(np.float32)
    init = G.kmeans_plusplus(jax.random.PRNGKey(0), x, 12)
    start = G.initial_state(x, init, reg_covar=1e-3)
    rows = prepare_rows(x, chunk_size=500)
    params = (start.weights, start.means, start.precisions_cholesky)
    pruned = G.em_iteration_with_work(rows.x, rows.valid, rows.n_valid, params, 1e-3, prune=True)
    plain = G.em_iteration_with_work(rows.x, rows.valid, rows.n_valid, params, 1e-3, prune=False)
    assert float(pruned[3]["dense_rows"]) == 2000.0
    np.testing.assert_allclose(float(pruned[2]), float(plain[2]), rtol=1e-6)
    for a, b in zip(pruned[0], plain[0]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_pruned_sharded_fit_matches_single_device():
    # 130 dims: two column blocks, and big enough that jaxlib's batched LAPACK Cholesky (used
    # before) deadlocked in this 8-device host mesh; the fit must finish and agree.
    mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "tensor"))
    x = well_separated(4003, 5, 130, seed=9)  # ragged shards
    config = G.GMMConfig(n_components=5, max_iter=3, tol=0.0, chunk_size=256)
    init = G.kmeans_plusplus(jax.random.PRNGKey(2), x, 5)
    single = G.fit_gmm(x, config, init_means=init)
    sharded = G.fit_gmm(x, config, mesh=mesh, init_means=init)
    assert int(sharded.n_iter) == int(single.n_iter) == 3
    np.testing.assert_allclose(np.asarray(sharded.means), np.asarray(single.means), atol=1e-4)
    np.testing.assert_allclose(np.asarray(sharded.weights), np.asarray(single.weights), atol=1e-6)
    np.testing.assert_allclose(np.asarray(sharded.covariances), np.asarray(single.covariances), atol=1e-4)
    np.testing.assert_allclose(float(sharded.log_likelihood), float(single.log_likelihood), rtol=1e-6)
    rows = prepare_rows(x, mesh=mesh, chunk_size=256)
    params = (single.weights, single.means, single.precisions_cholesky)
    work = G.em_iteration_with_work(rows.x, rows.valid, rows.n_valid, params, 1e-6, mesh=mesh)[3]
    assert float(work["dense_rows"]) == 0.0 and float(work["tiles"]) > 0


def test_prepare_rows_balances_chunks():
    x = np.zeros((10_001, 3), np.float32)
    rows = prepare_rows(x, chunk_size=4096)
    assert rows.x.shape == (3, 3334, 3)  # not 3 x 4096 with 2287 padding rows
    assert float(rows.valid.sum()) == 10_001
