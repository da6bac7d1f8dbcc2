"""PMAM's prototype BCE and clip targets, MAT-SED's masked MSE: numpy hand references, masking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.errors import ConfigError
from jaxaudio.objectives.ssl import clip_targets, masked_mse, pmam_loss, prototype_bce


def key(seed):
    return jax.random.key(seed, impl="rbg")


def numpy_bce(p, y):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.fixture
def case():
    b, t, k = 3, 12, 5
    p = np.asarray(jax.random.uniform(key(0), (b, t, k), minval=0.02, maxval=0.98), np.float64)
    gamma = np.asarray(jax.nn.softmax(3 * jax.random.normal(key(1), (b, t, k)), axis=-1), np.float64)
    mask = np.zeros((b, t), bool)
    mask[0, 2:6] = True
    mask[1, 0] = True
    mask[2, 7:12] = True
    return p, gamma, mask


def test_prototype_bce_is_the_mean_over_masked_elements(case):
    p, gamma, mask = case
    expected = numpy_bce(p[mask], gamma[mask]).mean()  # torch BCELoss()(p[mask], y[mask])
    got = prototype_bce(jnp.asarray(p, jnp.float32), jnp.asarray(gamma, jnp.float32), jnp.asarray(mask))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_unmasked_frames_do_not_contribute(case):
    p, gamma, mask = case
    def f(pp):
        return prototype_bce(pp, jnp.asarray(gamma, jnp.float32), jnp.asarray(mask))

    base = f(jnp.asarray(p, jnp.float32))
    perturbed = np.where(mask[..., None], p, np.nan)  # even NaN in unmasked frames must not leak
    assert float(f(jnp.asarray(perturbed, jnp.float32))) == pytest.approx(float(base), rel=1e-7)
    other = np.where(mask[..., None], p, 0.5)
    assert float(f(jnp.asarray(other, jnp.float32))) == pytest.approx(float(base), rel=1e-7)
    grad = np.asarray(jax.grad(f)(jnp.asarray(p, jnp.float32)))
    assert np.all(grad[~mask] == 0) and np.all(grad[mask] != 0)


def test_empty_mask_gives_zero(case):
    p, gamma, _ = case
    got = prototype_bce(jnp.asarray(p), jnp.asarray(gamma), jnp.zeros(p.shape[:2], bool))
    assert float(got) == 0.0


def test_clip_targets_threshold_at_one():
    gamma = np.zeros((2, 4, 3), np.float32)
    gamma[0, :, 0] = 0.25  # sums to exactly 1 -> present
    gamma[0, :, 1] = 0.24  # 0.96 -> absent
    gamma[1, 2, 2] = 1.0
    gamma[1, :, 0] = 0.5  # 2.0 -> present
    np.testing.assert_array_equal(clip_targets(jnp.asarray(gamma)), [[1, 0, 0], [1, 0, 1]])


def test_pmam_loss_combines_frame_and_clip_terms(case):
    p, gamma, mask = case
    at = np.asarray(jax.random.uniform(key(2), (3, 5), minval=0.05, maxval=0.95), np.float64)
    clip = (gamma.sum(axis=1) >= 1).astype(np.float64)
    assert 0 < clip.sum() < clip.size  # both classes of target occur in the case
    expected_frame = numpy_bce(p[mask], gamma[mask]).mean()
    expected_clip = numpy_bce(at, clip).mean()
    outputs = {"prototype_probs": jnp.asarray(p, jnp.float32), "at_probs": jnp.asarray(at, jnp.float32)}
    loss, aux = pmam_loss(outputs, jnp.asarray(gamma, jnp.float32), jnp.asarray(mask))
    np.testing.assert_allclose(float(aux["prototype_bce"]), expected_frame, rtol=1e-5)
    np.testing.assert_allclose(float(aux["at_bce"]), expected_clip, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected_frame + 0.1 * expected_clip, rtol=1e-5)
    loss_w, _ = pmam_loss(outputs, jnp.asarray(gamma, jnp.float32), jnp.asarray(mask), aux_weight=0.0)
    np.testing.assert_allclose(float(loss_w), expected_frame, rtol=1e-5)


def test_masked_mse_and_target_gradient(case):
    _, _, mask = case
    pred = np.asarray(jax.random.normal(key(3), (3, 12, 7)), np.float64)
    target = np.asarray(jax.random.normal(key(4), (3, 12, 7)), np.float64)
    expected = ((pred[mask] - target[mask]) ** 2).mean()
    args = (jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), jnp.asarray(mask))
    np.testing.assert_allclose(float(masked_mse(*args)), expected, rtol=1e-5)
    g_target = jax.grad(lambda t: masked_mse(args[0], t, args[2]))(args[1])
    assert not np.asarray(g_target).any()
    g_free = jax.grad(lambda t: masked_mse(args[0], t, args[2], stop_target_gradient=False))(args[1])
    assert np.asarray(g_free)[mask].any()


def test_shape_errors_name_the_problem(case):
    p, gamma, mask = case
    with pytest.raises(ConfigError, match="prototype_bce"):
        prototype_bce(jnp.asarray(p), jnp.asarray(gamma[..., :4]), jnp.asarray(mask))
    with pytest.raises(ConfigError, match="frame mask"):
        prototype_bce(jnp.asarray(p), jnp.asarray(gamma), jnp.asarray(mask[:, :5]))
    with pytest.raises(ConfigError, match="at_probs"):
        pmam_loss({"prototype_probs": jnp.asarray(p)}, jnp.asarray(gamma), jnp.asarray(mask))
