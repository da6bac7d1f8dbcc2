"""One DCASE2020 baseline AE per machine type: the bank's loss, gradients and BatchNorm statistics on a
mixed batch against each type's AE trained by hand on its own rows alone, and the score of every row
against ``ae_score`` of its own type's AE."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.models.asd_ae import ASDAEConfig, ASDAutoencoder, ae_loss, ae_score, context_vectors
from jaxaudio.models.asd_ae_bank import ASDAEBank, ASDAEBankConfig

TOY = ASDAEConfig(n_mels=8, frames=5, hidden=16, depth=2, bottleneck=4)
CLASS_TYPES = (0, 0, 1, 2, 2)         # 5 ID classes of 3 machine types
CLASS_ID = np.array([0, 3, 1, 4, 0, 3])   # types 0 2 0 2 0 2: type 1 is absent from the batch


def _bank():
    bank = ASDAEBank(ASDAEBankConfig(TOY, CLASS_TYPES), rngs=nnx.Rngs(0))
    # running statistics away from their (0, 1) start, so the eval-mode paths are not trivial
    rng = np.random.default_rng(1)
    for ae in bank.aes:
        for layer in ae.layers:
            layer.norm.mean[...] = jnp.asarray(rng.normal(size=layer.norm.mean.shape), jnp.float32)
            layer.norm.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=layer.norm.var.shape), jnp.float32)
    return bank


def _log_mel(batch=len(CLASS_ID), frames=11):
    # O(1) features: flax's E[x^2] - E[x]^2 variance, summed in another order by the two paths, stays exact
    return jnp.asarray(np.random.default_rng(0).normal(size=(batch, frames, TOY.n_mels)) - 0.5, jnp.float32)


def _functional(loss):
    """``(params, rest) -> (loss, new rest)`` and its gradient, as the trainer's step takes them."""
    def f(graphdef, params, rest, *args):
        model = nnx.merge(graphdef, params, rest, copy=True)
        value = loss(model, *args)
        return value, nnx.state(model, nnx.Not(nnx.Param))
    return jax.jit(jax.value_and_grad(f, argnums=1, has_aux=True), static_argnums=0)


def test_loss_is_each_types_own_training_on_its_own_rows():
    bank, log_mel = _bank(), _log_mel()
    graphdef, params, rest = nnx.split(bank, nnx.Param, ...)
    step = _functional(lambda model, mel, ids: model.loss(mel, ids, train=True))
    (total, new_rest), grads = step(graphdef, params, rest, log_mel, jnp.asarray(CLASS_ID))

    types = np.asarray(CLASS_TYPES)[CLASS_ID]
    own = _functional(lambda ae, mel: ae_loss(ae(context_vectors(mel, 5), train=True), context_vectors(mel, 5)))
    by_hand, expected = 0.0, []
    for k in range(3):
        ae_def, ae_params, ae_rest = nnx.split(bank.aes[k], nnx.Param, ...)
        rows = np.flatnonzero(types == k)
        if not len(rows):
            expected.append(None)
            continue
        (value, ae_new_rest), ae_grads = own(ae_def, ae_params, ae_rest, log_mel[rows])
        by_hand += float(value)
        expected.append((ae_grads, ae_new_rest))

    np.testing.assert_allclose(float(total), by_hand, rtol=1e-5)
    for k, want in enumerate(expected):
        got_grads, got_rest = grads["aes"][k], new_rest["aes"][k]
        if want is None:   # absent: no gradient, running statistics untouched
            assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(got_grads))
            jax.tree.map(np.testing.assert_array_equal, got_rest, rest["aes"][k])
            continue
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got_grads, want[0])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got_rest, want[1])


def test_eval_loss_and_score_take_each_row_from_its_own_type():
    bank, log_mel = _bank(), _log_mel()
    ids = jnp.asarray(CLASS_ID)
    scores = np.asarray(bank.score(log_mel, ids))
    by_ae = [np.asarray(ae_score(ae, log_mel)) for ae in bank.aes]   # eval mode: a row's score is its own
    types = np.asarray(CLASS_TYPES)[CLASS_ID]
    for row, k in enumerate(types.tolist()):
        np.testing.assert_allclose(scores[row], by_ae[k][row], rtol=1e-6)
        other = by_ae[(k + 1) % 3][row]
        assert abs(other - scores[row]) > 1e-3 * scores[row]   # the routing shows: another type's AE differs
    # eval-mode loss: each present type's mean score over its rows
    want = sum(float(np.mean(scores[types == k])) for k in (0, 2))
    np.testing.assert_allclose(float(bank.loss(log_mel, ids, train=False)), want, rtol=1e-5)


def test_one_ae_per_machine_type():
    bank = nnx.eval_shape(lambda: ASDAEBank(ASDAEBankConfig(TOY, CLASS_TYPES), rngs=nnx.Rngs(0)))
    assert len(bank.aes) == 3 and all(isinstance(ae, ASDAutoencoder) for ae in bank.aes)
    np.testing.assert_array_equal(np.asarray(bank.row_types(jnp.asarray(CLASS_ID))), [0, 2, 0, 2, 0, 2])
