"""ResNet-50 and ResNet-V2 (``cnn_zoo/resnet.py``): shapes for 1 and 3 input channels, the block
structure of timm's models, BatchNorm's train and eval modes against the batch statistics,
dropout only in training, parameter counts (published presets against timm's), jit, and config
errors. Numerical parity with timm is in tests/convert/test_timm_resnet_vs_timm.py.

The numeric tests share, per model, one tiny model with numpy weights (a real init compiles every
initializer shape apart; the init itself is checked in ``test_published_structure_follows_timm``) and
three compiled programs: an eval forward, the stem, and a functional train step (value and grad, the
logits and the new BatchNorm statistics), all at one batch shape."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.resnet import ENTRIES, ResNetConfig, ResNetV2Config
from tests.models.numpy_weights import with_numpy_weights

NAMES = ("resnet50", "resnetv2")


def build(name, preset="tiny", **overrides):
    cfg = dataclasses.replace(ENTRIES[name].presets[preset], **overrides)
    return ENTRIES[name].model(cfg, rngs=nnx.Rngs(key(0)))


def abstract(name, preset="tiny", **overrides):
    """The model with shapes only: nothing allocated or compiled."""
    return nnx.eval_shape(lambda: build(name, preset, **overrides))


def n_params(model) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


def images(shape, seed=0):
    """float32 numpy: ``jnp.asarray`` of a numpy array compiles a program per shape, eagerly."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def build_numpy(name, seed=0, **overrides):
    """The tiny model with numpy weights: He-normal kernels, other parameters and BatchNorm at
    their init (scale / var 1, the rest 0; so no zero-init last BN)."""
    model = abstract(name, **overrides)
    return with_numpy_weights(model, seed)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shapes(name, in_channels):
    model = abstract(name, num_classes=45, in_channels=in_channels)
    graphdef, state = nnx.split(model)
    for h, w in ((64, 64), (32, 45)):  # torch-style padding: any size >= 32 keeps every map >= 1 pixel
        x = jax.ShapeDtypeStruct((2, h, w, in_channels), jnp.float32)
        logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x)
        feats = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x, train=False), state, x)
        assert logits.shape == (2, 45)
        assert feats.shape == (2, model.num_features)
    wrong = jax.ShapeDtypeStruct((1, 32, 32, in_channels + 1), jnp.float32)
    with pytest.raises(ShapeError, match=f"batch, h, w, {in_channels}"):
        jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, wrong)


@pytest.fixture(scope="module")
def published():
    """The published-size models, abstract (built once: tracing a 152-layer init takes seconds)."""
    return {"resnet50": abstract("resnet50", "published"), "resnetv2_152": abstract("resnetv2", "published"),
            "resnetv2_50": abstract("resnetv2", "resnetv2_50")}


def test_published_structure_follows_timm(published):
    """ResNet-50: [3, 4, 6, 3] bottlenecks, projections (``downsample.0/.1``) only on each stage's
    first block, stride on the 3x3. ResNet-152-V2: [3, 8, 36, 3], a projection (conv only) on every
    stage's first block, stage 1 included, bottleneck width out / 4. Zero-init last BN (ResNet-50)."""
    r50 = published["resnet50"]
    assert [len(getattr(r50, f"layer{i}")) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]
    assert r50.num_features == 2048 and r50.conv1.strides == 2 and r50.conv1.padding == ((3, 3), (3, 3))
    for i in (1, 2, 3, 4):
        blocks = getattr(r50, f"layer{i}")
        assert blocks[0].downsample is not None and all(b.downsample is None for b in blocks[1:])
        assert blocks[0].conv2.strides == (1 if i == 1 else 2) and blocks[0].conv1.strides == 1
        assert blocks[0].downsample[0].strides == (1 if i == 1 else 2)
    v2 = published["resnetv2_152"]
    assert [len(s.blocks) for s in v2.stages] == [3, 8, 36, 3] and v2.num_features == 2048
    for i, stage in enumerate(v2.stages):
        assert stage.blocks[0].downsample is not None and all(b.downsample is None for b in stage.blocks[1:])
        assert stage.blocks[0].conv2.strides == (1 if i == 0 else 2)
        assert stage.blocks[0].conv1.out_features == (64, 128, 256, 512)[i]
    assert [len(s.blocks) for s in published["resnetv2_50"].stages] == [3, 4, 6, 3]
    assert ENTRIES["resnetv2"].presets["resnetv2_101"].layers == (3, 4, 23, 3)
    block = lambda m: (m.layer2[0].bn3.scale.get_value(), m.layer2[0].bn2.scale.get_value())  # noqa: E731
    bn3, bn2 = jax.jit(lambda: block(build("resnet50")))()   # one compiled init, not one per kernel shape
    assert bn3.shape == (64,) and not np.any(bn3) and np.all(bn2 == 1)


def test_parameter_counts(published):
    """Published presets against timm's counts (1000 classes): resnet50 25.56 M, resnetv2_50
    25.55 M, resnetv2_152 60.19 M (resnetv2_101 44.54 M: not built here, for time); tiny presets
    under 0.5 M."""
    assert n_params(published["resnet50"]) == 25_557_032
    assert n_params(published["resnetv2_50"]) == 25_549_352
    assert n_params(published["resnetv2_152"]) == 60_185_128
    assert n_params(abstract("resnet50", num_classes=45)) == 141_469
    assert n_params(abstract("resnetv2", num_classes=45)) == 140_509
    assert max(n_params(abstract(n)) for n in NAMES) <= 500_000   # even with 1000 classes


@nnx.jit(static_argnums=2)
def forward(model, x, train, rngs=None):
    """One compiled forward per (model, shape, mode): cheaper than eager's one compile per op."""
    return model(x, train=train, rngs=rngs)


CLASSES = 5
X = 2.0 + images((4, 32, 32, 1))
OTHER = X.copy()
OTHER[1:] = images((3, 32, 32, 1), seed=1)   # same first sample, different rest of the batch
Y = np.arange(4) % CLASSES


class Numeric:
    """One tiny model (1 channel, 5 classes, dropout 0.5 before the classifier) and its train
    step, compiled once for the file's numeric tests; the step is functional: the model is left
    as it was."""

    def __init__(self, name):
        self.model = build_numpy(name, num_classes=CLASSES, in_channels=1, drop_rate=0.5)
        graphdef, self.params, self.rest = nnx.split(self.model, nnx.Param, ...)

        @jax.jit
        def step(params, rest, x, y, rngs):
            def loss_fn(p):
                m = nnx.merge(graphdef, p, rest, copy=True)
                logits = m(x, train=True, rngs=rngs)
                loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
                return loss, (logits, nnx.state(m, nnx.Not(nnx.Param)))
            (loss, (logits, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return loss, logits, grads, new_rest

        self._step = step

    def step(self, x, rngs, rest=None):
        """(loss, logits, grads, the model after the step) of one train-mode value and grad."""
        loss, logits, grads, new_rest = self._step(self.params, self.rest if rest is None else rest, x, Y, rngs)
        return loss, logits, grads, nnx.merge(nnx.graphdef(self.model), self.params, new_rest)


@functools.cache
def numeric(name) -> Numeric:
    return Numeric(name)


@pytest.mark.parametrize("name, first_bn", [("resnet50", "bn1"), ("resnetv2", "stages.0.blocks.0.norm1")])
def test_batchnorm_and_dropout_train_and_eval(name, first_bn):
    """train=True normalises with the batch's statistics and moves the running averages by
    PyTorch's momentum 0.1; train=False uses the running averages, so a sample's output does not
    depend on the rest of the batch, and leaves them unchanged. The model has dropout 0.5 before
    its classifier: eval runs without rngs (dropout would raise), training takes a key."""
    num = numeric(name)
    model = num.model

    def first(m):
        bn = m
        for part in first_bn.split("."):
            bn = bn[int(part)] if part.isdigit() else getattr(bn, part)
        return bn

    x, other = X, OTHER
    ref = forward(model, x, False)
    np.testing.assert_allclose(forward(model, other, False)[0], ref[0], rtol=1e-5, atol=1e-5)
    assert np.allclose(first(model).mean.get_value(), 0.0)

    stem = nnx.jit(lambda m, x: m.conv1(x) if name == "resnet50" else m.stem(x))(model, x)  # the first BN's input
    _, out, _, after = num.step(x, key(1))
    bn = first(after)
    stem = np.asarray(stem)
    batch_mean, batch_var = stem.mean(axis=(0, 1, 2)), stem.var(axis=(0, 1, 2))
    np.testing.assert_allclose(bn.mean.get_value(), 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.var.get_value(), 0.9 + 0.1 * batch_var, rtol=1e-4, atol=1e-6)
    # the same key draws the same dropout mask: what differs is the batch statistics
    assert not np.allclose(num.step(other, key(1))[1][0], out[0], atol=1e-3)

    stats = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    np.testing.assert_array_equal(forward(model, x, False), forward(model, x, False))
    jax.tree.map(np.testing.assert_array_equal, stats, jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat)))


@pytest.mark.parametrize("name", NAMES)
def test_jit_train_step(name):
    """A jit value-and-grad step (dropout 0.5) runs: finite loss, a nonzero gradient for every
    parameter (numpy weights: no zero-init last BN, which stops the gradient of its block's convs
    at step 0 by design), every BN's statistics updated (they come out of jit); the dropout key
    decides the loss (the running averages do not, in training: a step from the updated
    statistics gives the same loss)."""
    num = numeric(name)
    before = jax.tree.map(np.asarray, nnx.state(num.model, nnx.BatchStat))
    loss, _, grads, after_model = num.step(X, key(1))
    assert np.isfinite(loss)
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))
    after = jax.tree.map(np.asarray, nnx.state(after_model, nnx.BatchStat))
    assert not any(np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    moved = nnx.state(after_model, nnx.Not(nnx.Param))
    assert num.step(X, key(1), rest=moved)[0] == loss and num.step(X, key(2))[0] != loss
    with pytest.raises(ConfigError, match="rngs"):
        nnx.eval_shape(lambda m, x: m(x, train=True), num.model, X)


def test_config_errors():
    with pytest.raises(ConfigError, match="layers"):
        ResNetConfig(layers=(1, 1), planes=(8, 16, 32))
    with pytest.raises(ConfigError, match="layers"):
        ResNetV2Config(layers=(0, 1, 1, 1))
    with pytest.raises(ConfigError, match="drop_rate"):
        ResNetConfig(drop_rate=1.0)
    with pytest.raises(ConfigError, match="in_channels"):
        ResNetV2Config(in_channels=0)
    with pytest.raises(ConfigError, match="bottle_ratio"):
        ResNetV2Config(bottle_ratio=0.0)
    cfg = ResNetConfig(layers=[1, 1, 1, 1])   # lists from a config file become tuples
    assert cfg.layers == (1, 1, 1, 1) and hash(cfg)
    assert ENTRIES["resnetv2"].timm_name == "resnetv2_152" and ENTRIES["resnetv2"].classifier == "head.fc"
    assert set(ENTRIES["resnetv2"].presets) >= {"tiny", "published", "resnetv2_50"}
