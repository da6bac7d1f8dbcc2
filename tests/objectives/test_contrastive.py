"""Supervised contrastive loss against a plain double loop over Khosla et al.'s L^sup_out, a hand-worked
3-sample case, normalisation, masks and gradients; GeCo's label reading."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.objectives.contrastive import geco_contrastive_labels, supcon_loss, supcon_terms

supcon = jax.jit(supcon_loss)  # temperature traced: one compile per shape and mask kind


def supcon_reference(emb, labels, temperature, valid=None):
    """Khosla et al. 2020, eq. 2 (L^sup_out), written out element by element in float64.

    Anchors: valid samples with at least one positive; A(i): valid a != i; P(i): a in A(i) with i's label.
    """
    emb = np.asarray(emb, np.float64)
    n = len(emb)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    z = [e / math.sqrt(sum(v * v for v in e)) if ok else e for e, ok in zip(emb, valid)]
    losses = []
    for i in range(n):
        if not valid[i]:
            continue
        others = [a for a in range(n) if a != i and valid[a]]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(np.dot(z[i], z[a])) / temperature) for a in others)
        terms = [-math.log(math.exp(float(np.dot(z[i], z[p])) / temperature) / denominator) for p in positives]
        losses.append(sum(terms) / len(terms))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("seed,temperature,masked", [(0, 0.07, False), (1, 0.07, True), (2, 0.1, True),
                                                     (3, 0.5, False), (4, 0.07, True), (5, 1.0, True)])
def test_matches_double_loop(seed, temperature, masked):
    rng = np.random.default_rng(seed)
    n, dim = 13, 6
    emb = rng.normal(size=(n, dim)) * rng.uniform(0.2, 5.0, size=(n, 1))
    labels = rng.integers(0, 4, size=n)
    labels[-1] = 99  # an anchor with no positive at all
    valid = rng.random(n) > 0.25 if masked else None
    if masked:
        # a label whose only other member is padded: that anchor loses its positives
        labels[0], labels[1], valid[0], valid[1] = 50, 50, True, False
        emb[1] = 0.0  # a padded row of zeros must not give NaN
    got = supcon(jnp.asarray(emb, jnp.float32), jnp.asarray(labels), temperature=temperature,
                 valid=None if valid is None else jnp.asarray(valid))
    want = supcon_reference(emb, labels, temperature, valid)
    assert want > 0
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)


def test_hand_worked_three_samples():
    # z0 = (1, 0), z1 = (0, 1), z2 = (1, 0) given at scale 3; labels 0, 0, 1; tau = 0.5.
    # anchor 0: P = {1}, A = {1, 2}: -log(e^0 / (e^0 + e^(1/0.5))) = log(1 + e^2)
    # anchor 1: P = {0}, A = {0, 2}: both similarities 0 -> -log(1/2) = log 2
    # anchor 2: no positive, left out.  Loss = (log(1 + e^2) + log 2) / 2.
    emb = jnp.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    got = supcon(emb, jnp.array([0, 0, 1]), temperature=0.5)
    np.testing.assert_allclose(float(got), (math.log(1 + math.e ** 2) + math.log(2)) / 2, rtol=1e-6)
    terms, counts = jax.jit(supcon_terms)(emb, jnp.array([0, 0, 1]), temperature=0.5)
    np.testing.assert_allclose(np.asarray(terms), [math.log(1 + math.e ** 2), math.log(2), 0.0], rtol=1e-6)
    assert np.asarray(counts).tolist() == [True, True, False]
    # the third row padded: anchor 0's denominator loses z2 -> -log(1/1) = 0; anchor 1 too -> loss 0
    got = supcon(emb, jnp.array([0, 0, 1]), temperature=0.5, valid=jnp.array([True, True, False]))
    np.testing.assert_allclose(float(got), 0.0, atol=1e-7)


def test_invariant_to_embedding_scale():
    rng = np.random.default_rng(7)
    emb = jnp.asarray(rng.normal(size=(10, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, size=10))
    scales = jnp.asarray(rng.uniform(0.01, 100.0, size=(10, 1)), jnp.float32)
    np.testing.assert_allclose(float(supcon(emb * scales, labels, temperature=0.07)),
                               float(supcon(emb, labels, temperature=0.07)), rtol=1e-5)


def test_gradient_is_finite_and_padded_rows_get_none():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(8, 4)).astype(np.float32)
    emb[6:] = 0.0  # padding rows of zeros
    labels = jnp.array([0, 0, 1, 1, 2, 3, 0, 0])
    valid = jnp.array([True] * 6 + [False] * 2)
    lone = jnp.arange(8)                       # nothing has a positive
    one = jnp.array([True] + [False] * 7)      # a single valid row: no denominator at all

    @jax.jit   # the three cases' losses and gradients in one program (eager grads compile op by op)
    def losses_and_grads(e):
        return [jax.value_and_grad(lambda e: supcon_loss(e, y, valid=v))(e)
                for y, v in ((labels, valid), (lone, None), (labels, one))]

    (_, grad), (lone_loss, lone_grad), (one_loss, one_grad) = losses_and_grads(jnp.asarray(emb))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.abs(np.asarray(grad[:6])).sum() > 0
    np.testing.assert_array_equal(np.asarray(grad[6:]), 0.0)
    # nothing has a positive: loss 0 and a zero (not NaN) gradient
    assert float(lone_loss) == 0.0
    np.testing.assert_array_equal(np.asarray(lone_grad), 0.0)
    # a single valid row: no denominator at all
    assert float(one_loss) == 0.0
    assert np.all(np.isfinite(np.asarray(one_grad)))


def test_low_temperature_is_stable():
    """Logits of 1/0.01 = 100 would overflow exp in float32 without the log-sum-exp shift."""
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(9, 3))
    labels = rng.integers(0, 2, size=9)
    got = supcon(jnp.asarray(emb, jnp.float32), jnp.asarray(labels), temperature=0.01)
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = z @ z.T / 0.01
    losses = []
    for i in range(9):  # the same formula, in log space
        others = [a for a in range(9) if a != i]
        lse = np.logaddexp.reduce(sims[i, others])
        pos = [p for p in others if labels[p] == labels[i]]
        if pos:
            losses.append(np.mean([lse - sims[i, p] for p in pos]))
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), np.mean(losses), rtol=1e-5)


def test_geco_labels_our_reading():
    class_id = jnp.array([0, 1, 0, 1, 2])
    is_recon = jnp.array([False, False, True, True, True])
    labels = geco_contrastive_labels(class_id, is_recon, 3)
    assert np.asarray(labels).tolist() == [0, 1, 3, 4, 5]
    # originals of ID 0 attract each other; the reconstruction of ID 0 is their negative
    emb = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    attract = supcon(emb, geco_contrastive_labels(jnp.array([0, 0, 0]), jnp.array([False, False, True]), 1))
    swapped = supcon(emb, geco_contrastive_labels(jnp.array([0, 0, 0]), jnp.array([False, True, False]), 1))
    assert float(attract) < float(swapped)


def test_errors_name_the_problem():
    with pytest.raises(ShapeError, match="labels"):
        supcon_loss(jnp.zeros((4, 3)), jnp.zeros((5,), jnp.int32))
    with pytest.raises(ShapeError, match="embeddings"):
        supcon_loss(jnp.zeros((4,)), jnp.zeros((4,), jnp.int32))
    with pytest.raises(ConfigError, match="temperature"):
        supcon_loss(jnp.zeros((4, 3)), jnp.zeros((4,), jnp.int32), temperature=0.0)
    with pytest.raises(ShapeError, match="is_reconstruction"):
        geco_contrastive_labels(jnp.zeros((3,), jnp.int32), jnp.zeros((4,), bool), 2)
