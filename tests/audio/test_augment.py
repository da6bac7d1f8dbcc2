"""Augmentations: checked on hand-worked cases and on the properties they promise."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.audio import augment as A
from jaxaudio.errors import ConfigError

KEY = jax.random.key(0)
# Eager jax.random.beta dispatches many small ops; jit keeps the tests fast. A Beta draw is what
# these tests spend most on compiling (about a second per program on a busy CPU), so calls that
# draw the same one share a program: in one jit XLA computes identical draws once.
filter_augment = jax.jit(A.filter_augment, static_argnames=(
    "db_range", "n_bands", "min_bw", "mode", "units_per_db"))


@jax.jit
def mixup_and_params(key, x, frame_y, clip_y, prob):
    """``A.mixup`` of x and both label arrays with a traced ``prob`` (as ``SEDAugment`` passes
    one), beside ``A.mixup_params`` of the same key: one compiled program for the mixup tests."""
    return A.mixup(key, x, frame_y, clip_y, alpha=0.2, beta=0.2, prob=prob), \
        A.mixup_params(key, x.shape[0], 0.2, 0.2, prob)


def mixup_case():
    x = jax.random.normal(jax.random.key(1), (8, 20, 16))
    frame_y = (jax.random.uniform(jax.random.key(2), (8, 5, 10)) > 0.5).astype(jnp.float32)
    return x, frame_y, frame_y.max(axis=1)


def runs(mask_row):
    """Lengths of the True runs in a 1-D boolean array."""
    padded = np.concatenate([[False], mask_row, [False]]).astype(int)
    change = np.flatnonzero(np.diff(padded))
    return change[1::2] - change[::2]


# ----------------------------------------------------------------------------- masks

@pytest.mark.parametrize("axis,fn", [(1, A.time_mask), (2, A.freq_mask)])
def test_single_mask_is_one_span_within_max_width(axis, fn):
    x = jnp.ones((64, 50, 40))
    widths = []
    for seed in range(5):
        out = np.asarray(jax.jit(fn, static_argnums=2)(jax.random.key(seed), x, 12))
        masked = out == 0
        along = masked.all(axis=3 - axis)  # a masked time step is zero in every mel bin, etc.
        expanded = along[:, :, None] if axis == 1 else along[:, None, :]
        np.testing.assert_array_equal(masked, np.broadcast_to(expanded, masked.shape))
        for row in along:
            r = runs(row)
            assert len(r) <= 1 and (r.sum() <= 12)
            widths.append(int(r.sum()))
    # Widths are uniform on {0..12}: every width occurs among 320 draws, and none above 12.
    assert set(widths) == set(range(13))


def test_several_masks_cover_at_most_num_masks_times_width():
    x = jnp.ones((128, 100, 8))
    out = np.asarray(jax.jit(A.time_mask, static_argnums=(2, 3))(KEY, x, max_width=10, num_masks=3))
    covered = (out[:, :, 0] == 0).sum(axis=1)
    assert covered.max() <= 30 and covered.max() > 10


def test_mean_fill_uses_each_examples_mean():
    x = jnp.arange(2 * 6 * 4, dtype=jnp.float32).reshape(2, 6, 4)
    out = np.asarray(jax.jit(lambda k, x: A.freq_mask(k, x, max_width=4, fill="mean"))(KEY, x))
    for b in range(2):
        changed = out[b] != np.asarray(x[b])
        assert np.all(out[b][changed] == np.asarray(x[b]).mean())


# ----------------------------------------------------------------------------- mixup

def test_mixup_is_the_convex_combination_for_every_label_array():
    k = jax.random.key(3)
    x, frame_y, clip_y = mixup_case()
    (xm, fm, cm), (lam, perm) = mixup_and_params(k, x, frame_y, clip_y, 1.0)
    lam, perm = float(lam), np.asarray(perm)
    assert 0.0 <= lam <= 1.0 and sorted(perm) == list(range(8))
    for got, a in [(xm, x), (fm, frame_y), (cm, clip_y)]:
        a = np.asarray(a)
        np.testing.assert_allclose(np.asarray(got), lam * a + (1 - lam) * a[perm], atol=1e-6)
    assert np.all((np.asarray(fm) >= 0) & (np.asarray(fm) <= 1))


def test_mixup_prob_zero_leaves_input_and_beta_mean_is_right():
    x, frame_y, clip_y = mixup_case()
    (same, same_frame, same_clip), (lam, _) = mixup_and_params(KEY, x, frame_y, clip_y, 0.0)
    for got, a in [(same, x), (same_frame, frame_y), (same_clip, clip_y)]:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(a))
    assert float(lam) == 1.0
    lams = jax.jit(jax.vmap(lambda k: A.mixup_params(k, 4, 10.0, 0.5)[0]))(
        jax.random.split(KEY, 4000))
    # Beta(10, 0.5) has mean 10 / 10.5; standard error ~ 0.06 / sqrt(4000) ~ 1e-3.
    assert abs(float(lams.mean()) - 10 / 10.5) < 5e-3


# ----------------------------------------------------------------------------- frame shift

def test_roll_time_hand_worked():
    # 8 feature frames, 4 label frames (2 feature frames per label frame).
    x = np.arange(8.0, dtype=np.float32)[None, :, None].repeat(2, axis=0)  # x[b, t, 0] = t
    y = np.eye(4, dtype=np.float32)[None].repeat(2, axis=0)  # label frame j is class j
    xs, ys = jax.jit(A.roll_time)(x, y, np.array([3, -3]))   # one compile, not one per op
    np.testing.assert_array_equal(np.asarray(xs)[0, :, 0], [5, 6, 7, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(np.asarray(xs)[1, :, 0], [3, 4, 5, 6, 7, 0, 1, 2])
    # shift 3 -> floor(1.5) = 1 label frame; shift -3 -> floor(-1.5) = -2.
    np.testing.assert_array_equal(np.asarray(ys)[0].argmax(-1), [3, 0, 1, 2])
    np.testing.assert_array_equal(np.asarray(ys)[1].argmax(-1), [2, 3, 0, 1])


def test_frame_shift_moves_labels_with_features():
    batch, frames, pool = 64, 40, 4
    x = jnp.broadcast_to(jnp.arange(frames, dtype=jnp.float32)[None, :, None], (batch, frames, 3))
    y = jnp.broadcast_to(jnp.eye(frames // pool)[None], (batch, frames // pool, frames // pool))
    xs, ys = jax.jit(A.frame_shift, static_argnums=3)(KEY, x, y, 6.0)
    xs, ys = np.asarray(xs), np.asarray(ys)
    shifts = (-xs[:, 0, 0]) % frames  # where original frame 0 went, as a roll amount
    shifts = np.where(shifts > frames // 2, shifts - frames, shifts).astype(int)
    for b in range(batch):
        np.testing.assert_array_equal(xs[b, :, 0], np.roll(np.arange(frames), shifts[b]))
        expected = np.roll(np.eye(frames // pool), shifts[b] // pool, axis=0)
        np.testing.assert_array_equal(ys[b], expected)
    assert np.abs(shifts).max() > 0 and 3 < np.std(shifts) < 9  # ~ N(0, 6) truncated


# ----------------------------------------------------------------------------- FilterAugment

@pytest.mark.parametrize("seed", range(6))
def test_filter_augment_step_on_zeros_is_band_constant_within_range(seed):
    out = np.asarray(filter_augment(jax.random.key(seed), jnp.zeros((5, 7, 64)),
                                      db_range=(-6, 6), n_bands=(3, 6), min_bw=6, mode="step"))
    assert np.all(out == out[:, :1, :])  # the same gain in every time frame
    curve = out[:, 0, :]
    assert np.all((curve >= -6) & (curve <= 6))
    # Bands are shared across the batch: the change points are the same for every example.
    changes = [set(np.flatnonzero(np.diff(c))) for c in curve]
    edges = set.union(*changes)
    assert 2 <= len(edges) <= 4  # 3..5 bands -> 2..4 interior edges
    bounds = [0] + sorted(e + 1 for e in edges) + [64]
    assert min(np.diff(bounds)) >= 6
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        assert np.all(curve[:, lo:hi] == curve[:, lo:lo + 1])


def test_filter_augment_linear_ramps_inside_range():
    out = np.asarray(filter_augment(KEY, jnp.zeros((4, 2, 64)), db_range=(-4.5, 6),
                                      mode="linear", units_per_db=1.0))
    curve = out[:, 0, :]
    assert np.all((curve >= -4.5 - 1e-5) & (curve <= 6 + 1e-5))
    second = np.abs(np.diff(curve, n=2, axis=1))
    # Piecewise linear: the second difference vanishes except near the few band edges.
    assert np.mean(second < 1e-4) > 0.8


def test_filter_augment_units_scale_the_gain():
    x = jnp.zeros((2, 3, 32))
    g_db = filter_augment(KEY, x)
    g_ln = filter_augment(KEY, x, units_per_db=float(np.log(10) / 20 / 5))
    np.testing.assert_allclose(np.asarray(g_ln), np.asarray(g_db) * np.log(10) / 100, rtol=1e-5)


# ----------------------------------------------------------------------------- keys

@pytest.mark.parametrize("name", ["time", "freq", "mixup", "shift", "filter"])
def test_same_key_same_output_different_key_different(name):
    x = jax.random.normal(jax.random.key(9), (8, 30, 24))
    y = jnp.ones((8, 10, 5)) * jnp.arange(8.0)[:, None, None]
    x_mix, *labels_mix = mixup_case()
    fns = {
        "time": jax.jit(lambda k: A.time_mask(k, x, 10)),
        "freq": jax.jit(lambda k: A.freq_mask(k, x, 10)),
        # mixup: the program the mixup tests above compiled (the mixed features)
        "mixup": lambda k: mixup_and_params(k, x_mix, *labels_mix, 1.0)[0][0],
        "shift": jax.jit(lambda k: A.frame_shift(k, x, y, 5.0)[0]),
        "filter": jax.jit(lambda k: A.filter_augment(k, x)),
    }
    fn = fns[name]
    a, b, c = fn(jax.random.key(1)), fn(jax.random.key(1)), fn(jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ConfigError, match="max_width"):
        A.time_mask(KEY, jnp.zeros((1, 5, 5)), max_width=9)
    with pytest.raises(ConfigError, match="mode"):
        A.filter_augment(KEY, jnp.zeros((1, 5, 5)), mode="cubic")
    with pytest.raises(ConfigError, match="fill"):   # raised while tracing: nothing to run
        jax.eval_shape(lambda: A.freq_mask(KEY, jnp.zeros((1, 5, 5)), 2, fill="noise"))


# ----------------------------------------------------------------------------- the SED recipes' batch augment
# experiments/sed/augment.SEDAugment: its defaults must reproduce, bit for bit, what the CRNN and the PMAM
# tiny/smoke presets ran before the mixup and FilterAugment knobs existed (the function as it was, below).

def _make_augment_before_knobs(segments, *, frame_shift_sigma, mixup_prob, filter_augment, units_per_db=1.0):
    def augment_batch(key, feats, strong, weak):
        k_shift, k_mix, k_filter = jax.random.split(key, 3)
        if frame_shift_sigma > 0:
            feats, strong = A.frame_shift(k_shift, feats, strong, frame_shift_sigma)
        if mixup_prob > 0:
            parts = []
            for i, (start, stop) in enumerate(segments):
                parts.append(A.mixup(jax.random.fold_in(k_mix, i), feats[start:stop], strong[start:stop],
                                     weak[start:stop], prob=mixup_prob))
            feats, strong, weak = (jnp.concatenate(p, axis=0) for p in zip(*parts))
        if filter_augment:
            feats = A.filter_augment(k_filter, feats, units_per_db=units_per_db)
        return feats, strong, weak

    return augment_batch


def _sed_batch(rows=12, frames=40, mels=32, classes=5, seed=3):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    feats = jax.random.normal(k1, (rows, frames, mels))
    strong = (jax.random.uniform(k2, (rows, frames // 4, classes)) > 0.7).astype(jnp.float32)
    weak = (jax.random.uniform(k3, (rows, classes)) > 0.5).astype(jnp.float32)
    return feats, strong, weak


@pytest.mark.parametrize("kwargs", [
    {"frame_shift_sigma": 4.0, "mixup_prob": 0.5, "filter_augment": True, "units_per_db": float(np.log(10) / 100)},
    {"frame_shift_sigma": 0.0, "mixup_prob": 1.0, "filter_augment": False},
])
def test_sed_make_augment_defaults_are_bit_identical_to_before(kwargs):
    from experiments.sed import augment as sed_augment

    segments = sed_augment.batch_segments((6, 3, 3))
    batch = _sed_batch()
    now = sed_augment.SEDAugment(segments, **kwargs)
    before = _make_augment_before_knobs(segments, **kwargs)
    both = jax.jit(lambda key, *batch: (now(key, *batch), before(key, *batch)))   # one compile, not two
    for seed in range(6):
        for a, b in zip(*both(jax.random.key(seed), *batch)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sed_make_augment_filter_mapping_reaches_filter_augment():
    from experiments.sed import augment as sed_augment

    feats, strong, weak = _sed_batch()
    setting = {"db_range": (-26.0, 26.0), "n_bands": (2, 5), "min_bw": 4, "mode": "step"}
    fn = sed_augment.SEDAugment([], frame_shift_sigma=0.0, mixup_prob=0.0, filter_augment=setting, units_per_db=0.5)

    @jax.jit   # one program: op by op, eager JAX would compile every op of both apart
    def out_and_expected(key):
        k_filter = jax.random.split(key, 3)[2]
        return fn(key, feats, strong, weak)[0], A.filter_augment(k_filter, feats, db_range=(-26.0, 26.0),
                                                                 n_bands=(2, 5), min_bw=4, units_per_db=0.5)

    out, expected = out_and_expected(jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    gains = np.asarray(out - feats)[:, 0, :] / 0.5   # dB, constant over time
    assert np.abs(gains).max() <= 26.0 + 1e-4 and np.abs(gains).max() > 6.0   # beyond the DCASE +-6 dB


def test_sed_filter_augment_kwargs_read_the_stage_value():
    from experiments.sed.augment import filter_augment_kwargs

    assert filter_augment_kwargs(False) is None and filter_augment_kwargs(True) == {}
    assert filter_augment_kwargs({"db_range": [-26, 26], "n_bands": [2, 5]}) == {"db_range": (-26.0, 26.0),
                                                                               "n_bands": (2, 5)}
    with pytest.raises(ConfigError, match="min_bandwidth"):
        filter_augment_kwargs({"min_bandwidth": 4})
    with pytest.raises(ConfigError, match="filter_augment"):
        filter_augment_kwargs(3)


def test_sed_mixup_only_the_named_segments_and_one_coin_per_batch():
    from experiments.sed import augment as sed_augment

    counts = (8, 8, 4)   # 8-row segments: an identity partner permutation is practically impossible
    segments = sed_augment.batch_segments(counts)
    options = sed_augment.mixup_options({"mixup_alpha": 2.0, "mixup_beta": 2.0, "mixup_coin": "batch",
                                         "mixup_sources": ("strong", "weak")}, counts)
    assert options == {"mixup_alpha": 2.0, "mixup_beta": 2.0, "mixup_per_batch": True, "mixup_segments": (0, 1)}
    fn = jax.jit(sed_augment.SEDAugment(segments, frame_shift_sigma=0.0, mixup_prob=0.5, filter_augment=False,
                                          **options))
    feats, strong, weak = _sed_batch(rows=20)
    outcomes = set()
    for seed in range(30):
        out = fn(jax.random.key(seed), feats, strong, weak)
        changed = [not np.array_equal(np.asarray(out[0][a:b]), np.asarray(feats[a:b])) for a, b in segments]
        assert changed[0] == changed[1]             # one coin for the strong and the weak rows
        outcomes.add(changed[0])
        for o, x in zip(out, (feats, strong, weak)):   # unlabeled rows are never mixed
            np.testing.assert_array_equal(np.asarray(o[16:]), np.asarray(x[16:]))
    assert outcomes == {True, False}


def test_sed_mixup_lambda_follows_the_configured_beta():
    """Two one-hot weak rows: where the partner of row 0 is row 1, its label is (lam, 1 - lam);
    Beta(10, 0.5) has mean 10 / 10.5 ~ 0.952 (Beta(0.2, 0.2): 0.5)."""
    from experiments.sed import augment as sed_augment

    feats, strong, _ = _sed_batch(rows=2)
    settings = ((10.0, 0.5), (0.2, 0.2))
    augments = [sed_augment.SEDAugment([(0, 2)], frame_shift_sigma=0.0, mixup_prob=1.0, filter_augment=False,
                                       mixup_alpha=alpha, mixup_beta=beta) for alpha, beta in settings]
    # both settings in one program (one compile): row 0 of the weak labels, per setting
    fn = jax.jit(lambda key: jnp.stack([aug(key, feats, strong, jnp.eye(2))[2][0] for aug in augments]))
    draws = np.array([np.asarray(fn(jax.random.key(s))) for s in range(400)])   # (400, setting, 2)
    for i, (alpha, beta) in enumerate(settings):
        rows = draws[:, i]
        lam = rows[rows[:, 1] > 0, 0]
        var = alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1))
        assert len(lam) > 100 and abs(lam.mean() - alpha / (alpha + beta)) < 4 * np.sqrt(var / len(lam))


def test_sed_mixup_without_segments_mixes_the_whole_batch_labels_along():
    """PMAM pre-training: no segments, the pseudo labels ride as ``strong`` and are mixed with the features."""
    from experiments.sed import augment as sed_augment

    fn = jax.jit(sed_augment.SEDAugment([], frame_shift_sigma=0.0, mixup_prob=1.0, filter_augment=False))
    feats, _, weak = _sed_batch(rows=8)
    gamma = jnp.broadcast_to(jnp.arange(8.0)[:, None, None], (8, 10, 3))   # row index as the label
    out_feats, out_gamma, _ = fn(jax.random.key(2), feats, gamma, weak)
    lam_row = np.asarray(out_gamma)[:, 0, 0]
    assert not np.allclose(lam_row, np.arange(8.0))
    # the features mixed with the same lambda and partner as the labels
    f = np.asarray(feats)
    for i in range(8):
        for j in range(8):
            lam = 1.0 if i == j else (lam_row[i] - j) / (i - j)
            if i == j and np.isclose(lam_row[i], i):
                np.testing.assert_allclose(np.asarray(out_feats)[i], f[i], rtol=1e-5, atol=1e-5)
                break
            if i != j and 0 <= lam <= 1 and np.allclose(np.asarray(out_feats)[i], lam * f[i] + (1 - lam) * f[j],
                                                       rtol=1e-4, atol=1e-4):
                break
        else:
            raise AssertionError(f"row {i}: no partner explains the mixed features")


def test_sed_mixup_options_defaults_and_errors():
    from experiments.sed import augment as sed_augment

    assert sed_augment.mixup_options({}) == {"mixup_alpha": 0.2, "mixup_beta": 0.2, "mixup_per_batch": False,
                                             "mixup_segments": None}
    # sources with no rows have no segment: weak and unlabeled are segments 0 and 1 without strong rows
    assert sed_augment.mixup_options({"mixup_sources": ("weak",)}, (0, 4, 4))["mixup_segments"] == (0,)
    with pytest.raises(ConfigError, match="mixup_coin"):
        sed_augment.mixup_options({"mixup_coin": "clip"})
    with pytest.raises(ConfigError, match="labelled"):
        sed_augment.mixup_options({"mixup_sources": ("labelled",)}, (1, 1, 1))


# ----------------------------------------------------------------------------- frequency distortion

def _reference_warp(mel, bias, phase):
    """Transformer4SED's freq_nonlinear for a given bias and phase, row by row with np.interp."""
    b, t, f = mel.shape
    ind = np.arange(f)
    moved = f * (ind / f + bias * np.sin(2 * np.pi * (ind / f + phase)))
    rows = mel.reshape(b * t, f)
    return np.stack([np.interp(ind, moved, row) for row in rows]).reshape(b, t, f)


@pytest.mark.parametrize("bias,phase", [(0.0, 0.3), (0.012, 0.77), (0.03, 0.05), (0.03, 0.5)])
def test_freq_warp_matrix_is_the_reference_interpolation(bias, phase):
    mel = np.random.default_rng(2).normal(size=(3, 7, 64))
    warp = np.asarray(A.freq_warp_matrix(64, jnp.float32(bias), jnp.float32(phase)), np.float64)
    np.testing.assert_allclose(mel @ warp.T, _reference_warp(mel, bias, phase), atol=2e-5)
    if bias == 0.0:
        np.testing.assert_allclose(warp, np.eye(64), atol=1e-6)


def test_freq_distortion_draws_one_warp_per_batch_within_the_bias():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 5, 32)), jnp.float32)
    key = jax.random.key(9)
    out = np.asarray(jax.jit(lambda k: A.freq_distortion(k, x, 0.03))(key))
    k_bias, k_phase = jax.random.split(key)
    bias, phase = 0.03 * float(jax.random.uniform(k_bias, ())), float(jax.random.uniform(k_phase, ()))
    assert 0.0 <= bias <= 0.03
    np.testing.assert_allclose(out, _reference_warp(np.asarray(x, np.float64), bias, phase), atol=2e-5)
    with pytest.raises(ConfigError, match="max_bias"):
        A.freq_distortion(key, x, 0.2)


def test_two_views_share_shift_and_mixup_but_not_the_label_free_draw():
    from experiments.sed import augment as sed_augment

    segments = sed_augment.batch_segments((6, 3, 3))
    feats, strong, weak = _sed_batch()
    kwargs = dict(frame_shift_sigma=4.0, mixup_prob=1.0, filter_augment=True, freq_distortion=0.03)
    one = sed_augment.SEDAugment(segments, **kwargs)
    two = sed_augment.SEDAugment(segments, two_views=True, **kwargs)
    key = jax.random.key(5)
    # one compiled program for the three calls (their common draws computed once), not three
    (s1, t1, y1, w1), (s2, t2, y2, w2), call = jax.jit(
        lambda *args: (one.pair(*args), two.pair(*args), one(*args)))(key, feats, strong, weak)
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(t1))          # one view: the teacher sees it too
    for a, b in ((s1, s2), (y1, y2), (w1, w2)):                             # the student's view is unchanged
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(s2), np.asarray(t2))
    # the one-network call is the pair's student view
    np.testing.assert_array_equal(np.asarray(call[0]), np.asarray(s1))
