"""SED losses against hand-computed BCE/MSE values; masks; no gradient into the teacher."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.errors import ConfigError
from jaxaudio.objectives.sed import consistency_mse, mean_teacher_loss, strong_bce, weak_bce


def test_weak_bce_hand_values():
    pred = jnp.array([[0.8, 0.3], [0.5, 0.9]])
    target = jnp.array([[1.0, 0.0], [0.5, 1.0]])
    ex0 = (-math.log(0.8) - math.log(0.7)) / 2
    # soft target 0.5 at p=0.5: -(0.5 ln 0.5 + 0.5 ln 0.5) = ln 2
    ex1 = (math.log(2.0) - math.log(0.9)) / 2
    np.testing.assert_allclose(float(weak_bce(pred, target)), (ex0 + ex1) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(weak_bce(pred, target, jnp.array([False, True]))), ex1, rtol=1e-6)


def test_strong_bce_mask_picks_examples_and_ignores_the_rest():
    pred = np.full((3, 2, 2), 0.25, np.float32)
    pred[1] = np.nan  # an unselected example must not leak, even if non-finite
    target = np.zeros((3, 2, 2), np.float32)
    target[2] = 1.0
    mask = jnp.array([True, False, True])
    got = float(strong_bce(jnp.asarray(pred), jnp.asarray(target), mask))
    np.testing.assert_allclose(got, (-math.log(0.75) - math.log(0.25)) / 2, rtol=1e-6)


def test_all_false_mask_gives_zero_loss_and_finite_gradient():
    pred = jnp.full((2, 3), 0.4)
    target = jnp.ones((2, 3))
    mask = jnp.zeros((2,), bool)
    value, grad = jax.value_and_grad(lambda p: weak_bce(p, target, mask))(pred)
    assert float(value) == 0.0
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_shape_mismatch_names_the_loss():
    with pytest.raises(ConfigError, match="strong_bce"):
        strong_bce(jnp.zeros((2, 156, 10)), jnp.zeros((2, 626, 10)))


def test_consistency_mse_value_and_no_gradient_to_teacher():
    student = jnp.array([[0.2, 0.4]])
    teacher = jnp.array([[0.5, 0.0]])
    np.testing.assert_allclose(float(consistency_mse(student, teacher)), (0.09 + 0.16) / 2, rtol=1e-6)
    g_student, g_teacher = jax.grad(consistency_mse, argnums=(0, 1))(student, teacher)
    np.testing.assert_allclose(np.asarray(g_student), 2 * (student - teacher) / 2, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(g_teacher), 0.0)
    masked = consistency_mse(jnp.concatenate([student, student]), jnp.concatenate([teacher, student]),
                             jnp.array([False, True]))
    assert float(masked) == 0.0


def make_case():
    rng = np.random.default_rng(0)
    b, t, k = 4, 3, 2
    student = {"strong": rng.uniform(0.05, 0.95, (b, t, k)), "weak": rng.uniform(0.05, 0.95, (b, k))}
    teacher = {"strong": rng.uniform(0.05, 0.95, (b, t, k)), "weak": rng.uniform(0.05, 0.95, (b, k))}
    batch = {
        "strong": (rng.uniform(size=(b, t, k)) > 0.5).astype(np.float32),
        "weak": (rng.uniform(size=(b, k)) > 0.5).astype(np.float32),
        "has_strong": np.array([True, False, False, False]),
        "has_weak": np.array([False, True, True, False]),
    }
    return student, teacher, batch


def bce_np(p, y):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_mean_teacher_loss_against_numpy_composition():
    student, teacher, batch = make_case()
    w_cons = 2.0
    def j(d):  # float64 -> float32 (x64 off)
        return {key: jnp.asarray(v) for key, v in d.items()}

    loss, aux = mean_teacher_loss(j(student), j(teacher), j(batch), w_cons)
    s_strong = bce_np(student["strong"][0], batch["strong"][0]).mean()
    s_weak = bce_np(student["weak"][1:3], batch["weak"][1:3]).mean()
    c_strong = ((student["strong"] - teacher["strong"]) ** 2).mean()
    c_weak = ((student["weak"] - teacher["weak"]) ** 2).mean()
    want = s_strong + s_weak + w_cons * (c_strong + c_weak)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(aux["strong_bce"]), s_strong, rtol=1e-5)
    np.testing.assert_allclose(float(aux["weak_bce"]), s_weak, rtol=1e-5)
    np.testing.assert_allclose(float(aux["cons_strong_mse"]), c_strong, rtol=1e-5)
    np.testing.assert_allclose(float(aux["cons_weak_mse"]), c_weak, rtol=1e-5)


def test_mean_teacher_loss_gradient_skips_teacher_and_survives_empty_masks():
    student, teacher, batch = make_case()
    batch["has_strong"] = np.zeros(4, bool)
    batch["has_weak"] = np.zeros(4, bool)
    def j(d):
        return {key: jnp.asarray(v) for key, v in d.items()}

    def f(s, t):
        return mean_teacher_loss(s, t, j(batch), 3.0)[0]

    loss = f(j(student), j(teacher))
    g_student, g_teacher = jax.jit(jax.grad(f, argnums=(0, 1)))(j(student), j(teacher))
    assert np.isfinite(float(loss))
    for leaf in jax.tree.leaves(g_teacher):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    # only the consistency term is left: d/ds 3 * mean((s - t)^2) = 6 (s - t) / n
    n = student["weak"].size
    np.testing.assert_allclose(np.asarray(g_student["weak"]), 6 * (student["weak"] - teacher["weak"]) / n,
                               rtol=1e-5)
