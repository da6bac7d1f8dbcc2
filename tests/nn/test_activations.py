"""The export form of the exact GELU against a float64 reference built on scipy's erf."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf

from jaxaudio.nn.activations import exact_gelu, few_op_gelu, gelu_few_ops


def _reference(x):
    x = np.asarray(x, np.float64)
    return x * 0.5 * (1.0 + erf(x / np.sqrt(2.0)))


def test_few_op_gelu_matches_float64_reference():
    x = np.concatenate([np.linspace(-12, 12, 20001), np.random.default_rng(0).normal(size=5000) * 3])
    got = np.asarray(gelu_few_ops(jnp.asarray(x, jnp.float32)), np.float64)
    want = _reference(np.asarray(x, np.float32))
    # A&S 7.1.26 bounds erf's error by 1.5e-7, i.e. |x| * 0.75e-7 here, plus float32 rounding.
    assert np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))) < 1e-6


def test_context_switches_the_traced_form_only_inside():
    x = jnp.linspace(-4, 4, 101)
    plain = jax.jit(exact_gelu)
    with few_op_gelu():
        few = np.asarray(jax.jit(lambda v: exact_gelu(v) + 0.0)(x))
    np.testing.assert_allclose(few, np.asarray(plain(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: exact_gelu(v) * 1.0)(x)), _reference(x), atol=1e-6)
    # The exact form lowers erf; the few-op form has no erf in its program.
    assert "erf" in jax.jit(exact_gelu).lower(x).as_text()
    with few_op_gelu():
        assert "erf" not in jax.jit(lambda v: exact_gelu(v) - 0.0).lower(x).as_text()
