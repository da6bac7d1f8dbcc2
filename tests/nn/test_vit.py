"""PaSST-style ViT: patch grid, positions, patchout, layer outputs, pooling, interpolation, LoRA."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.lora import LoRALinear, is_lora_path, lora_param_groups
from jaxaudio.nn.pooling import AttentionPool
from jaxaudio.nn.vit import (
    PASST_S,
    PASST_S_AUDIOSET,
    TINY,
    PatchEmbed,
    ViT,
    frequency_pool,
    interpolate_time,
)
from jaxaudio.train.optim import make_optimizer
from jaxaudio.train.sharding import path_to_str


def key(seed):
    return jax.random.key(seed, impl="rbg")


def tiny_model(seed=0, **overrides):
    return ViT(dataclasses.replace(TINY, **overrides), rngs=nnx.Rngs(key(seed)))


def mel(batch=2, frames=200, n_mels=64, seed=1):
    return jax.random.normal(key(seed), (batch, frames, n_mels))


def numpy_patch_grid(model, x):
    """im2col by hand: patch (f, t) covers mel bins f*s..f*s+p and frames t*st..t*st+p (st: the
    time stride)."""
    cfg = model.cfg
    w = np.asarray(model.patch_embed.proj.kernel[...], np.float64)  # (p_freq, p_time, 1, dim)
    b = np.asarray(model.patch_embed.proj.bias[...], np.float64)
    x = np.asarray(x, np.float64)
    n_f, n_t = (x.shape[2] - cfg.patch_size) // cfg.stride + 1, cfg.patches(x.shape[1])
    p, s, st = cfg.patch_size, cfg.stride, cfg.step
    out = np.zeros((x.shape[0], n_f, n_t, cfg.dim))
    for f in range(n_f):
        for t in range(n_t):
            window = x[:, t * st: t * st + p, f * s: f * s + p]  # (batch, time, freq)
            out[:, f, t] = np.einsum("btf,ftd->bd", window, w[:, :, 0, :]) + b
    return out


def test_passt_s_grid_and_parameter_count():
    assert (PASST_S.freq_patches, PASST_S.time_patches) == (12, 99)
    abstract = nnx.eval_shape(lambda: ViT(PASST_S, rngs=nnx.Rngs(0)))
    assert abstract.grid_shape(998, train=False) == (12, 99)
    assert abstract.freq_pos_embed.shape == (1, 12, 1, 768)
    assert abstract.time_pos_embed.shape == (1, 1, 99, 768)
    d, h = 768, 3072
    block = 4 * (d * d + d) + (d * h + h) + (h * d + d) + 4 * d
    want = (256 * d + d) + 2 * d + 2 * d + 12 * d + 99 * d + 12 * block + 2 * d
    got = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert got == want  # ViT-B without heads: 85.2M
    embed = nnx.eval_shape(lambda: PatchEmbed(PASST_S, rngs=nnx.Rngs(key(0))))   # shapes only
    assert nnx.eval_shape(lambda m, x: m(x), embed, jax.ShapeDtypeStruct((1, 998, 128), jnp.float32)).shape == (
        1, 12, 99, 768)
    assert PASST_S_AUDIOSET.patchout_time == 40 and PASST_S_AUDIOSET.patchout_freq == 4


def test_embed_positions_and_prefix_tokens():
    model = tiny_model()
    x = mel()
    out = model.embed(x, train=False)
    tokens = np.asarray(out["tokens"])
    n_f, n_t = model.grid_shape(200, train=False)
    assert (n_f, n_t) == (5, 19) and tokens.shape == (2, 2 + 5 * 19, 32)
    pos = np.asarray(model.token_pos_embed[...])[0]
    for i, token in enumerate((model.cls_token, model.dist_token)):
        want = np.broadcast_to(np.asarray(token[...])[0, 0] + pos[i], (2, 32))
        np.testing.assert_allclose(tokens[:, i], want, atol=1e-6)
    grid = numpy_patch_grid(model, x)
    grid = grid + np.asarray(model.time_pos_embed[...]) + np.asarray(model.freq_pos_embed[...])
    np.testing.assert_allclose(tokens[:, 2:], grid.reshape(2, n_f * n_t, 32), atol=1e-4)


def test_time_stride_steps_the_time_axis_alone():
    model = tiny_model(time_stride=5)  # 64 mels -> 5 rows at stride 10; 200 frames -> 37 columns at 5
    assert (model.cfg.freq_patches, model.cfg.time_patches) == (5, 37)
    assert model.time_pos_embed.shape == (1, 1, 37, 32)
    x = mel()
    tokens = np.asarray(model.embed(x, train=False)["tokens"])[:, 2:]
    grid = numpy_patch_grid(model, x) + np.asarray(model.time_pos_embed[...]) + np.asarray(model.freq_pos_embed[...])
    np.testing.assert_allclose(tokens, grid.reshape(2, 5 * 37, 32), atol=1e-4)
    with pytest.raises(ConfigError):
        dataclasses.replace(TINY, time_stride=-1)


def test_shorter_input_uses_first_time_positions_and_longer_is_cut():
    model = tiny_model()
    short = mel(1, 100)  # 9 time patches of 19
    full_pos = np.asarray(model.time_pos_embed[...])
    tokens = np.asarray(model.embed(short, train=False)["tokens"])[:, 2:].reshape(1, 5, 9, 32)
    grid = numpy_patch_grid(model, short) + full_pos[:, :, :9] + np.asarray(model.freq_pos_embed[...])
    np.testing.assert_allclose(tokens, grid, atol=1e-4)
    # In training the window is a random contiguous slice of the 19 positions.
    train_tokens = np.asarray(model.embed(short, train=True, rngs=key(3))["tokens"])[:, 2:].reshape(1, 5, 9, 32)
    base = numpy_patch_grid(model, short) + np.asarray(model.freq_pos_embed[...])
    offsets = [o for o in range(19 - 9 + 1)
               if np.allclose(train_tokens, base + full_pos[:, :, o:o + 9], atol=1e-4)]
    assert len(offsets) == 1
    assert model.embed(mel(1, 260), train=False)["tokens"].shape == (1, 2 + 5 * 19, 32)


def test_structured_patchout_counts_and_kept_embeddings():
    model = tiny_model(patchout_time=6, patchout_freq=2)
    x = mel()
    full = np.asarray(model.embed(x, train=False)["tokens"])[:, 2:].reshape(2, 5, 19, 32)
    out = nnx.jit(lambda m, x, k: m.embed(x, train=True, rngs=k))(model, x, key(5))
    t_idx, f_idx = np.asarray(out["time_index"]), np.asarray(out["freq_index"])
    assert len(t_idx) == 13 and len(f_idx) == 3
    assert np.all(np.diff(t_idx) > 0) and np.all(np.diff(f_idx) > 0)
    assert model.grid_shape(200, train=True) == (3, 13)
    tokens = np.asarray(out["tokens"])
    assert tokens.shape == (2, 2 + 3 * 13, 32)
    np.testing.assert_allclose(tokens[:, 2:].reshape(2, 3, 13, 32), full[:, f_idx][:, :, t_idx], atol=1e-5)
    other = nnx.jit(lambda m, x, k: m.embed(x, train=True, rngs=k))(model, x, key(6))
    assert not (np.array_equal(np.asarray(other["time_index"]), t_idx)
                and np.array_equal(np.asarray(other["freq_index"]), f_idx))
    # No patchout at evaluation.
    assert model.embed(x, train=False)["tokens"].shape == (2, 2 + 5 * 19, 32)


def test_unstructured_patchout():
    model = tiny_model(patchout_unstructured=40)
    x = mel()
    full = np.asarray(model.embed(x, train=False)["tokens"])[:, 2:]
    out = model.embed(x, train=True, rngs=key(7))
    idx = np.asarray(out["patch_index"])
    assert len(idx) == 95 - 40 and len(set(idx.tolist())) == 55 and np.all(np.diff(idx) > 0)
    np.testing.assert_allclose(np.asarray(out["tokens"])[:, 2:], full[:, idx], atol=1e-5)


def test_train_without_key_is_an_error():
    model = tiny_model(patchout_time=2)
    with pytest.raises(ConfigError):
        model(mel(), train=True)
    with pytest.raises(ConfigError):
        model(mel(n_mels=60), train=False)
    with pytest.raises(ConfigError):
        dataclasses.replace(TINY, patchout_freq=5)


def test_any_layer_output_and_final_norm():
    model = tiny_model()
    x = mel()
    h = model.embed(x, train=False)["tokens"]
    layers = []
    for block in model.blocks:
        h = block(h, train=False, rngs=None)
        layers.append(h)
    for k in (1, 2, 3):
        out = model(x, train=False, return_layer=k)
        np.testing.assert_allclose(np.asarray(out["tokens"]), np.asarray(layers[k - 1]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(out["patch_tokens"]), np.asarray(layers[k - 1][:, 2:]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(out["final"]), np.asarray(model.norm(layers[-1])), atol=1e-5)
    stopped = model(x, train=False, return_layer=1, stop_at_layer=True)
    assert "final" not in stopped
    np.testing.assert_allclose(np.asarray(stopped["tokens"]), np.asarray(layers[0]), atol=1e-5)
    default = model(x, train=False)  # TINY.out_layer = 2
    np.testing.assert_allclose(np.asarray(default["tokens"]), np.asarray(layers[1]), atol=1e-5)
    normed = model(x, train=False, return_layer=None)
    np.testing.assert_allclose(np.asarray(normed["tokens"]), np.asarray(model.norm(layers[-1])), atol=1e-5)
    with pytest.raises(ConfigError):
        model(x, train=False, return_layer=4)


def test_frequency_pool_mean_and_attention():
    n_f, n_t, dim = 3, 4, 8
    tokens = jax.random.normal(key(8), (2, n_f * n_t, dim))
    t = np.asarray(tokens)
    want = np.zeros((2, n_t, dim))
    for ti in range(n_t):
        want[:, ti] = sum(t[:, f * n_t + ti] for f in range(n_f)) / n_f
    pool = AttentionPool(dim, 2, rngs=nnx.Rngs(key(9)))

    @nnx.jit   # one program: op by op, eager JAX would compile each op apart
    def pools(pool, tokens):
        mean = frequency_pool(tokens, n_f, n_t)
        attended = frequency_pool(tokens, n_f, n_t, mode="attention", pool_module=functools.partial(pool, train=False))
        columns = [pool(tokens[:, ti::n_t], train=False) for ti in range(n_t)]  # the n_f patches at time ti
        return mean, attended, columns

    mean, got, columns = pools(pool, tokens)
    np.testing.assert_allclose(np.asarray(mean), want, atol=1e-6)
    for ti in range(n_t):
        np.testing.assert_allclose(np.asarray(got)[:, ti], np.asarray(columns[ti]), atol=1e-5)
    with pytest.raises(ConfigError):
        frequency_pool(tokens[:, 1:], n_f, n_t)
    with pytest.raises(ConfigError):
        frequency_pool(tokens, n_f, n_t, mode="max")


def test_interpolate_linear_matches_np_interp_and_torch_convention():
    x = jax.random.normal(key(10), (2, 99, 3))
    got = np.asarray(interpolate_time(x, 10, pad_to=100))
    assert got.shape == (2, 1000, 3)
    padded = np.concatenate([np.asarray(x), np.asarray(x)[:, -1:]], axis=1)
    src = (np.arange(1000) + 0.5) / 10 - 0.5  # align_corners=False sample positions
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(got[b, :, c], np.interp(src, np.arange(100), padded[b, :, c]), atol=1e-5)
    # Hand case: [0, 10] x2 -> positions -0.25, 0.25, 0.75, 1.25 -> 0, 2.5, 7.5, 10.
    np.testing.assert_allclose(np.asarray(interpolate_time(jnp.array([[[0.0], [10.0]]]), 2))[0, :, 0],
                               [0.0, 2.5, 7.5, 10.0], atol=1e-6)
    nearest = np.asarray(interpolate_time(x, 10, mode="nearest"))
    np.testing.assert_array_equal(nearest, np.repeat(np.asarray(x), 10, axis=1))
    with pytest.raises(ConfigError):
        interpolate_time(x, 10, pad_to=50)


def test_jit_and_vmap_match_eager():
    model = tiny_model(seed=2, depth=2)
    x = mel(seed=4)  # the shapes the eager tests above already compiled, op by op
    eager = model(x, train=False)["patch_tokens"]
    jitted = nnx.jit(lambda m, x: m(x, train=False)["patch_tokens"])(model, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)
    graphdef, state = nnx.split(model)

    def one(state, clip):
        return nnx.merge(graphdef, state)(clip[None], train=False)["patch_tokens"][0]

    mapped = jax.jit(jax.vmap(one, in_axes=(None, 0)))(state, x)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), atol=1e-5)


def test_tiny_forward_backward_with_patchout_and_dropout():
    model = tiny_model(depth=2, out_layer=None, patchout_time=4, patchout_freq=1, dropout=0.1,
                       attention_dropout=0.1)
    graphdef, params = nnx.split(model)
    x = mel(frames=160)  # 15 time patches

    def loss_fn(params, x, k):
        out = nnx.merge(graphdef, params)(x, train=True, rngs=k)
        n_f, n_t = 4, 11
        pooled = frequency_pool(out["patch_tokens"], n_f, n_t)
        return jnp.mean(interpolate_time(pooled, 10) ** 2)

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, x, key(11))   # one compile: forward and backward
    assert np.isfinite(float(loss))
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert np.abs(np.asarray(grads["patch_embed"]["proj"]["kernel"])).sum() > 0
    assert np.abs(np.asarray(grads["blocks"][0]["attention"]["query"]["kernel"])).sum() > 0


def final(model, x):
    return model(x, train=False)["final"]


def base_copy(lora_model, **overrides):
    """A rank-0 model holding the LoRA model's base weights."""
    base = tiny_model(seed=99, **overrides)
    base_state = nnx.state(lora_model, nnx.Not(lambda path, _: is_lora_path(path)))
    nnx.update(base, base_state)
    return base


def test_lora_zero_b_is_base_model_and_delta_is_scaled_ab():
    model = tiny_model(lora_rank=4, lora_alpha=2.0)
    base = base_copy(model)
    x = mel()
    np.testing.assert_allclose(np.asarray(final(model, x)), np.asarray(final(base, x)), atol=1e-6)
    # Layer level: delta = (alpha/r) x A B.
    layer = model.blocks[0].attention.query
    assert isinstance(layer, LoRALinear) and layer.lora_a.shape == (32, 4) and layer.lora_b.shape == (4, 32)
    layer.lora_b[...] = jax.random.normal(key(12), (4, 32))
    h = jax.random.normal(key(13), (5, 32))
    a, b = np.asarray(layer.lora_a[...]), np.asarray(layer.lora_b[...])
    want = np.asarray(h) @ (np.asarray(layer.kernel[...]) + 0.5 * a @ b) + np.asarray(layer.bias[...])
    np.testing.assert_allclose(np.asarray(layer(h)), want, atol=1e-5)
    # Model level: adapters everywhere equal a base model with merged kernels.
    for i, blk in enumerate(model.blocks):
        for lin in (blk.attention.query, blk.attention.key, blk.attention.value, blk.attention.out,
                    blk.mlp.fc_in, blk.mlp.fc_out):
            lin.lora_b[...] = 0.1 * jax.random.normal(key(20 + i), lin.lora_b.shape)
    merged = base_copy(model)
    for blk_m, blk in zip(merged.blocks, model.blocks):
        for name in ("query", "key", "value", "out"):
            getattr(blk_m.attention, name).kernel[...] = getattr(blk.attention, name).merged_kernel()
        for name in ("fc_in", "fc_out"):
            getattr(blk_m.mlp, name).kernel[...] = getattr(blk.mlp, name).merged_kernel()
    np.testing.assert_allclose(np.asarray(final(model, x)), np.asarray(final(merged, x)), atol=1e-4)
    assert not np.allclose(np.asarray(final(model, x)), np.asarray(final(base, x)), atol=1e-3)


def test_lora_param_groups_train_only_adapters():
    model = tiny_model(lora_rank=2, lora_targets=("query", "value"))
    params = nnx.state(model, nnx.Param)
    names = [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    lora_names = [n for n in names if is_lora_path(n)]
    assert len(lora_names) == 2 * 2 * TINY.depth  # (a, b) x (query, value) x blocks
    assert all("/query/" in n or "/value/" in n for n in lora_names)
    groups = lora_param_groups("", 1e-2)
    opt = make_optimizer(groups, {"lr": 1e-2}, clip_norm=None, total_steps=10)

    @jax.jit   # one program: op by op, eager JAX would compile each update op apart
    def one_step(params):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = opt.update(grads, opt.init(params), params)
        return optax.apply_updates(params, updates)

    new = one_step(params)
    for (path, old), newv in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(new)):
        changed = not np.array_equal(np.asarray(old), np.asarray(newv))
        assert changed == is_lora_path(path_to_str(path)), path_to_str(path)


def test_merge_adapters_folds_them_into_the_kernels_and_keeps_the_function():
    from jaxaudio.nn.lora import merge_adapters

    model = tiny_model(lora_rank=4, lora_alpha=2.0)
    for i, blk in enumerate(model.blocks):
        for lin in (blk.attention.query, blk.attention.key, blk.attention.value, blk.attention.out,
                    blk.mlp.fc_in, blk.mlp.fc_out):
            lin.lora_b[...] = 0.1 * jax.random.normal(key(40 + i), lin.lora_b.shape)
    x = mel()
    before = np.asarray(final(model, x))
    expected_kernel = np.asarray(model.blocks[0].attention.query.merged_kernel())
    assert merge_adapters(model) == 6 * TINY.depth
    np.testing.assert_allclose(np.asarray(final(model, x)), before, atol=1e-4)
    np.testing.assert_allclose(np.asarray(model.blocks[0].attention.query.kernel[...]), expected_kernel, rtol=1e-6)
    assert all(not np.any(np.asarray(blk.attention.query.lora_b[...])) for blk in model.blocks)
    # a base model with the merged kernels computes the same: the adapters are out of the picture
    np.testing.assert_allclose(np.asarray(final(base_copy(model), x)), before, atol=1e-4)
