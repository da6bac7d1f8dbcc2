"""SpecAugment: the time warp against torch's bicubic interpolate (ESPnet's time_warp), the masks by
their promised bounds over many keys."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.audio import specaugment as S

torch = pytest.importorskip("torch")

W = 5
warp_at = jax.jit(S.apply_time_warp, static_argnums=4)
time_warp = jax.jit(S.time_warp, static_argnums=2)
resize = jax.jit(S.resize_bicubic_1d, static_argnums=1)
spec_augment = jax.jit(S.spec_augment, static_argnames=(
    "warp_window", "freq_masks", "freq_width", "time_masks", "time_width"))


def espnet_warp(x, center, warped):
    """ESPnet's time_warp body on x (B, T, F) with the random draws given."""
    t = torch.from_numpy(np.array(x))[:, None]
    size_t, size_f = t.shape[2], t.shape[3]
    interp = torch.nn.functional.interpolate
    left = interp(t[:, :, :center], (warped, size_f), mode="bicubic", align_corners=False)
    right = interp(t[:, :, center:], (size_t - warped, size_f), mode="bicubic", align_corners=False)
    return torch.cat([left, right], dim=2)[:, 0].numpy()


def runs(row):
    """(start, length) of each True run in a 1-D boolean array."""
    change = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
    return list(zip(change[::2], change[1::2] - change[::2]))


@pytest.mark.parametrize("in_len,out_len", [(23, 31), (31, 23), (9, 9), (2, 7), (1, 4)])
def test_resize_bicubic_1d_matches_torch(in_len, out_len):
    x = np.random.default_rng(in_len).standard_normal((in_len, 6)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None, None], (out_len, 6), mode="bicubic",
                                          align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(np.asarray(resize(jnp.asarray(x), out_len)), ref, atol=1e-5)


def test_warp_matches_torch_for_every_centre_and_warp():
    t = 31
    x = np.random.default_rng(0).standard_normal((2, t, 8)).astype(np.float32)
    for c in range(W, t - W):
        for w in range(c - W + 1, c + W + 1):
            got = np.asarray(warp_at(jnp.asarray(x), c, w, t, W))
            np.testing.assert_allclose(got, espnet_warp(x, c, w), atol=1e-5, err_msg=f"c={c} w={w}")


def test_long_utterance_matches_torch():
    t = 900  # late frames: the source coordinate must keep float32 precision (see _source)
    x = np.random.default_rng(1).standard_normal((1, t, 80)).astype(np.float32)
    for c, w in [(W, 1), (450, 455), (894, 899), (894, 890)]:
        np.testing.assert_allclose(np.asarray(warp_at(jnp.asarray(x), c, w, t, W)), espnet_warp(x, c, w),
                                   atol=1e-5)


def test_time_warp_draws_one_espnet_warp_for_the_batch():
    t = 40
    x = np.random.default_rng(2).standard_normal((3, t, 5)).astype(np.float32)
    for seed in range(5):
        key = jax.random.key(seed)
        c, w = S.time_warp_params(key, jnp.full((3,), t), W, shared=True)
        c, w = int(c[0]), int(w[0])
        assert W <= c < t - W and c - W + 1 <= w <= c + W
        np.testing.assert_allclose(np.asarray(time_warp(key, jnp.asarray(x), W)), espnet_warp(x, c, w), atol=1e-5)


def test_draws_cover_espnet_ranges_per_row():
    lengths = jnp.array([40, 17, 11])
    cs, ws = [], []
    for seed in range(300):
        c, w = S.time_warp_params(jax.random.key(seed), lengths, W)
        cs.append(np.asarray(c))
        ws.append(np.asarray(w))
    cs, ws = np.stack(cs), np.stack(ws)
    for row, n in enumerate([40, 17, 11]):
        assert cs[:, row].min() == W and cs[:, row].max() == n - W - 1
        assert set(np.unique(ws[:, row] - cs[:, row])) == set(range(-W + 1, W + 1))


def test_per_row_lengths_warp_the_valid_part_and_keep_padding():
    t, lengths = 30, [30, 19, 10, 3]  # 10 and 3: L - window <= window, left as they are
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, t, 6)).astype(np.float32)
    key = jax.random.key(7)
    got = np.asarray(time_warp(key, jnp.asarray(x), W, jnp.array(lengths)))
    c, w = S.time_warp_params(key, jnp.array(lengths), W)
    for row, n in enumerate(lengths):
        np.testing.assert_array_equal(got[row, n:], x[row, n:])
        if n - W <= W:
            np.testing.assert_array_equal(got[row], x[row])
        else:
            ref = espnet_warp(x[row:row + 1, :n], int(c[row]), int(w[row]))[0]
            np.testing.assert_allclose(got[row, :n], ref, atol=1e-5)
    assert not np.allclose(got[1, :19], x[1, :19])  # a warp happened (c != w for this key)


def test_window_too_large_or_zero_is_identity():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 10, 4)).astype(np.float32))
    for window in (5, 7, 0):
        np.testing.assert_array_equal(np.asarray(S.time_warp(jax.random.key(0), x, window)), np.asarray(x))


def test_spec_augment_masks_stay_within_bounds():
    b, t, f = 16, 120, 80
    lengths = np.array([120, 100, 60, 30, 25, 8, 119, 50] * 2)
    valid = np.arange(t)[None, :] < lengths[:, None]
    x = jnp.asarray(np.broadcast_to(valid[:, :, None], (b, t, f)).astype(np.float32))
    freq_widths, time_widths = [], []
    for seed in range(40):
        out = np.asarray(spec_augment(jax.random.key(seed), x, jnp.asarray(lengths)))
        assert np.all(out[~valid] == 0)
        zero = (out == 0) & valid[:, :, None]
        for row, n in enumerate(lengths):
            z = zero[row, :n]
            bands = z.all(axis=0)  # zeroed bins (every valid frame)
            steps = z.all(axis=1)  # zeroed frames (every bin)
            # every zero is explained by a band or a step
            np.testing.assert_array_equal(z, bands[None, :] | steps[:, None])
            if steps.all():
                continue
            r = runs(bands)
            assert len(r) <= 2 and all(width <= 30 * 2 for _, width in r) and bands.sum() <= 60
            freq_widths += [width for _, width in r]
            if bands.all():
                continue
            r = runs(steps)
            assert len(r) <= 2 and steps.sum() <= 80
            time_widths += [width for _, width in r]
    # single (non-merged) runs reach close to the maximum widths, and never beyond 2 x max
    assert 25 <= max(w for w in freq_widths if w <= 30) <= 30
    assert 30 <= max(w for w in time_widths if w <= 40) <= 40


def test_time_masks_start_inside_the_length():
    b, t = 64, 100
    lengths = jnp.asarray(np.random.default_rng(5).integers(1, t + 1, b))
    x = jnp.ones((b, t, 3))
    for seed in range(10):
        out = np.asarray(jax.jit(S.time_mask_within, static_argnums=(2, 3))(jax.random.key(seed), x, 40, 1,
                                                                            lengths))
        for row, n in enumerate(np.asarray(lengths)):
            steps = out[row, :, 0] == 0
            assert not steps[n:].any()
            r = runs(steps)
            assert len(r) <= 1 and all(width <= min(40, n) for _, width in r)


def test_spec_augment_is_deterministic_and_jits():
    x = jnp.asarray(np.random.default_rng(6).standard_normal((4, 70, 80)).astype(np.float32))
    lengths = jnp.array([70, 64, 33, 12])
    a = np.asarray(spec_augment(jax.random.key(1), x, lengths))
    np.testing.assert_array_equal(a, np.asarray(spec_augment(jax.random.key(1), x, lengths)))
    assert not np.array_equal(a, np.asarray(spec_augment(jax.random.key(2), x, lengths)))
    assert spec_augment(jax.random.key(1), x).shape == x.shape  # no lengths: one warp for the batch
