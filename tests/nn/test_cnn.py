"""DCASE-style CNN: shapes of the DCASE and PMAM stacks, gating and conv/pool by hand, BatchNorm modes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.signal import correlate2d

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import CNN, CNNConfig, PMAM_CNN


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


EPS = 1e-3  # BatchNorm epsilon of the DCASE baseline


def abstract_output(cfg, x_shape):
    """Output shape without allocating weights or compiling (fast on a busy CPU)."""
    model = nnx.eval_shape(lambda: CNN(cfg, rngs=nnx.Rngs(key(0))))
    graphdef, state = nnx.split(model)
    def fn(s, x):
        return nnx.merge(graphdef, s)(x, train=False)

    return jax.eval_shape(fn, state, jax.ShapeDtypeStruct(x_shape, jnp.float32))


def test_dcase_config_shapes():
    cfg = CNNConfig()
    assert cfg.time_pool == 4 and cfg.output_frames(626) == 156 and cfg.output_bins(128) == 1
    assert abstract_output(cfg, (2, 626, 128)).shape == (2, 156, 128)


def test_pmam_config_shapes():
    assert len(PMAM_CNN.channels) == 10 and PMAM_CNN.activation == "cg"
    assert abstract_output(PMAM_CNN, (2, 1000, 128)).shape == (2, 250, 384)


def test_frequency_not_pooled_to_one_is_an_error():
    with pytest.raises(ConfigError, match="cnn.pooling"):
        abstract_output(CNNConfig(), (1, 64, 64))


def test_bad_configs_are_rejected():
    with pytest.raises(ConfigError, match="cnn.pooling"):
        CNNConfig(channels=(4, 8), pooling=((2, 2),))
    with pytest.raises(ConfigError, match="cnn.activation"):
        CNNConfig(activation="swish")


def one_channel_toy(activation, pool=(1, 1)):
    """A single block with 1 channel, identity 3x3 kernel and dropout off."""
    cfg = CNNConfig(channels=(1,), pooling=(pool,), activation=activation, dropout=0.0)
    model = CNN(cfg, rngs=nnx.Rngs(key(0)))
    block = model.blocks[0]
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1.0
    block.conv.kernel[...] = jnp.asarray(kernel)
    block.conv.bias[...] = jnp.zeros((1,))
    return model, block


@pytest.mark.parametrize("activation", ["cg", "glu"])
def test_gating_against_hand_computation(activation):
    model, block = one_channel_toy(activation)
    w, b = 1.5, -0.25
    block.gate.linear.kernel[...] = jnp.full((1, 1), w)
    block.gate.linear.bias[...] = jnp.full((1,), b)
    x = np.array([[[-2.0], [-0.5], [0.0], [0.7], [3.0]]], np.float32)  # (batch, time, freq=1)
    got = np.asarray(model(jnp.asarray(x), train=False))[..., 0]
    y = x[..., 0] / np.sqrt(1.0 + EPS)  # BatchNorm at init in eval mode: mean 0, var 1
    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))

    want = y * sig(w * y + b) if activation == "cg" else (w * y + b) * sig(y)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_conv_same_padding_and_floor_pooling_against_scipy():
    model, block = one_channel_toy("relu", pool=(2, 4))
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3)).astype(np.float32)
    block.conv.kernel[...] = jnp.asarray(kernel[:, :, None, None])
    block.conv.bias[...] = jnp.full((1,), 0.3)
    x = rng.normal(size=(7, 4)).astype(np.float32)  # 7 frames: the last one is dropped by the pool
    got = np.asarray(model(jnp.asarray(x[None]), train=False))[0, :, 0]
    conv = correlate2d(x, kernel, mode="same", boundary="fill") + 0.3
    act = np.maximum(conv / np.sqrt(1.0 + EPS), 0.0)
    want = act[:6].reshape(3, 2, 1, 4).mean(axis=(1, 3))[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_train_uses_batch_stats_and_updates_like_torch_momentum():
    model, block = one_channel_toy("relu")
    x = np.random.default_rng(1).normal(loc=2.0, scale=3.0, size=(2, 5, 1)).astype(np.float32)
    mean, var = x.mean(), x.var()
    got_train = np.asarray(model(jnp.asarray(x), train=True))
    np.testing.assert_allclose(got_train, np.maximum((x - mean) / np.sqrt(var + EPS), 0), atol=1e-5)
    # PyTorch momentum 0.99: running = 0.01 * running + 0.99 * batch, from (0, 1)
    run_mean, run_var = 0.99 * mean, 0.01 * 1.0 + 0.99 * var
    np.testing.assert_allclose(np.asarray(block.norm.mean[...]), [run_mean], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(block.norm.var[...]), [run_var], rtol=1e-5)
    got_eval = np.asarray(model(jnp.asarray(x), train=False))
    want_eval = np.maximum((x - run_mean) / np.sqrt(run_var + EPS), 0)
    np.testing.assert_allclose(got_eval, want_eval, atol=1e-5)
    # eval mode leaves the running statistics alone
    np.testing.assert_allclose(np.asarray(block.norm.mean[...]), [run_mean], rtol=1e-5)


def test_dropout_needs_a_key_in_training_and_is_off_in_eval():
    cfg = CNNConfig(channels=(2,), pooling=((1, 4),), dropout=0.5)
    model = CNN(cfg, rngs=nnx.Rngs(key(0)))
    x = jax.random.normal(key(0), (2, 6, 4))
    with pytest.raises(ConfigError, match="cnn.dropout"):
        model(x, train=True)
    a = model(x, train=True, rngs=key(1))
    b = model(x, train=True, rngs=key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(np.asarray(model(x, train=False)), np.asarray(model(x, train=False)))
