"""CRNN baseline: shapes and parameter count of the DCASE config, functional jit use, modes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models.crnn import CRNN, CRNNConfig, instance_scale
from jaxaudio.nn.cnn import CNNConfig
from jaxaudio.train.state import merge_model, split_model


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


SMALL = CRNNConfig(
    n_classes=3,
    cnn=CNNConfig(channels=(4, 8), pooling=((2, 4), (2, 4)), dropout=0.5),
    rnn_hidden=6,
)


def dcase_param_count(cfg: CRNNConfig) -> int:
    """Closed form, layer by layer, as PyTorch would count the DESED_task CRNN."""
    c, k = cfg.cnn, cfg.cnn.kernel
    total, cin = 0, c.n_in_channel
    for cout in c.channels:
        total += cin * cout * k * k + cout  # conv
        total += 2 * cout  # BatchNorm scale and shift
        total += cout * cout + cout if c.activation in ("glu", "cg") else 0  # gating dense
        cin = cout
    h, n_in = cfg.rnn_hidden, c.channels[-1]
    for _ in range(cfg.rnn_layers):
        total += 2 * 3 * h * (n_in + h + 2)  # two directions, weights + 2 biases
        n_in = 2 * h
    heads = 2 if cfg.attention else 1
    return total + heads * (2 * h * cfg.n_classes + cfg.n_classes)


def test_dcase_config_shapes_and_parameter_count():
    cfg = CRNNConfig()
    model = nnx.eval_shape(lambda: CRNN(cfg, rngs=nnx.Rngs(key(0))))
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state,
                         jax.ShapeDtypeStruct((2, 626, 128), jnp.float32))
    assert out["strong"].shape == (2, 156, 10)
    assert out["weak"].shape == (2, 10)
    count = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count == dcase_param_count(cfg) == 1_112_420


@pytest.fixture(scope="module")
def small():
    model = CRNN(SMALL, rngs=nnx.Rngs(key(0)))
    x = jax.random.normal(key(1), (2, 20, 16)) * 4.0 - 30.0
    return model, x


def make_fns(graphdef):
    @jax.jit
    def evaluate(params, model_state, x):
        return merge_model(graphdef, params, model_state)(x, train=False)

    @jax.jit
    def train_forward(params, model_state, x, key):
        model = merge_model(graphdef, params, model_state)
        out = model(x, train=True, rngs=key)
        return out, nnx.state(model, nnx.Not(nnx.Param))

    return evaluate, train_forward


def test_jit_eval_is_deterministic_probabilities(small):
    model, x = small
    graphdef, params, model_state = split_model(model)
    evaluate, _ = make_fns(graphdef)
    a, b = evaluate(params, model_state, x), evaluate(params, model_state, x)
    assert a["strong"].shape == (2, 5, 3) and a["weak"].shape == (2, 3)
    for key in ("strong", "weak"):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
        assert np.all((np.asarray(a[key]) > 0) & (np.asarray(a[key]) < 1))
    # the weak output is a weighted mean over time of the strong one
    strong = np.asarray(a["strong"])
    assert np.all(a["weak"] >= strong.min(axis=1) - 1e-6) and np.all(a["weak"] <= strong.max(axis=1) + 1e-6)


def test_train_mode_uses_dropout_keys_and_updates_batch_stats(small):
    model, x = small
    graphdef, params, model_state = split_model(model)
    _, train_forward = make_fns(graphdef)
    out1, new_state = train_forward(params, model_state, x, key(1))
    out2, _ = train_forward(params, model_state, x, key(2))
    assert not np.allclose(out1["strong"], out2["strong"])
    old_mean = model_state["cnn"]["blocks"][0]["norm"]["mean"][...]
    new_mean = new_state["cnn"]["blocks"][0]["norm"]["mean"][...]
    assert not np.allclose(old_mean, new_mean)
    with pytest.raises(ConfigError, match="rngs"):
        model(x, train=True)


def test_nnx_mode_flags_change_nothing_and_train_is_required(small):
    """The train core may still call model.train()/model.eval(): only the explicit ``train`` counts."""
    model, x = small
    graphdef, params, model_state = split_model(model)
    evaluate, train_forward = make_fns(graphdef)

    @jax.jit
    def by_mode(params, model_state, x, k):
        m = merge_model(graphdef, params, model_state)
        m.train()  # the opposite of each explicit flag below
        out_eval = m(x, train=False)
        m.eval()
        return out_eval, m(x, train=True, rngs=k)

    out_eval, out_train = by_mode(params, model_state, x, key(3))
    want_train, _ = train_forward(params, model_state, x, key(3))
    np.testing.assert_allclose(np.asarray(out_eval["strong"]),
                               np.asarray(evaluate(params, model_state, x)["strong"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out_train["strong"]), np.asarray(want_train["strong"]), atol=1e-6)
    with pytest.raises(TypeError, match="train"):
        model(x)


def test_unrolled_rnn_matches_scan(small):
    model, x = small
    unrolled = CRNN(CRNNConfig(**{**SMALL.__dict__, "unroll_rnn": True}), rngs=nnx.Rngs(key(5)))
    nnx.update(unrolled, nnx.state(model))
    run = nnx.jit(lambda m, v: m(v, train=False))
    a, b = run(model, x), run(unrolled, x)
    np.testing.assert_allclose(np.asarray(a["strong"]), np.asarray(b["strong"]), atol=1e-6)


def test_minmax_scaling_makes_output_invariant_to_gain_and_offset(small):
    model, x = small
    run = nnx.jit(lambda m, v: m(v, train=False))
    a, b = run(model, x), run(model, 3.0 * x + 7.0)
    np.testing.assert_allclose(np.asarray(a["strong"]), np.asarray(b["strong"]), atol=1e-5)


def test_instance_scale_against_numpy():
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    x[1] *= 10.0
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(np.asarray(instance_scale(jnp.asarray(x), "minmax", 1e-8)),
                               (x - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True, ddof=1)
    np.testing.assert_allclose(np.asarray(instance_scale(jnp.asarray(x), "standard", 1e-8)),
                               (x - mean) / std, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="input_norm"):
        CRNNConfig(input_norm="batch")


@pytest.mark.slow
def test_full_dcase_model_runs_under_jit():
    model = CRNN(CRNNConfig(), rngs=nnx.Rngs(key(0)))
    graphdef, params, model_state = split_model(model)
    evaluate, train_forward = make_fns(graphdef)
    x = jax.random.normal(key(0), (2, 626, 128))
    out = evaluate(params, model_state, x)
    assert out["strong"].shape == (2, 156, 10) and out["weak"].shape == (2, 10)
    assert np.all((np.asarray(out["strong"]) > 0) & (np.asarray(out["strong"]) < 1))
    out_train, _ = train_forward(params, model_state, x, key(1))
    assert np.all(np.isfinite(np.asarray(out_train["strong"])))
