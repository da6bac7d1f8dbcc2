"""ConvNeXt-T (``cnn_zoo/convnext.py``): shapes for 1 and 3 input channels, timm's structure,
LayerNorm (no batch statistics: train and eval agree without stochastic depth), stochastic depth
and dropout only in training, parameter counts (published against timm's), jit, and config
errors. Numerical parity with timm is in tests/convert/test_timm_convnext_vs_timm.py.

The numeric tests use tiny models with numpy weights (a real init compiles every initializer shape
apart; the init's layer scale is checked in ``test_published_structure_follows_timm``); one of them
and its train step (which also gives the train-mode logits) serve two tests."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.convnext import ENTRIES, ConvNeXt, ConvNeXtConfig, drop_path
from tests.models.numpy_weights import with_numpy_weights

NAME = "convnext_tiny"


def build(preset="tiny", **overrides):
    return ConvNeXt(dataclasses.replace(ENTRIES[NAME].presets[preset], **overrides), rngs=nnx.Rngs(key(0)))


@functools.cache
def abstract(preset="tiny", **overrides):
    """The model with shapes only: nothing allocated or compiled (built once per configuration:
    the tests only read it)."""
    return nnx.eval_shape(lambda: build(preset, **overrides))


def build_numpy(seed=0, **overrides):
    """The tiny model with numpy weights: He-normal kernels, LayerNorm at its init (scale 1,
    shift 0), biases 0 and the layer scale gamma at its init, 1e-6."""
    model = nnx.eval_shape(lambda: build("tiny", **overrides))
    return with_numpy_weights(model, seed, fill={"scale": 1.0, "gamma": 1e-6})


def n_params(model) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


def images(shape, seed=0):
    """float32 numpy: ``jnp.asarray`` of a numpy array compiles a program per shape, eagerly."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shapes(in_channels):
    model = abstract(num_classes=45, in_channels=in_channels)
    graphdef, state = nnx.split(model)
    for h, w in ((64, 64), (32, 45)):   # >= 32: the overall stride
        x = jax.ShapeDtypeStruct((2, h, w, in_channels), jnp.float32)
        logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x)
        feats = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x, train=False), state, x)
        assert logits.shape == (2, 45)
        assert feats.shape == (2, model.num_features)
    for shape, match in (((1, 32, 32, in_channels + 1), f"batch, h, w, {in_channels}"),
                         ((1, 31, 64, in_channels), "h, w >= 32")):
        with pytest.raises(ShapeError, match=match):
            jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state,
                           jax.ShapeDtypeStruct(shape, jnp.float32))


def test_published_structure_follows_timm():
    """depths (3, 3, 9, 3), dims (96, 192, 384, 768); 4x4/4 patchify stem; no downsample in
    stage 1, LayerNorm + 2x2/2 conv after; 7x7 depthwise convs; MLP 4x; gamma = 1e-6; eps 1e-6."""
    m = abstract("published")
    assert [len(s.blocks) for s in m.stages] == [3, 3, 9, 3] and m.num_features == 768
    assert m.stem[0].kernel_size == (4, 4) and m.stem[0].strides == 4 and m.stem[1].epsilon == 1e-6
    assert m.stages[0].downsample is None
    for stage, (c_in, c_out) in zip(m.stages[1:], ((96, 192), (192, 384), (384, 768))):
        norm, conv = stage.downsample
        assert norm.num_features == c_in and conv.kernel_size == (2, 2) and conv.strides == 2
        assert conv.out_features == c_out
    block = m.stages[2].blocks[0]
    assert block.conv_dw.kernel_size == (7, 7) and block.conv_dw.feature_group_count == 384
    assert block.mlp.fc1.out_features == 4 * 384 and block.norm.epsilon == 1e-6
    gamma = jax.jit(lambda: build().stages[0].blocks[0].gamma.get_value())()   # one compiled init
    np.testing.assert_allclose(gamma, 1e-6)


def test_parameter_counts():
    """Published against timm's ``convnext_tiny`` (28.59 M, 1000 classes); tiny under 0.5 M."""
    assert n_params(abstract("published")) == 28_589_128
    assert n_params(abstract(num_classes=45)) == 274_813
    assert n_params(abstract()) <= 500_000   # even with 1000 classes


@nnx.jit(static_argnums=2)
def forward(model, x, train, rngs=None):
    """One compiled forward per (model, shape, mode): cheaper than eager's one compile per op."""
    return model(x, train=train, rngs=rngs)


@pytest.fixture(scope="module")
def plain():
    """A tiny model without stochastic depth or dropout (1 channel, 5 classes), a batch, and its
    jit value-and-grad train step -> (loss, train-mode logits, gradients)."""
    model = build_numpy(num_classes=5, in_channels=1)
    x, y = 2.0 + images((4, 32, 32, 1)), np.arange(4) % 5

    @nnx.jit
    def step(model, x, y):
        def loss_fn(m):
            logits = m(x, train=True)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)), logits
        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        return loss, logits, grads

    return model, x, y, step


def test_no_batch_statistics_and_eval_is_deterministic(plain):
    """LayerNorm normalises each position on its own: train (without stochastic depth or dropout)
    equals eval, and a sample's output does not depend on the rest of the batch."""
    model, x, y, step = plain
    other = x.copy()
    other[1:] = images((3, 32, 32, 1), seed=1)   # same first sample, different rest of the batch
    ref = forward(model, x, False)
    np.testing.assert_allclose(step(model, x, y)[1], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(forward(model, other, False)[0], ref[0], rtol=1e-5, atol=1e-5)
    assert not nnx.state(model, nnx.BatchStat)


def test_stochastic_depth_and_dropout_only_in_training():
    model = build_numpy(drop_path_rate=0.3, drop_rate=0.5, num_classes=5)
    rates = [b.drop_rate for s in model.stages for b in s.blocks]
    np.testing.assert_allclose(rates, np.linspace(0, 0.3, 5))   # timm: linear over all blocks
    x = images((4, 32, 32, 3))
    feats, logits = nnx.jit(lambda m, x: (m.features(x, train=False), m(x, train=False)))(model, x)
    np.testing.assert_allclose(logits, model.head.fc(feats), rtol=1e-5, atol=1e-6)
    a, b = forward(model, x, True, key(1)), forward(model, x, True, key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, forward(model, x, True, key(1)))
    with pytest.raises(ConfigError, match="rngs"):
        jax.eval_shape(lambda x: model.features(x, train=True), x)


def test_drop_path_drops_whole_samples():
    x = jnp.ones((2000, 2, 2, 3))
    y = np.asarray(drop_path(x, 0.25, train=True, rngs=key(0)))
    per_sample = y.reshape(2000, -1)
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))     # one decision per sample
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.04
    np.testing.assert_array_equal(drop_path(x, 0.25, train=False, rngs=None), x)


def test_jit_train_step(plain):
    """A jit value-and-grad step runs: finite loss and a nonzero gradient for every parameter."""
    model, x, y, step = plain
    loss, _, grads = step(model, x, y)
    assert np.isfinite(loss)
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))


def test_config_errors():
    with pytest.raises(ConfigError, match="depths"):
        ConvNeXtConfig(depths=(1, 1), dims=(8, 16, 32))
    with pytest.raises(ConfigError, match="kernel_size"):
        ConvNeXtConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="drop_path_rate"):
        ConvNeXtConfig(drop_path_rate=1.0)
    with pytest.raises(ConfigError, match="num_classes"):
        ConvNeXtConfig(num_classes=0)
    cfg = ConvNeXtConfig(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])   # lists from a config file
    assert cfg.depths == (1, 1, 1, 1) and hash(cfg)
    assert ENTRIES[NAME].timm_name == "convnext_tiny" and ENTRIES[NAME].classifier == "head.fc"
