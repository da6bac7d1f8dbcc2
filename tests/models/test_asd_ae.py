"""DCASE2020 task-2 baseline AE: layer sizes by hand, the vector array against a plain loop, BatchNorm in
train and eval mode against a numpy forward pass, the score, training on a toy set, and the front end
against librosa (the baseline's feature code)."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.audio.features import log_mel
from jaxaudio.errors import ShapeError
from jaxaudio.models.asd_ae import (DCASE2020_T2_FRONTEND, PAPER, ASDAEConfig, ASDAutoencoder, ae_loss, ae_score,
                                    context_vectors)
from jaxaudio.train.state import merge_model, split_model

TOY = ASDAEConfig(n_mels=8, frames=5, hidden=32, depth=2, bottleneck=4)


def key(seed):
    return jax.random.key(seed, impl="rbg")


def keras_param_counts(input_dim, hidden=128, depth=4, bottleneck=8):
    """(trainable, non-trainable) as Keras's model.summary() counts keras_model.py's network."""
    widths = [hidden] * depth + [bottleneck] + [hidden] * depth
    trainable, stats, fan_in = 0, 0, input_dim
    for width in widths:
        trainable += fan_in * width + width  # Dense kernel + bias
        trainable += 2 * width  # BatchNormalization gamma, beta
        stats += 2 * width  # moving mean, moving variance
        fan_in = width
    return trainable + fan_in * input_dim + input_dim, stats


def test_layer_sizes_and_parameter_count():
    # 640-d (the released baseline): 640*128+128 + 3*(128*128+128) + 128*8+8 + 8*128+128 + 3*(128*128+128)
    # + 128*640+640 = 265,864 Dense parameters, + 2*(8*128+8) = 2,064 BatchNorm gamma/beta, + 2,064 statistics.
    assert keras_param_counts(640) == (267_928, 2_064)
    assert keras_param_counts(320) == (185_688, 2_064)
    for cfg, dim in ((PAPER, 640), (ASDAEConfig(n_mels=64), 320)):
        assert cfg.input_dim == dim
        model = nnx.eval_shape(lambda: ASDAutoencoder(cfg, rngs=nnx.Rngs(0)))
        params = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
        stats = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
        assert (params, stats) == keras_param_counts(dim)
        widths = [layer.dense.kernel.shape for layer in model.layers] + [model.out.kernel.shape]
        assert widths == [(dim, 128)] + [(128, 128)] * 3 + [(128, 8), (8, 128)] + [(128, 128)] * 3 + [(128, dim)]
    fit = PAPER.fit
    assert (fit.learning_rate, fit.epochs, fit.batch_size, fit.validation_split, fit.shuffle) == (1e-3, 100, 512,
                                                                                                 0.1, True)


def test_context_vectors_match_a_loop():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(2, 9, 3)).astype(np.float32)
    got = np.asarray(context_vectors(jnp.asarray(mel), frames=5))
    assert got.shape == (2, 5, 15)
    want = np.zeros((2, 5, 15), np.float32)
    for b in range(2):
        for i in range(5):  # vector i = frames i, i+1, ..., i+4, one after the other
            want[b, i] = np.concatenate([mel[b, i + j] for j in range(5)])
    np.testing.assert_array_equal(got, want)
    assert np.asarray(context_vectors(jnp.asarray(mel), frames=9)).shape == (2, 1, 27)
    with pytest.raises(ShapeError, match="frames=10"):
        context_vectors(jnp.asarray(mel), frames=10)


def numpy_forward(state, x, *, train):
    """The network written out with numpy: Dense -> BatchNorm (batch or running statistics, eps 1e-3) -> ReLU."""
    h = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    batch_means = []
    for i in range(len(state["layers"])):
        layer = state["layers"][i]
        h = h @ np.asarray(layer["dense"]["kernel"][...]) + np.asarray(layer["dense"]["bias"][...])
        norm = layer["norm"]
        if train:
            mean, var = h.mean(axis=0), h.var(axis=0)
            batch_means.append(mean)
        else:
            mean, var = np.asarray(norm["mean"][...]), np.asarray(norm["var"][...])
        h = (h - mean) / np.sqrt(var + 1e-3) * np.asarray(norm["scale"][...]) + np.asarray(norm["bias"][...])
        h = np.maximum(h, 0.0)
    out = h @ np.asarray(state["out"]["kernel"][...]) + np.asarray(state["out"]["bias"][...])
    return out.reshape(x.shape), batch_means


@pytest.fixture(scope="module")
def toy():
    model = ASDAutoencoder(TOY, rngs=nnx.Rngs(key(0)))
    graphdef, params, model_state = split_model(model)

    @jax.jit
    def evaluate(p, s, x):
        return merge_model(graphdef, p, s)(x, train=False)

    @jax.jit
    def train_forward(p, s, x):
        m = merge_model(graphdef, p, s)
        return m(x, train=True), nnx.state(m, nnx.BatchStat)

    return graphdef, params, model_state, evaluate, train_forward


def test_batchnorm_train_and_eval(toy):
    graphdef, params, model_state, evaluate, train_forward = toy
    x = jax.random.normal(key(1), (6, 4, TOY.input_dim)) * 3.0 + 1.0
    state = nnx.state(merge_model(graphdef, params, model_state))
    # eval: the running statistics (fresh: mean 0, var 1)
    want_eval, _ = numpy_forward(state, np.asarray(x), train=False)
    np.testing.assert_allclose(np.asarray(evaluate(params, model_state, x)), want_eval, rtol=1e-4, atol=1e-4)
    # train: statistics of the batch over all 6 * 4 vectors, and the running averages move by 1 - 0.99
    got, stats = train_forward(params, model_state, x)
    want_train, batch_means = numpy_forward(state, np.asarray(x), train=True)
    np.testing.assert_allclose(np.asarray(got), want_train, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(stats["layers"][0]["norm"]["mean"][...]), 0.01 * batch_means[0],
                               rtol=1e-4, atol=1e-6)
    assert np.abs(want_train - want_eval).max() > 0.1  # the two modes really differ here
    # eval scores do not depend on the other clips of the batch; train-mode outputs do
    other = x.at[1:].multiply(5.0)
    np.testing.assert_allclose(np.asarray(evaluate(params, model_state, other))[0],
                               np.asarray(evaluate(params, model_state, x))[0], rtol=1e-6)
    assert np.abs(np.asarray(train_forward(params, model_state, other)[0])[0] - np.asarray(got)[0]).max() > 1e-3


def test_score_and_loss(toy):
    graphdef, params, model_state, _, _ = toy
    mel = jax.random.normal(key(2), (2, 12, TOY.n_mels))
    mask = jnp.arange(12)[None, :] < jnp.array([[12], [8]])
    score = jax.jit(lambda p, s, m, k: ae_score(merge_model(graphdef, p, s), m, k))
    got = np.asarray(score(params, model_state, mel, mask))
    # clip 1 has 8 real frames -> 4 vectors; the score is the truncated clip's mean squared error
    model = merge_model(graphdef, params, model_state)
    vectors = np.asarray(context_vectors(mel, 5))
    recon = np.asarray(jax.jit(lambda p, s, v: merge_model(graphdef, p, s)(v, train=False))(params, model_state,
                                                                                          jnp.asarray(vectors)))
    errors = ((recon - vectors) ** 2).mean(axis=-1)
    np.testing.assert_allclose(got, [errors[0].mean(), errors[1, :4].mean()], rtol=1e-5)
    np.testing.assert_allclose(float(ae_loss(jnp.asarray(recon), jnp.asarray(vectors))), errors.mean(), rtol=1e-5)
    with pytest.raises(ShapeError, match="n_mels \\* frames = 40"):
        model(jnp.zeros((3, 41)), train=False)


def test_reconstruction_error_decreases_with_training(toy):
    graphdef, params, model_state, evaluate, _ = toy
    rng = np.random.default_rng(0)
    # toy "normal" machine: a fixed spectral shape with random gain per clip, frames slowly varying
    shape = np.linspace(-1.0, 1.0, TOY.n_mels) ** 2
    gains = rng.uniform(0.5, 1.5, size=(64, 1, 1))
    mel = gains * shape + 0.1 * np.sin(np.arange(20)[None, :, None] / 3.0) + 0.02 * rng.normal(size=(64, 20, 8))
    data = np.asarray(context_vectors(jnp.asarray(mel, jnp.float32), 5)).reshape(-1, TOY.input_dim)
    opt = optax.adam(PAPER.fit.learning_rate * 10, eps=PAPER.fit.eps)  # 10x the baseline lr: a few steps only
    opt_state = opt.init(params)

    @jax.jit
    def step(p, s, o, batch):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, s, copy=True)
            return ae_loss(m(batch, train=True), batch), nnx.state(m, nnx.BatchStat)
        (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, o = opt.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, loss

    def eval_error(p, s):
        return float(jnp.mean((evaluate(p, s, jnp.asarray(data)) - data) ** 2))

    before = eval_error(params, model_state)
    for i in range(200):  # eval-mode BatchNorm needs its running averages settled: ~1 / (1 - 0.99) steps
        batch = data[rng.choice(len(data), 128, replace=False)]
        params, model_state, opt_state, _ = step(params, model_state, opt_state, jnp.asarray(batch))
    after = eval_error(params, model_state)
    trivial = float(np.mean((data - data.mean(axis=0)) ** 2))  # reconstructing every vector as the mean one
    assert after < 0.2 * before, (before, after)
    assert after < 0.5 * trivial, (after, trivial)


def test_front_end_matches_the_baseline_librosa_features():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    # common.file_to_vector_array with librosa 0.6.0, whose stft pads with 'reflect' (0.11's default is 'constant')
    mel = librosa.feature.melspectrogram(y=wave.astype(np.float64), sr=16000, n_fft=1024, hop_length=512,
                                         n_mels=128, power=2.0, pad_mode="reflect")
    want = (20.0 / 2.0 * np.log10(mel + sys.float_info.epsilon)).T
    got = np.asarray(log_mel(jnp.asarray(wave), DCASE2020_T2_FRONTEND))
    assert got.shape == want.shape == (32, 128)
    np.testing.assert_allclose(got, want, atol=2e-3)
