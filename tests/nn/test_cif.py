"""CIF predictor: hand-worked integrate-and-fire cases, a plain-Python reference, losses, the module.

With ``hidden = eye(T)`` (frame t is the unit vector e_t) an embedding *is* its per-frame weights,
so the expected values below read as "which part of which frame went into this token".
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cif import CIFPredictor, add_tail, cif_inference, integrate_and_fire, quantity_loss, scale_alpha

TOL = dict(rtol=1e-6, atol=1e-6)


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


fire = jax.jit(integrate_and_fire, static_argnames=("max_tokens", "threshold"))
infer = jax.jit(cif_inference, static_argnames=("max_tokens", "threshold", "tail_threshold"))


def reference_integrate_and_fire(hidden: list, alpha: list, threshold: float = 1.0):
    """FunASR's ``cif`` for one utterance as a plain loop: lists in, ``[(embedding, frame), ...]`` out."""
    acc, frame, tokens = 0.0, [0.0] * len(hidden[0]), []
    for t, (a, h) in enumerate(zip(alpha, hidden)):
        if acc + a >= threshold:
            done = 1.0 - acc
            tokens.append(([f + done * x for f, x in zip(frame, h)], t))
            frame = [(a - done) * x for x in h]
            acc = acc + a - 1.0
        else:
            frame = [f + a * x for f, x in zip(frame, h)]
            acc = acc + a
    return tokens


def run(alpha, hidden=None, max_tokens=3, threshold=1.0):
    alpha = jnp.asarray(alpha, jnp.float32)
    if alpha.ndim == 1:
        alpha = alpha[None]
    if hidden is None:
        hidden = jnp.broadcast_to(jnp.eye(alpha.shape[1]), alpha.shape + (alpha.shape[1],))
    emb, mask, pos = fire(jnp.asarray(hidden, jnp.float32), alpha, max_tokens=max_tokens, threshold=threshold)
    return np.asarray(emb), np.asarray(mask), np.asarray(pos)


def test_several_fires_in_a_row():
    emb, mask, pos = run([0.6, 0.6, 0.6, 0.6])
    # frame 1: 0.6 + 0.6 = 1.2 -> fire with 0.4 of frame 1; 0.2 carries on.
    # frame 3: 0.2 + 0.6 + 0.6 = 1.4 -> fire with 0.2 of frame 3; 0.4 left, never fired.
    np.testing.assert_allclose(emb[0], [[0.6, 0.4, 0.0, 0.0], [0.0, 0.2, 0.6, 0.2], [0.0] * 4], **TOL)
    np.testing.assert_array_equal(mask[0], [True, True, False])
    np.testing.assert_array_equal(pos[0], [1, 3, -1])


def test_fire_exactly_at_the_threshold():
    # 0.5 + 0.5 = 1.0 fires (>=, as FunASR) at frame 1, leaving 0: the next token starts empty.
    emb, mask, pos = run([0.5, 0.5, 0.75, 0.25, 0.25])
    np.testing.assert_allclose(emb[0], [[0.5, 0.5, 0, 0, 0], [0, 0, 0.75, 0.25, 0], [0] * 5], **TOL)
    np.testing.assert_array_equal(pos[0], [1, 3, -1])
    np.testing.assert_array_equal(mask[0], [True, True, False])


def test_alpha_above_one_fires_once_per_frame_like_funasr():
    # frame 1: 0.9 + 1.5 = 2.4 fires with 0.1 of frame 1, carry 1.4 (FunASR does not fire twice);
    # frame 2 (alpha 0): 1.4 >= 1 fires with weight 1 - 1.4 = -0.4, carry 0.4.
    emb, mask, pos = run([0.9, 1.5, 0.0], hidden=[[[1.0], [2.0], [3.0]]])
    np.testing.assert_allclose(emb[0, :, 0], [0.9 * 1 + 0.1 * 2, 1.4 * 2 - 0.4 * 3, 0.0], **TOL)
    np.testing.assert_array_equal(pos[0], [1, 2, -1])


def test_buffer_overflow_drops_later_fires():
    emb, mask, pos = run([0.6, 0.6, 0.6, 0.6], max_tokens=1)
    np.testing.assert_allclose(emb[0], [[0.6, 0.4, 0.0, 0.0]], **TOL)
    np.testing.assert_array_equal(mask[0], [True])
    np.testing.assert_array_equal(pos[0], [1])
    emb, mask, pos = run([1.0] * 5, max_tokens=3)  # fires at every frame, 5 > 3 slots
    np.testing.assert_allclose(emb[0], np.eye(5)[:3], **TOL)
    np.testing.assert_array_equal(pos[0], [0, 1, 2])
    assert mask.all()


def test_padded_frames_never_contribute():
    junk = 100.0
    hidden = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    hidden[1, 2:] = junk  # padded frames of utterance 1: garbage hidden, zero alpha
    emb, mask, pos = run([[0.6, 0.6, 0.6, 0.6], [0.6, 0.6, 0.0, 0.0]], hidden=hidden)
    np.testing.assert_allclose(emb[0], [[0.6, 0.4, 0, 0], [0, 0.2, 0.6, 0.2], [0] * 4], **TOL)
    np.testing.assert_allclose(emb[1], [[0.6, 0.4, 0, 0], [0] * 4, [0] * 4], **TOL)
    np.testing.assert_array_equal(mask, [[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(pos, [[1, 3, -1], [1, -1, -1]])


# Inference with the tail: utterance A (length 2) leaves a residual 0.6, B (length 3) one of 0.4.
A_ALPHA, A_HIDDEN = [0.8, 0.8], [[1.0, 0.0], [0.0, 1.0]]
B_ALPHA, B_HIDDEN = [0.3, 0.4, 0.7], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
# A: frame 1 fires 0.8 e0 + 0.2 e1; residual 0.6 e1 + tail 0.45 = 1.05 fires at the tail frame 2 (zero hidden).
A_WANT = dict(emb=[[0.8, 0.2], [0.0, 0.6]], pos=[1, 2], num=2)  # floor(1.6 + 0.45) = 2
# B: frame 2 fires 0.3 h0 + 0.4 h1 + 0.3 h2; residual 0.4 + 0.45 = 0.85 < 1: no tail token.
B_WANT = dict(emb=[[0.6, 0.7], [0.0, 0.0]], pos=[2, -1], num=1)  # floor(1.4 + 0.45) = 1


def check_inference(out, want, b=0):
    emb, mask, num, pos = (np.asarray(x) for x in out)
    np.testing.assert_allclose(emb[b], want["emb"], **TOL)
    assert num[b] == want["num"]
    np.testing.assert_array_equal(mask[b], np.arange(2) < want["num"])
    np.testing.assert_array_equal(pos[b], want["pos"])


def test_tail_threshold_fires_a_residual_of_0_6_but_not_0_4_and_ignores_padding():
    alone_a = infer(jnp.array([A_HIDDEN]), jnp.array([A_ALPHA]), jnp.ones((1, 2)), max_tokens=2)
    alone_b = infer(jnp.array([B_HIDDEN]), jnp.array([B_ALPHA]), jnp.ones((1, 3)), max_tokens=2)
    check_inference(alone_a, A_WANT)
    check_inference(alone_b, B_WANT)
    # Batched: A padded to 3 frames with garbage hidden and alpha in the padded frame.
    hidden = jnp.array([A_HIDDEN + [[5.0, 7.0]], B_HIDDEN])
    alpha = jnp.array([A_ALPHA + [0.9], B_ALPHA])
    mask = jnp.array([[1, 1, 0], [1, 1, 1]])
    batched = infer(hidden, alpha, mask, max_tokens=2)
    check_inference(batched, A_WANT, 0)
    check_inference(batched, B_WANT, 1)
    for together, alone in ((batched, alone_a), (batched, alone_b)):
        b = 0 if alone is alone_a else 1
        np.testing.assert_allclose(np.asarray(together[0][b]), np.asarray(alone[0][0]), **TOL)


def test_add_tail_puts_the_tail_at_each_length():
    hidden = jnp.ones((2, 3, 1))
    h, a, m = add_tail(hidden, jnp.full((2, 3), 0.5), jnp.array([[1, 0, 0], [1, 1, 1]]))
    np.testing.assert_allclose(np.asarray(a), [[0.5, 0.45, 0, 0], [0.5, 0.5, 0.5, 0.45]], **TOL)
    np.testing.assert_array_equal(np.asarray(m), [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(h)[..., 0], [[1, 0, 0, 0], [1, 1, 1, 0]])


@pytest.mark.parametrize("alpha_max", [1.0, 1.6])  # 1.6: frames that overshoot (scaled training weights)
def test_scan_matches_the_plain_python_reference(alpha_max):
    batch, time, dim, max_tokens = 3, 20, 5, 24
    k1, k2 = jax.random.split(key(int(alpha_max * 10)))
    lengths = np.array([20, 13, 7])
    valid = np.arange(time)[None, :] < lengths[:, None]
    alpha = np.asarray(jax.random.uniform(k1, (batch, time), maxval=alpha_max)) * valid
    hidden = np.asarray(jax.random.normal(k2, (batch, time, dim)))
    emb, mask, pos = run(alpha, hidden=hidden, max_tokens=max_tokens)
    for b in range(batch):
        want = reference_integrate_and_fire(hidden[b].tolist(), alpha[b].tolist())
        n = len(want)
        assert 0 < n < max_tokens
        np.testing.assert_array_equal(mask[b], np.arange(max_tokens) < n)
        np.testing.assert_array_equal(pos[b], [t for _, t in want] + [-1] * (max_tokens - n))
        np.testing.assert_allclose(emb[b, :n], [e for e, _ in want], **TOL)
        np.testing.assert_array_equal(emb[b, n:], 0.0)


def test_scale_alpha_sums_to_the_targets():
    alpha = jax.random.uniform(key(3), (3, 9))
    mask = jnp.arange(9)[None, :] < jnp.array([[9], [5], [2]])
    targets = jnp.array([4, 7, 1])
    scaled = np.asarray(scale_alpha(alpha, mask, targets))
    np.testing.assert_allclose(scaled.sum(-1), [4, 7, 1], rtol=1e-6)
    np.testing.assert_array_equal(scaled[~np.asarray(mask)], 0.0)
    zero = np.asarray(scale_alpha(jnp.zeros((1, 3)), jnp.ones((1, 3)), jnp.array([2])))
    np.testing.assert_array_equal(zero, 0.0)  # no NaN for an all-zero row


def test_quantity_loss_hand_value_and_gradient_sign():
    alpha = jnp.array([[0.5, 0.5, 0.9], [0.5, 0.6, 0.4]])
    mask = jnp.array([[1, 1, 0], [1, 1, 1]])
    targets = jnp.array([3, 1])
    # sums 1.0 (padded 0.9 ignored) and 1.5: (|3 - 1.0| + |1 - 1.5|) / batch 2
    np.testing.assert_allclose(float(quantity_loss(alpha, mask, targets)), (2.0 + 0.5) / 2, **TOL)
    grad = np.asarray(jax.grad(quantity_loss)(alpha, mask, targets))
    assert np.isfinite(grad).all()
    # too few predicted tokens -> raising alpha lowers the loss (negative gradient); too many -> positive.
    np.testing.assert_allclose(grad, [[-0.5, -0.5, 0.0], [0.5, 0.5, 0.5]], **TOL)


apply = nnx.jit(lambda model, h, mask: model(h, mask, train=False))


def test_predictor_shape_range_padding_and_depthwise_conv():
    dim = 4
    model = CIFPredictor(dim, rngs=nnx.Rngs(key(0)))
    assert model.conv.kernel.shape == (3, 1, dim)  # one 3-tap filter per channel: depthwise
    h = jax.random.normal(key(1), (2, 7, dim)) * 3.0
    mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3])
    alpha = np.asarray(apply(model, h, mask))
    assert alpha.shape == (2, 7)
    assert ((alpha >= 0) & (alpha <= 1)).all()
    np.testing.assert_array_equal(alpha[1, 4:], 0.0)
    assert (alpha[1, :4] > 0).all()
    # padded frames do not leak into the real ones (hidden is masked before the conv)
    junk = h.at[1, 4:].set(50.0)
    np.testing.assert_allclose(np.asarray(apply(model, junk, mask)), alpha, **TOL)
    # output layer reading channel 0 only: changing channel 2 of the input must not move alpha
    model.output.kernel[...] = jnp.zeros((dim, 1)).at[0, 0].set(1.0)
    base = np.asarray(apply(model, h, mask))
    np.testing.assert_allclose(np.asarray(apply(model, h.at[:, :, 2].add(5.0), mask)), base, **TOL)
    assert not np.allclose(np.asarray(apply(model, h.at[:, :, 0].add(5.0), mask)), base)


def test_predictor_dropout_needs_rngs_in_training():
    model = CIFPredictor(2, rngs=nnx.Rngs(key(0)))
    h, mask = jnp.ones((1, 3, 2)), jnp.ones((1, 3))
    with pytest.raises(ConfigError):
        model(h, mask, train=True)
    with pytest.raises(ConfigError):
        CIFPredictor(2, l_order=-1, rngs=nnx.Rngs(key(0)))
