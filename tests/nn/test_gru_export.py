"""The GRU's export loop (``export_loop=True``) against the numpy PyTorch equations and lax.scan."""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.models.crnn import CRNN, CRNNConfig
from jaxaudio.nn.cnn import CNNConfig
from jaxaudio.nn.gru import GRU

# The numpy reference of nn.GRU lives next to this file (test_gru.py); load it by path because
# pytest runs with --import-mode=importlib.
_spec = importlib.util.spec_from_file_location("gru_reference", os.path.join(os.path.dirname(__file__),
                                                                             "test_gru.py"))
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

apply = nnx.jit(lambda model, x: model(x, train=False))


@pytest.mark.parametrize("bidirectional,num_layers", [(True, 2), (False, 1)])
def test_export_loop_matches_numpy_torch_equations(bidirectional, num_layers):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 5)).astype(np.float32)
    layers = reference.random_torch_weights(rng, 5, 4, num_layers, bidirectional)
    model = GRU(5, 4, num_layers, bidirectional=bidirectional, export_loop=True,
                rngs=nnx.Rngs(reference.key(0)))
    reference.load_torch_weights(model, layers)
    want = reference.torch_bigru(x.astype(np.float64), layers)
    np.testing.assert_allclose(np.asarray(apply(model, jnp.asarray(x))), want, atol=1e-5, rtol=0)


def test_export_loop_equals_scan():
    scan = GRU(6, 8, 2, rngs=nnx.Rngs(reference.key(3)))
    loop = GRU(6, 8, 2, export_loop=True, rngs=nnx.Rngs(reference.key(4)))
    nnx.update(loop, nnx.state(scan))
    x = jax.random.normal(reference.key(1), (2, 11, 6))
    np.testing.assert_allclose(np.asarray(apply(loop, x)), np.asarray(apply(scan, x)), atol=1e-5, rtol=0)


def test_export_loop_is_one_while_loop_per_layer():
    """Not unrolled: the graph holds the step once per layer (the TFLite test checks the buffer)."""
    model = GRU(3, 4, 2, export_loop=True, rngs=nnx.Rngs(reference.key(0)))
    text = jax.jit(lambda v: model(v, train=False)).lower(jnp.ones((1, 5, 3))).as_text()
    assert text.count("stablehlo.while") == 2


def test_crnn_export_flag_keeps_outputs():
    cfg = CRNNConfig(cnn=CNNConfig(channels=(4, 8), pooling=((2, 2), (2, 4))), rnn_hidden=6, dropout=0.0)
    model = CRNN(cfg, rngs=nnx.Rngs(reference.key(0)))
    exported = CRNN(CRNNConfig(**{**cfg.__dict__, "export_rnn": True}), rngs=nnx.Rngs(reference.key(5)))
    nnx.update(exported, nnx.state(model))
    feats = jax.random.normal(reference.key(2), (2, 16, 8))
    run = nnx.jit(lambda m, f: m(f, train=False))
    a, b = run(model, feats), run(exported, feats)
    for name in ("strong", "weak"):
        np.testing.assert_allclose(np.asarray(b[name]), np.asarray(a[name]), atol=1e-5, rtol=0)
