"""AST weight import (``convert/ast.py``) against Hugging Face ``transformers``' ``ASTModel``.

The reference models are built from ``transformers.ASTConfig`` with random weights (seeded, no
download), copied through our converter, and compared on the same normalised-fbank input:
``last_hidden_state`` with our ``final`` and ``hidden_states[out_layer]`` (block ``out_layer``'s
output) with our ``tokens``, max abs difference <= 1e-4 in float32. Both naming schemes are
read: a transformers-5 ``state_dict()`` and the transformers-4 names that ``save_pretrained``
(and the Hub's files) keep. They need ``torch`` and ``transformers``: skipped without them on a
developer's machine, failed under ``CI`` (``require_reference``).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.ast import ast_to_nnx, load_ast
from jaxaudio.errors import CheckpointError
from jaxaudio.nn.ast import AST_BASE, ASTConfig, ASTEncoder

# 128 mel x 200 frames -> 12 x 19 patches; 3 blocks exercise every mapping, out_layer 2 an inner one.
SMALL_HF = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                num_mel_bins=128, max_length=200, frequency_stride=10, time_stride=10)
SMALL = ASTConfig(max_frames=200, dim=64, depth=3, num_heads=4, mlp_ratio=2.0, out_layer=2)
ATOL = 1e-4


@pytest.fixture(scope="module")
def hf(require_reference):
    require_reference("torch")
    return require_reference("transformers")


def hf_model(hf, kind="ASTModel", seed=0, **config):
    """An eval-mode model with every tensor drawn here (HF's own init is skipped: built on the meta
    device): N(0, 0.02) weights and biases, 1 + N(0, 0.02) norm scales, and N(0, 0.5) tokens and
    positions, so that neither a zero nor a small embedding can hide a mix-up of the token order."""
    import torch

    with torch.device("meta"):
        model = getattr(hf, kind)(hf.ASTConfig(**{**SMALL_HF, **config}))
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            big = leaf in ("cls_token", "distillation_token", "position_embeddings")
            p.normal_(0.0, 0.5 if big else 0.02, generator=gen)
            if "layernorm" in name and leaf == "weight":
                p.add_(1.0)
    assert not list(model.buffers())
    return model.eval()


def fbank(frames, batch=2, seed=3):
    return np.random.default_rng(seed).standard_normal((batch, frames, 128)).astype(np.float32)


def hf_outputs(model, x, layer):
    """``hidden_states[layer]`` (block ``layer``'s output), ``last_hidden_state`` and the SED grid
    built with HF's own final LayerNorm."""
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(x), output_hidden_states=True)
        grid = model.layernorm(out.hidden_states[layer])[:, 2:].numpy()
    return out.hidden_states[layer].numpy(), out.last_hidden_state.numpy(), grid


def ours(model, x):
    return {k: np.asarray(v) for k, v in model(jnp.asarray(x), train=False).items()}


def fresh(cfg):
    return ASTEncoder(cfg, rngs=nnx.Rngs(1))


def assert_parity(got, ref, what):
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    err = float(np.abs(got - ref).max())
    print(f"{what}: max |diff| {err:.2e} (max |ref| {np.abs(ref).max():.3f})")
    assert err <= ATOL, f"{what}: max abs diff {err:.3g}"


def assert_model_parity(model, torch_model, x, layer, label):
    ref_layer, ref_final, ref_grid = hf_outputs(torch_model, x, layer)
    got = ours(model, x)
    assert_parity(got["tokens"], ref_layer, f"{label} hidden_states[{layer}]")
    assert_parity(got["final"], ref_final, f"{label} last_hidden_state")
    batch, _, dim = ref_grid.shape
    assert_parity(got["patch_grid"], ref_grid.reshape(batch, 12, -1, dim), f"{label} patch grid")


@pytest.fixture(scope="module")
def small(hf):
    model = hf_model(hf)
    return model, {k: v.numpy() for k, v in model.state_dict().items()}


def test_small_ast_matches_transformers(small):
    torch_model, state = small
    # the installed version's names (transformers 5: layers.N.attention.q_proj ...), no prefix
    assert_model_parity(ast_to_nnx(state, fresh(SMALL)), torch_model, fbank(200), SMALL.out_layer, "small")


def test_classifier_files_with_either_naming_load(hf, tmp_path):
    """``save_pretrained``'s safetensors (transformers-4 names, as on the Hub) and a ``torch.save``d
    state dict (the installed version's names), both under ``audio_spectrogram_transformer.`` with a head."""
    import torch
    from safetensors.numpy import load_file

    classifier = hf_model(hf, "ASTForAudioClassification", seed=5, num_labels=7)
    classifier.save_pretrained(tmp_path)
    hub = tmp_path / "model.safetensors"
    assert "audio_spectrogram_transformer.encoder.layer.0.attention.attention.query.weight" in load_file(hub)
    pt = tmp_path / "ast.pt"
    torch.save(classifier.state_dict(), pt)
    for path in (hub, pt):
        assert_model_parity(load_ast(path, SMALL), classifier.audio_spectrogram_transformer, fbank(200, seed=4),
                            SMALL.out_layer, path.suffix)


def test_full_ast_base_matches_transformers(hf):
    """AST_BASE (transformers' ASTConfig defaults, the AudioSet AST's config) at 1024 frames:
    12 x 101 patches, 768-d, 12 blocks; layer 10 and the last."""
    base = hf.ASTConfig()
    assert (AST_BASE.dim, AST_BASE.depth, AST_BASE.num_heads, int(AST_BASE.dim * AST_BASE.mlp_ratio),
            AST_BASE.n_mels, AST_BASE.max_frames, AST_BASE.patch_size, AST_BASE.freq_stride, AST_BASE.time_stride,
            AST_BASE.norm_eps, AST_BASE.qkv_bias) == (
        base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size,
        base.num_mel_bins, base.max_length, base.patch_size, base.frequency_stride, base.time_stride,
        base.layer_norm_eps, base.qkv_bias)
    torch_model = hf_model(hf, **{k: getattr(base, k) for k in SMALL_HF})
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    model = ast_to_nnx(state, nnx.eval_shape(lambda: fresh(AST_BASE)))
    x = fbank(1024, batch=1)
    graphdef, params = nnx.split(model)
    forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x, train=False))
    # tests/conftest.py sets XLA's backend to -O0 (compile-bound tests); this forward is run-bound (3x slower there)
    compiled = forward.lower(params, x).compile(compiler_options={"xla_backend_optimization_level": 2})
    got = {k: np.asarray(v) for k, v in compiled(params, x).items()}
    ref_layer, ref_final, _ = hf_outputs(torch_model, x, 10)
    assert got["patch_grid"].shape == (1, 12, 101, 768)
    assert_parity(got["tokens"], ref_layer, "AST_BASE hidden_states[10]")
    assert_parity(got["final"], ref_final, "AST_BASE last_hidden_state")


def hand_resized(pos, n_freq, n_time):
    """Linear interpolation along time of each frequency row, sample ``(t + 0.5) T0 / T - 0.5``
    clamped to ``[0, T0 - 1]`` (PyTorch's ``align_corners=False``), written out per column."""
    grid = pos[0, 2:].reshape(n_freq, -1, pos.shape[-1])
    old = grid.shape[1]
    cols = []
    for t in range(n_time):
        src = min(max((t + 0.5) * old / n_time - 0.5, 0.0), old - 1)
        lo = int(np.floor(src))
        hi, w = min(lo + 1, old - 1), src - lo
        cols.append((1 - w) * grid[:, lo] + w * grid[:, hi])
    return np.concatenate([pos[0, :2], np.stack(cols, axis=1).reshape(-1, pos.shape[-1])])[None]


def test_longer_max_frames_interpolates_the_time_positions(hf, small):
    """19 -> 29 time columns: the hand computation, torch's bilinear resize, and a transformers
    model built for 300 frames with those positions."""
    import torch

    torch_model, state = small
    cfg = dataclasses.replace(SMALL, max_frames=300)
    assert cfg.time_patches == 29
    model = ast_to_nnx(state, fresh(cfg))
    pos = state["embeddings.position_embeddings"]
    got = np.asarray(model.position_embeddings[...])
    np.testing.assert_allclose(got, hand_resized(pos, 12, 29), rtol=0, atol=1e-6)
    grid = torch.from_numpy(pos[:, 2:]).reshape(1, 12, 19, -1).permute(0, 3, 1, 2)
    bilinear = torch.nn.functional.interpolate(grid, size=(12, 29), mode="bilinear", align_corners=False)
    bilinear = bilinear.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1]).numpy()
    np.testing.assert_allclose(got[:, 2:], bilinear, rtol=0, atol=1e-5)  # torch's float32 weights

    longer = hf_model(hf, max_length=300)
    longer.load_state_dict({**torch_model.state_dict(), "embeddings.position_embeddings": torch.from_numpy(got)})
    assert_model_parity(model, longer, fbank(300), SMALL.out_layer, "300 frames")


def test_shorter_max_frames_keeps_the_first_time_columns(small):
    """19 -> 11 columns: the grid cut in time, so the converted model equals the full one fed 120 frames."""
    _, state = small
    cfg = dataclasses.replace(SMALL, max_frames=120)
    short = ast_to_nnx(state, fresh(cfg))
    pos = state["embeddings.position_embeddings"]
    want = np.concatenate([pos[:, :2], pos[:, 2:].reshape(1, 12, 19, -1)[:, :, :11].reshape(1, 132, -1)], axis=1)
    np.testing.assert_array_equal(np.asarray(short.position_embeddings[...]), want)
    x = fbank(120)
    full = ours(ast_to_nnx(state, fresh(SMALL)), x)
    for key, value in ours(short, x).items():
        np.testing.assert_allclose(value, full[key], rtol=0, atol=1e-6)


def test_missing_unexpected_and_misshapen_tensors_name_the_file_and_tensor(small):
    _, state = small
    missing = {k: v for k, v in state.items() if k != "layers.1.mlp.fc1.bias"}
    with pytest.raises(CheckpointError, match=r"ast\.safetensors: 1 tensors .* layers\.1\.mlp\.fc1\.bias"):
        ast_to_nnx(missing, fresh(SMALL), source="ast.safetensors")
    with pytest.raises(CheckpointError, match=r"ast\.pt: .* layers\.2\.attention\.q_proj"):
        ast_to_nnx(state, fresh(dataclasses.replace(SMALL, depth=2, out_layer=1)), source="ast.pt")
    with pytest.raises(CheckpointError, match=r"ast\.pt: 1 checkpoint tensors .* extra\.weight"):
        ast_to_nnx({**state, "extra.weight": np.zeros(3)}, fresh(SMALL), source="ast.pt")
    with pytest.raises(CheckpointError, match=r"ast\.pt: layers\.0\.mlp\.fc1\.bias has shape \(128,\); "
                                              r"blocks\.0\.mlp\.fc_in\.bias needs"):
        ast_to_nnx(state, fresh(dataclasses.replace(SMALL, mlp_ratio=4.0)), source="ast.pt")
    with pytest.raises(CheckpointError, match=r"ast\.pt: embeddings\.position_embeddings has shape \(1, 229, 64\)"):
        ast_to_nnx({**state, "embeddings.position_embeddings": np.zeros((1, 229, 64), np.float32)}, fresh(SMALL),
                   source="ast.pt")
    head = {**{"audio_spectrogram_transformer." + k: v for k, v in state.items()},
            "classifier.dense.weight": np.zeros((7, 64), np.float32)}
    ast_to_nnx(head, fresh(SMALL))  # the head is dropped, not an error
