"""Activations shared by the Transformer blocks.

``exact_gelu`` runs under the named scope ``EXACT_GELU_SCOPE`` so that exporters can find its
ops: LiteRT aborts on the erf polynomial in full int8, so the int8 export keeps these ops in
float (``jaxaudio.export.model.InferenceModel.float_scopes``). The scope changes no number.

Why ``few_op_gelu``: XLA lowers ``erf`` for TFLite into a piecewise polynomial of about 65
builtin ops per call, which made the exact GELU 40% of a small Transformer's ops and a large
part of its int8 file (every op and tensor costs bytes whatever its dtype). Inside
``with few_op_gelu():`` the exact GELU is traced as ``x * Phi(x)`` with the normal tail from
Abramowitz & Stegun's formula 7.1.26 (|error of erf| <= 1.5e-7), about 20 ops. Training never
uses it; exporters trace with it, and their float32 parity tests bound the difference.
"""
import contextlib
import math

import jax
import jax.numpy as jnp

EXACT_GELU_SCOPE = "exact_gelu"

_FEW_OPS = {"on": False}
# Abramowitz & Stegun 7.1.26: erfc(z) ~ t (a1 + a2 t + ... + a5 t^4) exp(-z^2), t = 1 / (1 + p z)
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@contextlib.contextmanager
def few_op_gelu():
    """Trace ``exact_gelu`` in its few-op form inside this block (for export)."""
    previous = _FEW_OPS["on"]
    _FEW_OPS["on"] = True
    try:
        yield
    finally:
        _FEW_OPS["on"] = previous


def gelu_few_ops(x: jax.Array) -> jax.Array:
    """``x * Phi(x)`` with ``Phi`` from A&S 7.1.26 (about 1e-7 from the exact GELU)."""
    z = jnp.abs(x) * (1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + _AS_P * z)
    poly = _AS_A[4]
    for a in reversed(_AS_A[:4]):
        poly = a + t * poly
    tail = (0.5 * t * poly) * jnp.exp(-z * z)  # = Phi(-|x|)
    return x * jnp.where(x >= 0, 1.0 - tail, tail)


def exact_gelu(x: jax.Array) -> jax.Array:
    """``x * Phi(x)`` with the exact normal CDF (PyTorch's ``nn.GELU()`` default)."""
    with jax.named_scope(EXACT_GELU_SCOPE):
        if _FEW_OPS["on"]:
            return gelu_few_ops(x)
        return jax.nn.gelu(x, approximate=False)
