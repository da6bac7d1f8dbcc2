"""InceptionV3 (jaxaudio/models/cnn_zoo/inception.py): shapes for 1 and 3 input channels, the tiny
preset's structure and size, the published preset's size and minimum input (75), BatchNorm's train
/ eval behaviour, head dropout, and a jit train step. Parity with timm is in
tests/convert/test_timm_inception_vs_timm.py.

Shape checks run on abstract models (``nnx.eval_shape``, no compile); the numeric ones share one
tiny model (head dropout 0.5; numpy weights: a real init compiles every initializer shape apart,
seconds the checks here need not spend) and two compiled programs (an eval forward and a
jitted train step, at one batch shape), so the
file costs a few XLA compiles, not one per op as eager calls would."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models import cnn_zoo
from jaxaudio.models.cnn_zoo import inception
from tests.models.numpy_weights import with_numpy_weights

NAME = "inception_v3"
ENTRY = inception.ENTRIES[NAME]


def build(preset="tiny", seed=0, **overrides):
    """The member from its own ENTRIES (the registry imports every family: ``test_registry`` covers it)."""
    return ENTRY.model(dataclasses.replace(ENTRY.presets[preset], **overrides), rngs=nnx.Rngs(seed))


@functools.cache
def abstract(preset="tiny", **overrides):
    """Shapes only (built once per configuration: the tests only read it)."""
    return nnx.eval_shape(lambda: build(preset, **overrides))


def build_numpy(seed=0, **overrides):
    """The tiny model with numpy weights: He-normal kernels, other parameters and BatchNorm at
    their init (scale / var 1, the rest 0)."""
    model = nnx.eval_shape(lambda: build("tiny", **overrides))
    return with_numpy_weights(model, seed)


def n_params(model) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def images(batch=4, side=64, channels=3, seed=0):
    """float32 numpy: eager jax.random and ``jnp.asarray`` compile programs per shape."""
    return np.random.default_rng(seed).normal(size=(batch, side, side, channels)).astype(np.float32)


def out_shape(model, side, channels=3, method="__call__"):
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((2, side, side, channels), jnp.float32)
    return jax.eval_shape(lambda s, x: getattr(nnx.merge(graphdef, s), method)(x, train=False), state, x).shape


@functools.partial(nnx.jit, static_argnames="train")
def run(model, x, train, rngs=None):
    return model(x, train=train, rngs=rngs)


@pytest.fixture(scope="module")
def published():
    return abstract("published")


@pytest.fixture(scope="module")
def tiny():
    return build_numpy(num_classes=5, drop_rate=0.5)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(channels):
    """The tiny preset here; the published one in ``test_minimum_input`` and, for 1 channel, the parity tests."""
    model = abstract(num_classes=7, in_channels=channels)
    assert out_shape(model, 64, channels) == (2, 7)
    assert out_shape(model, 64, channels, "features") == (2, model.num_features)
    assert model.Conv2d_1a_3x3.conv.kernel.shape[2] == channels


def test_structure_keeps_every_block_type(published):
    """The tiny preset is Inception: each block type once, timm's names, branches concatenated."""
    model = abstract()
    assert model.block_names == ("Mixed_5b", "Mixed_6a", "Mixed_6b", "Mixed_7a", "Mixed_7b")
    assert isinstance(model.Mixed_7b, inception.InceptionE)
    # InceptionE concatenates 1x1 (40) + 2 x (1x3 | 3x1) (4 x 48) + pool (24) at width 1/8
    assert model.num_features == 40 + 4 * 48 + 24 == model.fc.kernel.shape[0]
    assert published.block_names == ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
    assert published.Mixed_6e.branch7x7dbl_3.conv.kernel.shape == (1, 7, 192, 192)
    assert published.Mixed_6e.branch7x7dbl_3.bn.epsilon == 1e-3


def test_sizes(published):
    """timm's inception_v3 (no AuxLogits) has 23,834,568 parameters with 1,000 classes."""
    assert n_params(published) == 23_834_568
    assert 100_000 < n_params(abstract(num_classes=45)) < 500_000


def test_minimum_input(published):
    assert ENTRY.min_size == inception.min_input_size(ENTRY.presets["published"]) == 75
    assert out_shape(published, 75) == (2, 1000)
    with pytest.raises(ShapeError, match="smaller than 75x75"):
        out_shape(published, 74)
    model = abstract()
    assert inception.min_input_size(model.cfg) == 61
    assert out_shape(model, 61)[0] == 2
    with pytest.raises(ShapeError, match="smaller than 61x61"):
        out_shape(model, 60)
    with pytest.raises(ShapeError, match="expected"):
        out_shape(model, 64, channels=1)


@pytest.fixture(scope="module")
def train_step(tiny):
    """The one compiled training program: a jitted value_and_grad through split / merge (as
    ``jaxaudio/train/step.py``), returning the loss, logits, gradients and the new BatchNorm stats."""
    graphdef, params, rest = nnx.split(tiny, nnx.Param, ...)

    @jax.jit
    def step(params, rest, x, key):
        def loss(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            logits = model(x, train=True, rngs=key)
            y = jnp.arange(x.shape[0]) % logits.shape[-1]
            value = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return value, (logits, nnx.state(model, nnx.Not(nnx.Param)))
        (value, (logits, new_rest)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return value, logits, grads, new_rest

    def run_step(x, key):
        value, logits, grads, new_rest = step(params, rest, x, key)
        return value, logits, grads, nnx.merge(graphdef, params, new_rest)

    return run_step


def test_batchnorm_train_vs_eval(tiny, train_step):
    x = images()
    x2 = x.copy()
    x2[1:] = 3.0 * images(batch=3, seed=1) + 1.0                    # the same first image in another batch
    bn = tiny.Mixed_6b.branch7x7_2.bn
    assert bn.epsilon == 1e-3 and bn.momentum == pytest.approx(0.9)
    mean0 = np.asarray(bn.mean.get_value())
    eval_a, eval_b = run(tiny, x, False), run(tiny, x2, False)
    np.testing.assert_array_equal(bn.mean.get_value(), mean0)       # eval: running stats untouched
    np.testing.assert_allclose(eval_a[0], eval_b[0], rtol=1e-5, atol=1e-5)   # running stats: per sample
    key = jax.random.key(0)
    _, train_a, _, after = train_step(x, key)
    assert not np.allclose(after.Mixed_6b.branch7x7_2.bn.mean.get_value(), mean0)   # train: running averages updated
    _, train_b, _, _ = train_step(x2, key)                          # same dropout masks, other batch stats
    assert not np.allclose(train_a[0], train_b[0], atol=1e-3)


def test_dropout_only_in_training(tiny, train_step):
    x = images()
    with pytest.raises(ConfigError, match="rngs"):
        train_step(x, None)
    assert not np.allclose(train_step(x, jax.random.key(1))[1], train_step(x, jax.random.key(2))[1])
    np.testing.assert_array_equal(run(tiny, x, False), run(tiny, x, False))


def test_jit_train_step(train_step):
    """Finite loss and gradients, reaching the stem."""
    value, _, grads, _ = train_step(images(), jax.random.key(3))
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert np.abs(grads["Conv2d_1a_3x3"]["conv"]["kernel"].get_value()).max() > 0


def test_entry_skips_the_aux_classifier_only():
    assert inception.ENTRIES["inception_v3"].skip_prefixes == ("AuxLogits.",)


def test_bad_config():
    with pytest.raises(ConfigError, match="stem_padding"):
        inception.InceptionV3Config(stem_padding=2)
    with pytest.raises(ConfigError, match="width"):
        inception.InceptionV3Config(width=0)


def test_registry():
    assert cnn_zoo.entry(NAME) is ENTRY and ENTRY.timm_name == "inception_v3" and ENTRY.classifier == "fc"
    model = nnx.eval_shape(lambda: cnn_zoo.build(NAME, "tiny", num_classes=3, in_channels=1, rngs=nnx.Rngs(0)))
    assert out_shape(model, 64, channels=1) == (2, 3)
