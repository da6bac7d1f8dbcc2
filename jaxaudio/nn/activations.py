"""Activations shared by the Transformer blocks.

``exact_gelu`` runs under the named scope ``EXACT_GELU_SCOPE`` so that exporters can find its
ops: the erf inside is lowered to a polynomial of ABS/EXP/LESS/SELECT ops, and LiteRT aborts on
that polynomial in full int8, so the int8 export keeps these ops in float (see
``jaxaudio.export.model.InferenceModel.float_scopes``). The scope changes no number.
"""
import jax

EXACT_GELU_SCOPE = "exact_gelu"


def exact_gelu(x: jax.Array) -> jax.Array:
    """``x * Phi(x)`` with the exact normal CDF (PyTorch's ``nn.GELU()`` default)."""
    with jax.named_scope(EXACT_GELU_SCOPE):
        return jax.nn.gelu(x, approximate=False)
