"""Block masking and the token / random / keep replacement plan (MAT-SED, PMAM)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.errors import ConfigError
from jaxaudio.nn.masking import (
    ReplacementPlan,
    apply_replacement,
    block_mask,
    masked_block_count,
    replacement_plan,
    token_only_plan,
)


def key(seed):
    return jax.random.key(seed, impl="rbg")


def test_exact_count_and_whole_blocks():
    mask = np.asarray(block_mask(key(0), 16, length=1000, block=10, rate=0.8))
    assert mask.shape == (16, 1000) and mask.dtype == bool
    assert (mask.sum(axis=1) == 800).all()
    blocks = mask.reshape(16, 100, 10)
    assert (blocks.all(axis=2) | ~blocks.any(axis=2)).all()  # every block all-or-nothing
    assert len({tuple(row) for row in mask}) == 16  # examples draw their own blocks


def test_tail_frames_are_never_masked_and_rounding():
    mask = np.asarray(block_mask(key(1), 4, length=1005, block=10, rate=0.75))
    assert not mask[:, 1000:].any()
    assert (mask.sum(axis=1) == 750).all()
    # round(n*rate): 0.333*30 = 9.99 -> 10 blocks of 7 frames
    assert (np.asarray(block_mask(key(2), 3, length=210, block=7, rate=0.333)).sum(axis=1) == 70).all()


def test_reference_count_matches_the_reference_threshold_rule():
    """Transformer4SED: threshold = sorted(noise)[min(int(n*rate), n-1)]; mask noise <= threshold."""
    batch, n, rate = 8, 100, 0.8
    mask = np.asarray(block_mask(key(3), batch, length=1000, block=10, rate=rate, reference_count=True))
    noise = np.asarray(jax.random.uniform(key(3), (batch, n)))  # the same draw block_mask makes
    threshold = np.sort(noise, axis=1)[:, min(int(n * rate), n - 1)]
    expected = np.repeat(noise <= threshold[:, None], 10, axis=1)
    np.testing.assert_array_equal(mask, expected)
    assert masked_block_count(100, 0.8, reference_count=True) == 81
    assert masked_block_count(100, 1.0, reference_count=True) == 100


def test_default_count_hides_the_lowest_noise_blocks():
    noise = np.asarray(jax.random.uniform(key(4), (5, 100)))
    mask = np.asarray(block_mask(key(4), 5, rate=0.8))
    lowest = np.argsort(noise, axis=1)[:, :80]
    expected = np.zeros((5, 100), bool)
    np.put_along_axis(expected, lowest, True, axis=1)
    np.testing.assert_array_equal(mask, np.repeat(expected, 10, axis=1))


def test_determinism_by_key():
    a = block_mask(key(5), 4)
    np.testing.assert_array_equal(a, block_mask(key(5), 4))
    assert not np.array_equal(a, block_mask(key(6), 4))
    plan_a = replacement_plan(key(7), a)
    plan_b = replacement_plan(key(7), a)
    for x, y in zip(plan_a, plan_b):
        np.testing.assert_array_equal(x, y)


def test_replacement_proportions_within_binomial_bounds():
    """Over n hidden frames the token / random counts are Binomial(n, p); allow 5 standard deviations."""
    mask = block_mask(key(8), 64, rate=0.8)
    plan = replacement_plan(key(9), mask, p_mask=0.9, p_random=0.05)
    m = np.asarray(mask)
    token, rand = np.asarray(plan.use_token), np.asarray(plan.use_random)
    n = m.sum()
    assert n == 64 * 800
    assert not (token & ~m).any() and not (rand & ~m).any()  # only hidden frames are touched
    assert not (token & rand).any()
    for count, p in ((token.sum(), 0.9), (rand.sum(), 0.05), ((m & ~token & ~rand).sum(), 0.05)):
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (count, n * p)
    src = np.asarray(plan.source_index)
    assert src.min() >= 0 and src.max() < 64 * 1000
    # donors spread over the whole batch, not just the own example: Binomial(N, 1/64) per example
    per_example = np.bincount(src[rand] // 1000, minlength=64)
    assert per_example.max() < rand.sum()  # more than one example donates
    assert (per_example > 0).sum() > 32


def test_apply_replacement_hand_case():
    x = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)  # frame (b, t) = [2*(3b+t), 2*(3b+t)+1]
    plan = ReplacementPlan(
        use_token=jnp.array([[False, True, False], [False, False, False]]),
        use_random=jnp.array([[False, False, False], [True, False, False]]),
        source_index=jnp.array([[5, 5, 5], [1, 0, 0]], jnp.int32),
    )
    out = np.asarray(apply_replacement(x, plan, jnp.array([-1.0, -2.0])))
    expected = np.asarray(x).copy()
    expected[0, 1] = [-1, -2]
    expected[1, 0] = np.asarray(x)[0, 1]  # flat frame 1 = (0, 1), read before it became a token
    np.testing.assert_array_equal(out, expected)


def test_token_only_plan_and_all_false_mask_changes_nothing():
    x = jax.random.normal(key(10), (3, 20, 4))
    none = jnp.zeros((3, 20), bool)
    np.testing.assert_array_equal(apply_replacement(x, replacement_plan(key(11), none), jnp.ones(4)), x)
    full = token_only_plan(jnp.ones((3, 20), bool))
    np.testing.assert_array_equal(apply_replacement(x, full, jnp.full((4,), 7.0)), np.full((3, 20, 4), 7.0))


def test_jit_and_bad_arguments():
    mask = jax.jit(block_mask, static_argnums=(1, 2, 3, 4))(key(12), 2, 100, 10, 0.5)
    assert int(mask.sum()) == 100
    with pytest.raises(ConfigError, match="rate"):
        block_mask(key(0), 2, rate=1.5)
    with pytest.raises(ConfigError, match="block"):
        block_mask(key(0), 2, length=5, block=10)
    with pytest.raises(ConfigError, match="p_mask"):
        replacement_plan(key(0), mask, p_mask=0.9, p_random=0.2)
