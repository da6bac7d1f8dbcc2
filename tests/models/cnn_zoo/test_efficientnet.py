"""EfficientNet-B0 (``cnn_zoo/efficientnet.py`` on ``cnn_zoo/mbconv.py``): shapes for 1 and 3
input channels, squeeze-excite widths as timm rounds them and its gate against the formula,
stochastic depth's per-block rates and statistics, dropout only in training (and a clear error
without rngs), parameter counts, BatchNorm modes and a jit train step. Parity with timm is in
tests/convert/test_timm_efficientnet_vs_timm.py."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models.cnn_zoo.efficientnet import EFFICIENTNET_B0, EFFICIENTNET_B0_TINY, ENTRIES
from jaxaudio.models.cnn_zoo.mbconv import MBConvNet, SqueezeExcite, classifier_uniform, conv, drop_path
from tests.models.numpy_weights import with_numpy_weights


def abstract(cfg=EFFICIENTNET_B0_TINY, **overrides):
    """The model with shapes only: nothing allocated or compiled."""
    cfg = dataclasses.replace(cfg, **overrides)
    return nnx.eval_shape(lambda: MBConvNet(cfg, rngs=nnx.Rngs(0)))


def build(cfg=EFFICIENTNET_B0_TINY, seed=0, **overrides):
    """A usable model with numpy weights (He-normal kernels, BatchNorm at its init): eager JAX
    compiles every initializer shape apart. ``test_init`` builds one with its own init."""
    model = abstract(cfg, **overrides)
    return with_numpy_weights(model, seed)


def n_params(model) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def images(shape, seed=0):
    """float32 numpy: ``jnp.asarray`` of a numpy array compiles a program per shape, eagerly."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_entry():
    e = ENTRIES["efficientnet_b0"]
    assert e.timm_name == "efficientnet_b0" and e.classifier == "classifier" and e.model is MBConvNet
    assert e.presets == {"tiny": EFFICIENTNET_B0_TINY, "published": EFFICIENTNET_B0}


@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shapes(in_channels):
    for cfg in (EFFICIENTNET_B0_TINY, EFFICIENTNET_B0):
        model = abstract(cfg, num_classes=45, in_channels=in_channels)
        graphdef, state = nnx.split(model)
        x = jax.ShapeDtypeStruct((2, 64, 48, in_channels), jnp.float32)
        assert jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x).shape == (2, 45)
        feats = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x, train=False), state, x)
        assert feats.shape == (2, model.num_features) == (2, cfg.head_channels)


def test_published_structure_and_counts():
    """timm's B0: 16 blocks in 7 stages, kernels 3/5, squeeze-excite reduced to a quarter of each
    block's input width (``round(mid * 0.25 / 6)``), stochastic depth 0.2 * i / 16; 5,288,548
    parameters with 1000 classes (timm's efficientnet_b0: 5.29 M)."""
    m = abstract(EFFICIENTNET_B0)
    assert [len(s) for s in m.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert [s[0].conv_dw.kernel_size for s in m.blocks] == [(3, 3), (3, 3), (5, 5), (3, 3), (5, 5), (5, 5), (3, 3)]
    assert [s[0].se.conv_reduce.out_features for s in m.blocks] == [8, 4, 6, 10, 20, 28, 48]
    assert m.blocks[6][0].se.conv_reduce.in_features == 1152
    rates = [b.drop_rate for s in m.blocks for b in s]
    np.testing.assert_allclose(rates, 0.2 * np.arange(16) / 16)
    assert n_params(m) == 5_288_548
    assert n_params(abstract(num_classes=45)) == 87_159


def test_squeeze_excite_against_formula():
    se = SqueezeExcite(6, 2, "silu", rngs=nnx.Rngs(1))
    x = np.asarray(images((2, 5, 4, 6)))
    w1, b1 = np.asarray(se.conv_reduce.kernel.get_value())[0, 0], np.asarray(se.conv_reduce.bias.get_value())
    w2, b2 = np.asarray(se.conv_expand.kernel.get_value())[0, 0], np.asarray(se.conv_expand.bias.get_value())
    s = x.mean(axis=(1, 2)) @ w1 + b1
    s = s / (1 + np.exp(-s))                      # SiLU
    gate = 1 / (1 + np.exp(-(s @ w2 + b2)))       # sigmoid
    np.testing.assert_allclose(se(jnp.asarray(x)), x * gate[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_drop_path_statistics():
    """Per sample: zero with probability ``rate``, else scaled by 1 / keep; identity in eval."""
    x = jnp.ones((4000, 2, 2, 3))
    y = np.asarray(drop_path(x, 0.25, train=True, rngs=nnx.Rngs(dropout=3)))
    per_sample = y.reshape(4000, -1)
    assert np.all((per_sample == 0).all(axis=1) | np.isclose(per_sample, 1 / 0.75).all(axis=1))
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    assert drop_path(x, 0.25, train=False, rngs=None) is x


def test_regularisation_needs_rngs_only_in_train():
    """Without rngs, training with dropout or stochastic depth raises a ConfigError naming the
    rates (eval needs none; draws from rngs are tested with the train step below)."""
    model = abstract(drop_path_rate=0.3, num_classes=3)
    x = images((4, 32, 32, 3))
    with pytest.raises(ConfigError, match="drop_rate=0.2 / drop_path_rate=0.3 needs rngs"):
        model(x, train=True)
    with pytest.raises(ConfigError, match="needs rngs"):
        model.features(x, train=True)
    graphdef, state = nnx.split(abstract(drop_rate=0.0, num_classes=3))
    assert jax.eval_shape(lambda s: nnx.merge(graphdef, s)(x, train=True), state).shape == (4, 3)
    # The tiny preset's dropout acts on the classifier's input only: features() needs no rngs.
    graphdef, state = nnx.split(abstract(num_classes=3))
    assert jax.eval_shape(lambda s: nnx.merge(graphdef, s).features(x, train=True), state).shape == (4, 256)


def test_init():
    """The model's own init (timm's, after the TensorFlow reference), through the layer helpers
    every block uses: conv kernels N(0, 2 / fan_out) with a depthwise kernel's fan-out its own
    taps (kh kw), biases 0, the classifier U(+-1/sqrt(classes)). (A whole real build would compile
    every parameter shape's initializer apart: seconds the other tests need not spend.)"""
    rngs = nnx.Rngs(0)
    depthwise = conv(144, 144, 5, 2, groups=144, rngs=rngs)
    pointwise = conv(24, 144, bias=True, rngs=rngs)
    assert depthwise.padding == ((2, 2), (2, 2)) and depthwise.kernel.get_value().shape == (5, 5, 1, 144)
    np.testing.assert_allclose(np.asarray(depthwise.kernel.get_value()).std(), np.sqrt(2 / 25), rtol=0.05)
    np.testing.assert_allclose(np.asarray(pointwise.kernel.get_value()).std(), np.sqrt(2 / 144), rtol=0.05)
    assert np.all(np.asarray(pointwise.bias.get_value()) == 0)
    head = np.asarray(classifier_uniform(100)(jax.random.key(0), (1280, 100)))
    assert 0.099 < np.abs(head).max() <= 0.1


def test_jit_train_step_with_regularisation():
    """A jit value-and-grad train step with dropout and stochastic depth: finite gradients; the
    loss depends on the key (a PRNG key as rngs) and is the same for the same key; the stem's
    running mean moves by 0.1 of the batch mean (PyTorch's momentum)."""
    model = build(num_classes=4, in_channels=1, drop_path_rate=0.3)
    x, y = 1.5 + images((8, 64, 64, 1)), jnp.arange(8) % 4
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, rest, x, y, key):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            logits = m(x, train=True, rngs=key)
            loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
            return loss, nnx.state(m, nnx.BatchStat)
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, stats), grads = step(params, rest, x, y, jax.random.key(0))
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    stem_mean = jnp.mean(model.conv_stem(x), axis=(0, 1, 2))
    np.testing.assert_allclose(stats["bn1"]["mean"].get_value(), 0.1 * stem_mean, rtol=1e-4, atol=1e-6)
    (again, _), _ = step(params, rest, x, y, jax.random.key(0))
    (other, _), _ = step(params, rest, x, y, jax.random.key(1))
    assert again == loss and other != loss
