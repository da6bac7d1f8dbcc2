"""MobileNet V1 / V2 (``cnn_zoo/mobilenet.py`` on ``cnn_zoo/mbconv.py``): shapes for 1 and 3
input channels, the block structure timm's stage strings give, BatchNorm's train and eval modes
against the batch statistics, parameter counts (published presets against timm's), jit, and
config errors. Numerical parity with timm is in tests/convert/test_timm_mobilenet_vs_timm.py."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.mbconv import MBConvConfig, MBConvNet, Stage, make_divisible
from jaxaudio.models.cnn_zoo.mobilenet import ENTRIES, MOBILENET_V1, MOBILENET_V2
from tests.models.numpy_weights import with_numpy_weights

NAMES = ("mobilenet_v1", "mobilenet_v2")


def abstract(name, preset="tiny", **overrides):
    """The model with shapes only: nothing allocated or compiled."""
    cfg = dataclasses.replace(ENTRIES[name].presets[preset], **overrides)
    return nnx.eval_shape(lambda: MBConvNet(cfg, rngs=nnx.Rngs(0)))


def build(name, preset="tiny", seed=0, **overrides):
    """A usable model whose weights come from numpy (He-normal kernels, BatchNorm at its init):
    eager JAX would compile every initializer shape apart, which these tests need not pay for.
    The model's own init is tested in test_efficientnet.py."""
    model = abstract(name, preset, **overrides)
    return with_numpy_weights(model, seed)


@functools.partial(jax.jit, static_argnames=("graphdef", "train"))
def _forward(graphdef, state, x, *, train):
    model = nnx.merge(graphdef, state, copy=True)
    return model(x, train=train), nnx.state(model, nnx.BatchStat)


def forward(model, x, *, train):
    """(logits, BatchNorm statistics after the call), compiled once per model layout and shape;
    the model itself is left as it was."""
    graphdef, state = nnx.split(model)
    return _forward(graphdef, state, x, train=train)


@functools.cache
def published(name):
    """The published preset, abstract, built once for the structure and the count tests (which only read it)."""
    return abstract(name, "published")


@functools.cache
def numeric_model(name):
    """The tiny model (4 classes, 1 channel) of the numeric tests, built once: they leave it as it was."""
    return build(name, num_classes=4, in_channels=1)


def n_params(model) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def images(shape, seed=0):
    """float32 numpy: ``jnp.asarray`` of a numpy array compiles a program per shape, eagerly."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shapes(name, in_channels):
    model = abstract(name, num_classes=45, in_channels=in_channels)
    graphdef, state = nnx.split(model)
    for size in (64, 37):  # any size: torch-style padding keeps every map >= 1 pixel
        x = jax.ShapeDtypeStruct((2, size, size + 8, in_channels), jnp.float32)
        logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x)
        feats = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x, train=False), state, x)
        assert logits.shape == (2, 45)
        assert feats.shape == (2, model.num_features)
    with pytest.raises(ShapeError, match=f"batch, h, w, {in_channels}"):
        model(jnp.zeros((1, 32, 32, in_channels + 1)), train=False)


def test_published_structure_follows_timm():
    """Stage strings -> blocks: V1 has no head conv, 1024 features and no residuals; V2's
    expanded widths are 6x the input, residuals exactly where stride 1 keeps the width."""
    v1, v2 = published("mobilenet_v1"), published("mobilenet_v2")
    assert v1.conv_head is None and v1.num_features == 1024 and v2.num_features == 1280
    assert [len(s) for s in v1.blocks] == [1, 2, 2, 6, 2]
    assert not any(b.has_skip for s in v1.blocks for b in s) and all(b.pw_act for s in v1.blocks for b in s)
    assert [len(s) for s in v2.blocks] == [1, 2, 3, 4, 3, 3, 1]
    skips = [[b.has_skip for b in s] for s in v2.blocks]
    assert skips == [[False], [False, True], [False, True, True], [False, True, True, True], [False, True, True],
                     [False, True, True], [False]]
    assert v2.blocks[0][0].pw_act is False and v2.blocks[0][0].se is None
    assert v2.blocks[3][0].conv_pw.out_features == 32 * 6 and v2.blocks[3][0].conv_dw.strides == 2
    assert v2.conv_stem.strides == 2 and v2.conv_stem.padding == ((1, 1), (1, 1))


def test_parameter_counts():
    """Published presets against timm's counts (mobilenetv1_100 4.23 M, mobilenetv2_100 3.50 M,
    1000 classes); tiny presets under 0.5 M."""
    assert n_params(published("mobilenet_v1")) == 4_231_976
    assert n_params(published("mobilenet_v2")) == 3_504_872
    assert n_params(abstract("mobilenet_v1", num_classes=45)) == 50_493
    assert n_params(abstract("mobilenet_v2", num_classes=45)) == 70_109


def test_make_divisible_as_timm():
    # Hand-worked with timm's rule: nearest multiple of 8, one step up if below 90 % of the value.
    assert [make_divisible(v) for v in (96, 18, 4, 100, 36.0, 1152)] == [96, 24, 8, 104, 40, 1152]


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_eval_mode(name):
    """train=False uses the running averages, so a sample's logits do not depend on the rest of
    its batch, and leaves them unchanged."""
    model = numeric_model(name)
    x = 2.0 + images((8, 64, 64, 1))
    other = x.copy()
    other[1:] = images((7, 64, 64, 1), seed=1)   # sample 0 in another batch
    logits, stats = forward(model, x, train=False)
    np.testing.assert_allclose(forward(model, other, train=False)[0][0], logits[0], rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, stats, nnx.state(model, nnx.BatchStat))


def test_jit_train_step_and_batchnorm_train_mode():
    """A jit value-and-grad train step (batch 8, 64x64, 1 channel) gives a finite loss and a
    nonzero gradient for every parameter, and moves the running averages by PyTorch's momentum
    0.1 towards the batch's statistics (checked at the stem's BatchNorm). MobileNet V1 here: its
    "dsa" blocks are its own; the "ds" / "ir" blocks of V2 train in test_efficientnet.py."""
    model = numeric_model("mobilenet_v1")
    x, y = 2.0 + images((8, 64, 64, 1)), jnp.arange(8) % 4
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, rest, x, y):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            logits = m(x, train=True)
            loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
            return loss, nnx.state(m, nnx.BatchStat)
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, stats), grads = step(params, rest, x, y)
    assert np.isfinite(loss)
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))
    stem = model.conv_stem(x)
    batch_mean, batch_var = jnp.mean(stem, axis=(0, 1, 2)), jnp.var(stem, axis=(0, 1, 2))
    np.testing.assert_allclose(stats["bn1"]["mean"].get_value(), 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["bn1"]["var"].get_value(), 0.9 + 0.1 * batch_var, rtol=1e-4, atol=1e-6)


def test_config_errors():
    with pytest.raises(ConfigError, match="stages\\[0\\].kind"):
        MBConvConfig(stages=(Stage("xx", 1, 3, 1, 1, 8),))
    with pytest.raises(ConfigError, match="stride 1 or 2"):
        MBConvConfig(stages=(("ir", 1, 3, 3, 6, 8),))
    with pytest.raises(ConfigError, match="do not expand"):
        MBConvConfig(stages=(("ds", 1, 3, 1, 6, 8),))
    with pytest.raises(ConfigError, match="act"):
        dataclasses.replace(MOBILENET_V1, act="tanh")
    with pytest.raises(ConfigError, match="drop_rate"):
        dataclasses.replace(MOBILENET_V2, drop_rate=1.0)
    cfg = MBConvConfig(stages=[["ir", 1, 3, 1, 6, 8]])  # lists from a config file become Stages
    assert cfg.stages == (Stage("ir", 1, 3, 1, 6.0, 8, 0.0),)
    assert hash(cfg)
