"""Hinton distillation against torch's own functions (cross_entropy with probabilities,
KLDivLoss batchmean) and against a hand-worked case; the T^2 scaling, teacher averaging, padding
weights and the gradient stop on the teacher."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.errors import ConfigError
from jaxaudio.objectives import distill


def test_hand_worked_two_class_case():
    # student logits (0, 0): q = (1/2, 1/2); teacher logits (ln 3, 0) at T=1: p = (3/4, 1/4)
    s = jnp.array([[0.0, 0.0]])
    t = jnp.array([[math.log(3.0), 0.0]])
    y = jnp.array([[1.0, 0.0]])
    loss, parts = distill.distillation_loss(s, y, t, alpha=0.25, temperature=1.0)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert parts["ce"] == pytest.approx(math.log(2.0), abs=1e-6)
    assert parts["kd"] == pytest.approx(kl, abs=1e-6)
    assert loss == pytest.approx(0.25 * math.log(2.0) + 0.75 * kl, abs=1e-6)


def test_matches_torch_cross_entropy_and_kldiv(require_reference):
    torch = require_reference("torch")
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(6, 5)).astype(np.float32) * 3, rng.normal(size=(6, 5)).astype(np.float32) * 3
    y = rng.dirichlet(np.ones(5), size=6).astype(np.float32)          # soft (mixup-like) labels
    temperature = 4.0
    ts, tt, ty = (torch.tensor(a) for a in (s, t, y))
    ce = torch.nn.functional.cross_entropy(ts, ty)                      # class probabilities as target
    kd = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(ts / temperature, -1),
                                                   torch.softmax(tt / temperature, -1)) * temperature ** 2
    loss, parts = distill.distillation_loss(jnp.asarray(s), jnp.asarray(y), jnp.asarray(t), alpha=0.3,
                                            temperature=temperature)
    assert float(parts["ce"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(parts["kd"]) == pytest.approx(float(kd), rel=1e-5)
    assert float(loss) == pytest.approx(0.3 * float(ce) + 0.7 * float(kd), rel=1e-5)


def test_several_teachers_average_probabilities_not_logits():
    t1, t2 = jnp.array([[10.0, 0.0]]), jnp.array([[0.0, 1.0]])
    p = distill.teacher_distribution([t1, t2], 1.0)
    want = (jax.nn.softmax(t1) + jax.nn.softmax(t2)) / 2
    np.testing.assert_allclose(p, want, atol=1e-7)
    assert not np.allclose(p, jax.nn.softmax((t1 + t2) / 2))
    np.testing.assert_allclose(distill.teacher_distribution(jnp.stack([t1, t2]), 1.0), want, atol=1e-7)


def test_padding_rows_do_not_count_and_teacher_gets_no_gradient():
    rng = np.random.default_rng(1)
    s, t = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(4, 3)))
    y = jax.nn.one_hot(jnp.array([0, 2, 1, 0]), 3)
    w = jnp.array([1.0, 1.0, 1.0, 0.0])
    full, _ = distill.distillation_loss(s[:3], y[:3], t[:3], alpha=0.5, temperature=2.0)
    padded, _ = distill.distillation_loss(s, y, t, alpha=0.5, temperature=2.0, weights=w)
    assert float(padded) == pytest.approx(float(full), rel=1e-6)
    grad_t = jax.grad(lambda tt: distill.distillation_loss(s, y, tt, alpha=0.0, temperature=2.0)[0])(t)
    assert not np.any(np.asarray(grad_t))


def test_kd_term_vanishes_when_the_student_equals_the_teacher_and_bad_values_refuse():
    t = jnp.array([[1.0, -2.0, 0.5]])
    _, parts = distill.distillation_loss(t, jax.nn.one_hot(jnp.array([0]), 3), t, alpha=0.5, temperature=3.0)
    assert float(parts["kd"]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="alpha"):
        distill.distillation_loss(t, t, t, alpha=1.5, temperature=1.0)
    with pytest.raises(ConfigError, match="temperature"):
        distill.teacher_distribution(t, 0.0)
