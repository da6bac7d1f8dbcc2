"""GRU against an independent numpy implementation of PyTorch's nn.GRU equations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.gru import GRU


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


# jit: eager lax.scan re-traces its body on every call, which is slow on a loaded CPU.
apply = nnx.jit(lambda model, x: model(x, train=False))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def torch_gru_direction(x, weight_ih, weight_hh, bias_ih, bias_hh):
    """PyTorch GRU equations, one direction, float64; x (batch, time, in); weights in torch layout."""
    batch, time, _ = x.shape
    hidden = weight_hh.shape[1]
    h = np.zeros((batch, hidden))
    out = np.zeros((batch, time, hidden))
    for t in range(time):
        gi = x[:, t] @ weight_ih.T + bias_ih
        gh = h @ weight_hh.T + bias_hh
        r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = _sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
        n = np.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
        h = (1 - z) * n + z * h
        out[:, t] = h
    return out


def torch_bigru(x, layers):
    """layers: list of dicts direction -> torch-layout weights; backward runs on reversed time."""
    for weights in layers:
        fwd = torch_gru_direction(x, *weights["fwd"])
        outs = [fwd]
        if "bwd" in weights:
            outs.append(torch_gru_direction(x[:, ::-1], *weights["bwd"])[:, ::-1])
        x = np.concatenate(outs, axis=-1)
    return x


def random_torch_weights(rng, in_features, hidden, num_layers, bidirectional):
    dirs = ["fwd", "bwd"] if bidirectional else ["fwd"]
    layers = []
    for k in range(num_layers):
        n_in = in_features if k == 0 else hidden * len(dirs)
        layers.append({
            d: (rng.uniform(-0.5, 0.5, (3 * hidden, n_in)), rng.uniform(-0.5, 0.5, (3 * hidden, hidden)),
                rng.uniform(-0.5, 0.5, 3 * hidden), rng.uniform(-0.5, 0.5, 3 * hidden))
            for d in dirs
        })
    return layers


def load_torch_weights(model, layers):
    """Import torch-layout weights the documented way: transpose and stack directions."""
    for layer, weights in zip(model.layers, layers):
        dirs = [weights[d] for d in ("fwd", "bwd") if d in weights]
        layer.w_ih[...] = jnp.asarray(np.stack([w[0].T for w in dirs]), jnp.float32)
        layer.w_hh[...] = jnp.asarray(np.stack([w[1].T for w in dirs]), jnp.float32)
        layer.b_ih[...] = jnp.asarray(np.stack([w[2] for w in dirs]), jnp.float32)
        layer.b_hh[...] = jnp.asarray(np.stack([w[3] for w in dirs]), jnp.float32)


@pytest.mark.parametrize("bidirectional,num_layers", [(True, 2), (False, 1), (True, 1)])
def test_matches_numpy_torch_equations(bidirectional, num_layers):
    rng = np.random.default_rng(0)
    in_features, hidden = 5, 4
    x = rng.normal(size=(3, 7, in_features)).astype(np.float32)
    layers = random_torch_weights(rng, in_features, hidden, num_layers, bidirectional)
    model = GRU(in_features, hidden, num_layers, bidirectional=bidirectional, rngs=nnx.Rngs(key(0)))
    load_torch_weights(model, layers)
    got = np.asarray(apply(model, jnp.asarray(x)))
    want = torch_bigru(x.astype(np.float64), layers)
    assert got.shape == (3, 7, hidden * (2 if bidirectional else 1) * 1)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_unrolled_equals_scan():
    scan = GRU(6, 8, 2, rngs=nnx.Rngs(key(3)))
    unrolled = GRU(6, 8, 2, unroll=True, rngs=nnx.Rngs(key(4)))
    nnx.update(unrolled, nnx.state(scan))
    x = jax.random.normal(key(1), (2, 5, 6))
    a, b = apply(scan, x), apply(unrolled, x)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def test_unrolled_graph_has_no_loop():
    model = GRU(3, 4, 1, unroll=True, rngs=nnx.Rngs(key(0)))
    hlo = jax.jit(lambda v: model(v, train=False)).lower(jnp.ones((1, 5, 3))).as_text()
    assert "while" not in hlo


def test_bidirectional_directions_see_the_right_context():
    """Forward output at t depends on x[:t+1] only; backward output at t on x[t:] only."""
    hidden = 4
    model = GRU(3, hidden, 1, rngs=nnx.Rngs(key(0)))
    x = jax.random.normal(key(0), (1, 6, 3))
    base, changed_first, changed_last = np.split(
        np.asarray(apply(model, jnp.concatenate([x, x.at[:, 0].add(1.0), x.at[:, -1].add(1.0)]))), 3)
    fwd, bwd = slice(0, hidden), slice(hidden, 2 * hidden)
    # the backward direction at the last frame has only seen the last frame
    np.testing.assert_array_equal(base[:, -1, bwd], changed_first[:, -1, bwd])
    assert not np.allclose(base[:, 0, bwd], changed_first[:, 0, bwd])
    # the forward direction at frame 0 has only seen frame 0
    np.testing.assert_array_equal(base[:, 0, fwd], changed_last[:, 0, fwd])
    assert not np.allclose(base[:, -1, fwd], changed_last[:, -1, fwd])


def test_parameter_count_matches_torch_layout():
    model = GRU(128, 128, 2, rngs=nnx.Rngs(key(0)))
    count = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    # torch.nn.GRU: per layer and direction 3H*(in + H) weights + 2*3H biases
    want = 2 * 3 * 128 * (128 + 128 + 2) + 2 * 3 * 128 * (256 + 128 + 2)
    assert count == want


def test_inter_layer_dropout_needs_rngs_and_is_off_in_eval():
    model = GRU(3, 4, 2, dropout=0.5, rngs=nnx.Rngs(key(0)))
    x = jnp.ones((2, 5, 3))
    with pytest.raises(ConfigError, match="dropout_recurrent"):
        model(x, train=True)
    train = nnx.jit(lambda m, v, key: m(v, train=True, rngs=key))
    evaluate = nnx.jit(lambda m, v: m(v, train=False))
    a = train(model, x, key(0))
    b = train(model, x, key(1))
    assert not np.allclose(a, b)
    with pytest.raises(TypeError, match="train"):
        model(x)  # train is required: no NNX-mode default
    first = np.asarray(evaluate(model, x))
    model.train()  # NNX mode flags change nothing; only the explicit train does
    np.testing.assert_array_equal(np.asarray(evaluate(model, x)), first)
    np.testing.assert_array_equal(np.asarray(train(model, x, key(0))), np.asarray(a))
