"""GeCo's predictive autoencoder: shapes, the predictive property (frame t never sees frame t), the window
gather against a plain loop, padding masks, the loss and score, and learning on a tiny tone-like task."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.pae import PAE, PAEConfig, context_windows, pae_loss, pae_score, prediction_error

SMALL = PAEConfig(n_mels=12, context=2, dim=32, layers=2, heads=4)


def key(seed):
    return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def small():
    model = PAE(SMALL, rngs=nnx.Rngs(key(0)))
    graphdef, state = nnx.split(model)
    predict = jax.jit(lambda s, mel, mask=None: nnx.merge(graphdef, s).predict(mel, mask))
    return model, state, predict


def test_shapes_default_config():
    cfg = PAEConfig()
    model = nnx.eval_shape(lambda: PAE(cfg, rngs=nnx.Rngs(key(0))))
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state,
                         jax.ShapeDtypeStruct((3, 313, 128), jnp.float32))
    assert out.shape == (3, 313, 128)
    assert cfg.window == 5
    assert model.pos_embedding.shape == (5, cfg.dim)


def test_prediction_of_a_frame_does_not_see_that_frame(small):
    _, state, predict = small
    mel = jax.random.normal(key(1), (2, 12, SMALL.n_mels))
    base = np.asarray(predict(state, mel))
    assert base.shape == (2, 12, SMALL.n_mels)
    for t in (0, 5, 11):  # both clip edges and the middle
        bumped = np.asarray(predict(state, mel.at[0, t].add(3.0)))
        np.testing.assert_allclose(bumped[0, t], base[0, t], atol=1e-6)  # t's own prediction: unchanged
        for s in (t - 2, t - 1, t + 1, t + 2):  # neighbours within the context: changed
            if 0 <= s < 12:
                assert np.abs(bumped[0, s] - base[0, s]).max() > 1e-3, (t, s)
        for s in range(12):  # beyond the context, and the other clip: unchanged
            if abs(s - t) > SMALL.context:
                np.testing.assert_allclose(bumped[0, s], base[0, s], atol=1e-6)
        np.testing.assert_allclose(bumped[1], base[1], atol=1e-6)
    # exactly: d prediction[t] / d mel[t] = 0, and not so for t's neighbours
    graphdef = nnx.graphdef(small[0])
    frame_grad = jax.jit(jax.grad(lambda m, t: jnp.sum(nnx.merge(graphdef, state).predict(m)[0, t])))
    for t in (0, 6):
        grad = np.abs(np.asarray(frame_grad(mel, t)[0])).sum(axis=-1)
        assert grad[t] == 0.0
        assert grad[t + 1] > 0 and grad[t + 2] > 0 and (t == 0 or grad[t - 1] > 0)
        assert np.all(grad[t + 3:] == 0)


def test_window_gather_matches_a_python_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    lengths = np.array([7, 4, 1])
    for context in (1, 2, 3):
        for lens in (None, lengths):
            windows, valid = context_windows(jnp.asarray(x), context, None if lens is None else jnp.asarray(lens))
            want = np.zeros((3, 7, 2 * context + 1, 4), np.float32)
            want_valid = np.zeros((3, 7, 2 * context + 1), bool)
            for b in range(3):
                last = (7 if lens is None else lens[b]) - 1
                for t in range(7):
                    for j in range(2 * context + 1):
                        src = t + j - context
                        want[b, t, j] = x[b, min(max(src, 0), last)]
                        want_valid[b, t, j] = 0 <= src <= last
            np.testing.assert_array_equal(np.asarray(windows), want)
            np.testing.assert_array_equal(np.asarray(valid), want_valid)


def test_padding_mask_matches_the_truncated_clip(small):
    _, state, predict = small
    mel = jax.random.normal(key(2), (2, 10, SMALL.n_mels))
    mask = jnp.arange(10)[None, :] < jnp.array([[10], [6]])
    padded = np.asarray(predict(state, mel, mask))
    np.testing.assert_allclose(padded[1, :6], np.asarray(predict(state, mel[1:2, :6]))[0], atol=1e-5)
    junk = np.asarray(predict(state, mel.at[1, 6:].set(100.0), mask))
    np.testing.assert_allclose(junk[1, :6], padded[1, :6], atol=1e-5)
    # score and loss ignore the padded frames: equal to the truncated clip's numbers
    target = mel.at[1, 6:].set(100.0)
    per_clip = prediction_error(jnp.asarray(junk), target, mask)
    want = np.mean((junk[1, :6] - np.asarray(mel[1, :6])) ** 2)
    np.testing.assert_allclose(float(per_clip[1]), want, rtol=1e-5)
    graphdef = nnx.graphdef(small[0])
    score = jax.jit(lambda s, mel, mask: pae_score(nnx.merge(graphdef, s), mel, mask))(state, target, mask)
    np.testing.assert_allclose(np.asarray(score), np.asarray(per_clip), rtol=1e-5)
    errors = (junk - np.asarray(target)) ** 2
    want_loss = (errors[0].sum() + errors[1, :6].sum()) / (16 * SMALL.n_mels)
    np.testing.assert_allclose(float(pae_loss(jnp.asarray(junk), target, mask)), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(pae_loss(jnp.asarray(junk), target)), errors.mean(), rtol=1e-5)


def tone_clips(seed, batch, frames, n_mels):
    """A stationary spectral profile (two harmonic-like peaks) with a slow amplitude modulation and a
    little noise: each frame is predictable from its neighbours, not from the clip mean alone."""
    rng = np.random.default_rng(seed)
    bins = np.arange(n_mels)
    profile = np.exp(-0.5 * ((bins - 3) / 1.0) ** 2) + 0.7 * np.exp(-0.5 * ((bins - 9) / 1.2) ** 2)
    t = np.arange(frames)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(batch, 1, 1))
    envelope = 1.0 + 0.8 * np.sin(2 * np.pi * t / 8.0 + phase)
    mel = 2.0 * profile[None, None, :] * envelope + 0.05 * rng.normal(size=(batch, frames, n_mels))
    return jnp.asarray(mel - 1.0, jnp.float32)


def test_learns_to_predict_a_tone_like_pattern(small):
    cfg = SMALL
    graphdef, params = nnx.graphdef(small[0]), small[1]
    opt = optax.adam(5e-3)
    opt_state = opt.init(params)

    def loss_fn(p, mel):
        return pae_loss(nnx.merge(graphdef, p)(mel, train=True), mel)

    @jax.jit
    def step(p, o, mel):
        loss, grads = jax.value_and_grad(loss_fn)(p, mel)
        updates, o = opt.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    losses = []
    for i in range(40):
        params, opt_state, loss = step(params, opt_state, tone_clips(i, 8, 24, cfg.n_mels))
        losses.append(float(loss))
    test = tone_clips(1000, 8, 24, cfg.n_mels)
    trained = float(pae_loss(small[2](params, test), test))
    # what a predictor blind to the neighbours can do at best: each bin's mean over the clip
    blind = float(jnp.mean((test - jnp.mean(test, axis=1, keepdims=True)) ** 2))
    assert trained < 0.1 * losses[0], (losses[0], trained)
    assert trained < 0.5 * blind, (trained, blind)


def test_config_errors():
    with pytest.raises(ConfigError, match="heads"):
        PAEConfig(dim=30, heads=4)
    with pytest.raises(ConfigError, match="context"):
        PAEConfig(context=0)


def test_errors(small):
    model = small[0]
    with pytest.raises(ShapeError, match="n_mels=12"):
        model(jnp.zeros((1, 5, 9)), train=False)
    with pytest.raises(ShapeError, match="mask"):
        model(jnp.zeros((1, 5, 12)), train=False, mask=jnp.ones((1, 4), bool))
    dropping = PAEConfig(n_mels=12, dim=32, heads=4, dropout=0.1)
    with pytest.raises(ConfigError, match="rngs"):
        jax.eval_shape(lambda: PAE(dropping, rngs=nnx.Rngs(0))(jnp.zeros((1, 5, 12)), train=True))
