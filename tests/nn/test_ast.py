"""The AST encoder (``nn/ast.py``): grid sizes, token order and positions by hand, the returned
layer, short inputs, jit. Parity with Hugging Face is ``tests/convert/test_ast_vs_transformers.py``."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.ast import AST_BASE, TINY, ASTConfig, ASTEncoder


@pytest.fixture(scope="module")
def tiny():
    return ASTEncoder(TINY, rngs=nnx.Rngs(0))


def same_weights(model, cfg):
    """``ASTEncoder(cfg)`` with ``model``'s parameters (built abstractly: no second random init)."""
    other = nnx.eval_shape(lambda: ASTEncoder(cfg, rngs=nnx.Rngs(0)))
    nnx.update(other, nnx.state(model))
    return other


def fbank(frames, batch=2, n_mels=TINY.n_mels, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, frames, n_mels)), jnp.float32)


def test_base_grid_is_12_by_101_at_1024_frames():
    assert (AST_BASE.freq_patches, AST_BASE.time_patches, AST_BASE.num_positions) == (12, 101, 1214)
    assert AST_BASE.patches(998) == 99 and AST_BASE.out_layer == 10 and AST_BASE.norm_eps == 1e-12
    model = nnx.eval_shape(lambda: ASTEncoder(AST_BASE, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state,
                         jax.ShapeDtypeStruct((1, 1024, 128), jnp.float32))
    assert out["tokens"].shape == out["final"].shape == (1, 1214, 768)
    assert out["patch_grid"].shape == (1, 12, 101, 768)
    assert model.position_embeddings.shape == (1, 1214, 768)


@pytest.mark.parametrize("frames", [200, 120])
def test_tokens_are_frequency_major_patches_plus_the_grid_positions(tiny, frames):
    """Token ``2 + f*T' + t`` is the 16x16 patch at mel ``10 f``, frame ``10 t`` (conv by hand)
    plus ``position_embeddings[2 + f*T + t]`` (T = 19 columns: shorter inputs take the first T')."""
    x = fbank(frames, batch=1)
    tokens = np.asarray(tiny.embed(x, train=False))
    n_time = TINY.patches(frames)
    assert tokens.shape == (1, 2 + TINY.freq_patches * n_time, TINY.dim)
    kernel = np.asarray(tiny.patch_embed.proj.kernel[...])[:, :, 0]  # (mel, frame, dim)
    bias = np.asarray(tiny.patch_embed.proj.bias[...])
    pos = np.asarray(tiny.position_embeddings[...])[0]
    for f, t in [(0, 0), (0, n_time - 1), (3, 5), (TINY.freq_patches - 1, n_time - 2)]:
        patch = np.asarray(x[0, 10 * t:10 * t + 16, 10 * f:10 * f + 16]).T  # (mel, frame)
        want = np.einsum("ij,ijd->d", patch, kernel) + bias + pos[2 + f * TINY.time_patches + t]
        np.testing.assert_allclose(tokens[0, 2 + f * n_time + t], want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(tokens[0, 0], np.asarray(tiny.cls_token[...])[0, 0] + pos[0], atol=1e-6)
    np.testing.assert_allclose(tokens[0, 1], np.asarray(tiny.distillation_token[...])[0, 0] + pos[1], atol=1e-6)


def test_out_layer_tokens_patch_grid_and_final(tiny):
    x = fbank(200)
    states = [tiny.embed(x, train=False)]
    for block in tiny.blocks:
        states.append(block(states[-1], train=False))
    out = tiny(x, train=False)
    np.testing.assert_allclose(out["tokens"], states[2], atol=1e-6)  # TINY.out_layer = 2
    np.testing.assert_allclose(out["final"], tiny.norm(states[3]), atol=1e-6)
    grid = np.asarray(tiny.norm(states[2]))[:, 2:].reshape(2, 5, 19, TINY.dim)
    np.testing.assert_allclose(out["patch_grid"], grid, atol=1e-6)
    stopped = tiny(x, train=False, stop_at_layer=True)
    assert "final" not in stopped
    np.testing.assert_array_equal(stopped["tokens"], out["tokens"])

    out = same_weights(tiny, dataclasses.replace(TINY, out_layer=None))(x, train=False)
    np.testing.assert_allclose(out["tokens"], states[3], atol=1e-6)
    np.testing.assert_array_equal(out["patch_grid"], np.asarray(out["final"])[:, 2:].reshape(2, 5, 19, TINY.dim))


def test_jit_matches_eager_and_train_dropout_needs_a_key(tiny):
    x = fbank(200)
    graphdef, state = nnx.split(tiny)
    jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))(state, x)
    eager = tiny(x, train=False)
    for key in eager:
        np.testing.assert_allclose(jitted[key], eager[key], atol=1e-5)

    dropped = same_weights(tiny, dataclasses.replace(TINY, dropout=0.5))
    with pytest.raises(ConfigError, match="rngs"):
        dropped(x, train=True)
    graphdef, state = nnx.split(dropped)
    train = jax.jit(lambda s, x, key: nnx.merge(graphdef, s)(x, train=True, rngs=key)["final"])
    assert not np.allclose(train(state, x, jax.random.key(1)), eager["final"], atol=1e-3)


def test_bad_inputs_and_configs_are_named(tiny):
    with pytest.raises(ConfigError, match=r"ast\.n_mels=64"):
        tiny(fbank(200, n_mels=128), train=False)
    with pytest.raises(ConfigError, match=r"201 frames.*ast\.max_frames=200"):
        tiny(fbank(201), train=False)
    with pytest.raises(ConfigError, match="10 frames"):
        tiny(fbank(10), train=False)
    with pytest.raises(ConfigError, match="ast.num_heads"):
        ASTConfig(dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="ast.out_layer=13"):
        ASTConfig(out_layer=13)
