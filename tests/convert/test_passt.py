"""PaSST weight import: safe checkpoint reading, name/layout mapping, parity with hear21passt.

The parity tests build ``hear21passt``'s PaSST with random weights (no download: pretrained is
off and timm's downloader is replaced by a stub that raises), copy them through our converter
and compare token outputs. They need the optional torch stack (``torch`` + ``hear21passt``,
see the ``convert`` extra) and are skipped without it; the mapping / error tests run anyway.
"""
import contextlib
import dataclasses
import importlib
import io
import logging
import os
import sys
import types

import jax
import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.passt import load_passt, passt_to_nnx, resize_time_positions
from jaxaudio.convert.torch_io import load_torch_state_dict
from jaxaudio.errors import CheckpointError
from jaxaudio.nn.vit import PASST_S, ViT, ViTConfig

# n_mels=128 and frames with frames % 10 >= 6 keep hear21passt's grid (size // stride) equal to the
# conv's ((size - 16) // 10 + 1), as for PaSST-S's 128 x 998. Depth 2 still exercises every mapping.
SMALL = ViTConfig(n_mels=128, max_frames=206, dim=48, depth=2, num_heads=4, mlp_ratio=2.0, out_layer=1)


# ----------------------------------------------------------------------------- torch reference


def _require(name: str):
    """Import a reference library: skip without it on a developer's machine, but fail in CI
    (``CI`` set), where ``.ci/run`` installs it and a parity test must never skip."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


def _no_download(*args, **kwargs):
    raise RuntimeError("test tried to download weights")


@pytest.fixture(scope="module")
def passt_module():
    """``hear21passt.models.passt``, imported with a stub for timm's downloader if timm is absent.

    hear21passt imports timm only for ``download_cached_file``; timm itself imports torchvision,
    which has no wheel matching the CPU torch. The stub raises, so no test can reach the network.
    """
    _require("torch")
    _require("hear21passt")
    saved = {k: v for k, v in sys.modules.items() if k == "timm" or k.startswith("timm.")}
    stubs = {}
    try:
        from timm.models._hub import download_cached_file  # noqa: F401
    except ImportError:
        for k in saved:
            sys.modules.pop(k)
        for name in ("timm", "timm.models", "timm.models._hub"):
            stubs[name] = types.ModuleType(name)
        stubs["timm.models._hub"].download_cached_file = _no_download
        sys.modules.update(stubs)
    try:
        import hear21passt.models.passt as module
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return module


def randomize(model, seed):
    """The constructor's own init (timm: trunc-normal 0.02 linears, zero biases, unit norms) plus
    N(0, 0.02) on every parameter, so zero biases and unit scales cannot hide a mix-up."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)


def torch_outputs(model, mel, layer):
    """Block ``layer`` output (1-based, before the final norm) and the final normed tokens."""
    import torch

    seen = {}
    hooks = [model.blocks[layer - 1].register_forward_hook(lambda m, i, o: seen.__setitem__("layer", o)),
             model.norm.register_forward_hook(lambda m, i, o: seen.__setitem__("final", o))]
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # hear21passt prints shapes
            model(torch.from_numpy(mel[:, None]))
    finally:
        for h in hooks:
            h.remove()
    return seen["layer"].numpy(), seen["final"].numpy()


def small_torch_passt(module, frames, seed=0):
    import torch

    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model = module.PaSST(img_size=(128, frames), patch_size=16, stride=10, in_chans=1, num_classes=7,
                             embed_dim=SMALL.dim, depth=SMALL.depth, num_heads=SMALL.num_heads,
                             mlp_ratio=SMALL.mlp_ratio, distilled=True)
    randomize(model, seed)
    return model.eval()


def ours(state_dict, cfg, mel, layer):
    model = ViT(cfg, rngs=nnx.Rngs(1))
    nnx.update(model, passt_to_nnx(state_dict, cfg))
    out = model(jax.numpy.asarray(np.swapaxes(mel, 1, 2)), train=False, return_layer=layer)
    return np.asarray(out["tokens"]), np.asarray(out["final"])


def mel_input(frames, seed=3):
    return np.random.default_rng(seed).standard_normal((1, 128, frames)).astype(np.float32)


def assert_parity(torch_model, cfg, mel, layer):
    ref_layer, ref_final = torch_outputs(torch_model, mel, layer)
    got_layer, got_final = ours(torch_model.state_dict(), cfg, mel, layer)
    assert got_layer.shape == ref_layer.shape and got_final.shape == ref_final.shape
    print(f"layer {layer}: max|diff| {np.abs(got_layer - ref_layer).max():.2e} "
          f"(max|ref| {np.abs(ref_layer).max():.4f}); "
          f"final: max|diff| {np.abs(got_final - ref_final).max():.2e} (max|ref| {np.abs(ref_final).max():.4f})")
    np.testing.assert_allclose(got_layer, ref_layer, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_final, ref_final, atol=1e-4, rtol=0)


def test_small_passt_matches_hear21passt(passt_module):
    model = small_torch_passt(passt_module, SMALL.max_frames)
    assert_parity(model, SMALL, mel_input(SMALL.max_frames), layer=1)


def test_short_clip_cuts_time_positions_as_reference(passt_module):
    """Reference fed 306 frames uses its first 30 time positions; we convert to a 306-frame ViT."""
    model = small_torch_passt(passt_module, frames=998, seed=4)
    cfg = dataclasses.replace(SMALL, max_frames=306)
    assert cfg.time_patches == 30
    assert_parity(model, cfg, mel_input(306), layer=2)


def test_load_passt_from_a_wrapped_file(passt_module, tmp_path):
    """A DDP-style file ({'model': {'module.' + name: tensor}}) read safely, then the same tokens."""
    import torch

    model = small_torch_passt(passt_module, SMALL.max_frames, seed=7)
    path = tmp_path / "passt.pt"
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 1}, path)
    vit = load_passt(path, SMALL)
    mel = mel_input(SMALL.max_frames)
    _, ref_final = torch_outputs(model, mel, layer=1)
    got = np.asarray(vit(jax.numpy.asarray(np.swapaxes(mel, 1, 2)), train=False)["final"])
    np.testing.assert_allclose(got, ref_final, atol=1e-4, rtol=0)


def test_full_passt_s_matches_hear21passt(passt_module):
    """The real PaSST-S constructor (random weights, no download); layer-10 and final tokens."""
    import torch

    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        model = passt_module.get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False, n_classes=527,
                                       in_channels=1, fstride=10, tstride=10, input_fdim=128, input_tdim=998)
    randomize(model, 0)
    assert_parity(model.eval(), PASST_S, mel_input(998), layer=10)


def test_time_interpolation_matches_torch():
    torch = _require("torch")
    embed = np.random.default_rng(0).standard_normal((1, 5, 1, 7)).astype(np.float32)
    for length in (7, 13, 20):
        ref = torch.nn.functional.interpolate(torch.from_numpy(embed), size=(1, length), mode="bilinear",
                                              align_corners=False).numpy()
        np.testing.assert_allclose(resize_time_positions(embed, length), ref, atol=1e-6)
    np.testing.assert_array_equal(resize_time_positions(embed, 4), embed[..., :4])


# ----------------------------------------------------------------------------- mapping without torch


def numpy_passt_state(cfg, seed=0, lora=None):
    """A hear21passt-shaped state dict of random numpy arrays (names and shapes only)."""
    rng = np.random.default_rng(seed)
    d, hidden, p = cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.patch_size
    shapes = {"patch_embed.proj.weight": (d, 1, p, p), "patch_embed.proj.bias": (d,), "cls_token": (1, 1, d),
              "dist_token": (1, 1, d), "new_pos_embed": (1, 2, d), "freq_new_pos_embed": (1, d, cfg.freq_patches, 1),
              "time_new_pos_embed": (1, d, 1, cfg.time_patches), "norm.weight": (d,), "norm.bias": (d,),
              "head.0.weight": (d,), "head.1.weight": (5, d), "head_dist.weight": (5, d)}
    for n in range(cfg.depth):
        b = f"blocks.{n}."
        shapes.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "norm2.weight": (d,),
                       b + "norm2.bias": (d,), b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
                       b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                       b + "mlp.fc1.weight": (hidden, d), b + "mlp.fc1.bias": (hidden,),
                       b + "mlp.fc2.weight": (d, hidden), b + "mlp.fc2.bias": (d,)})
        if lora:
            shapes.update({b + "attn.qkv.lora_A": (lora, d), b + "attn.qkv.lora_B": (3 * d, lora)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def flat(state):
    return {"/".join(map(str, path)): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
            for path, v in nnx.to_flat_state(state)}


def test_layouts_follow_the_mapping_table():
    sd = numpy_passt_state(SMALL)
    got = flat(passt_to_nnx(sd, SMALL))
    d = SMALL.dim
    np.testing.assert_array_equal(got["patch_embed/proj/kernel"][3, 5, 0], sd["patch_embed.proj.weight"][:, 0, 3, 5])
    np.testing.assert_array_equal(got["freq_pos_embed"][0, 4, 0], sd["freq_new_pos_embed"][0, :, 4, 0])
    np.testing.assert_array_equal(got["time_pos_embed"][0, 0, 9], sd["time_new_pos_embed"][0, :, 0, 9])
    np.testing.assert_array_equal(got["blocks/1/attention/key/kernel"], sd["blocks.1.attn.qkv.weight"][d:2 * d].T)
    np.testing.assert_array_equal(got["blocks/1/attention/value/bias"], sd["blocks.1.attn.qkv.bias"][2 * d:])
    np.testing.assert_array_equal(got["blocks/0/mlp/fc_out/kernel"], sd["blocks.0.mlp.fc2.weight"].T)
    np.testing.assert_array_equal(got["norm/scale"], sd["norm.weight"])
    assert not any(k.startswith("head") for k in got)


def test_unexpected_and_missing_entries_are_errors_unless_not_strict(caplog):
    sd = numpy_passt_state(SMALL)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*unexpected entries \['blocks\.0\.attn\.extra'\]"):
        passt_to_nnx({**sd, "blocks.0.attn.extra": np.zeros(3)}, SMALL, source="ckpt.pt")
    del sd["blocks.1.mlp.fc1.bias"]
    with pytest.raises(CheckpointError, match="blocks/1/mlp/fc_in/bias"):
        passt_to_nnx(sd, SMALL)
    with caplog.at_level(logging.WARNING):
        state = passt_to_nnx(sd, SMALL, strict=False)
    assert "blocks/1/mlp/fc_in/bias" in caplog.text
    assert "blocks/1/mlp/fc_in/bias" not in flat(state) and "blocks/1/mlp/fc_in/kernel" in flat(state)


def test_wrong_shape_names_the_entry():
    sd = numpy_passt_state(SMALL)
    sd["freq_new_pos_embed"] = np.zeros((1, SMALL.dim, 6, 1), np.float32)
    with pytest.raises(CheckpointError, match="freq_new_pos_embed has shape"):
        passt_to_nnx(sd, SMALL)
    with pytest.raises(CheckpointError, match="3 blocks"):
        passt_to_nnx(numpy_passt_state(dataclasses.replace(SMALL, depth=3)), SMALL)


def test_prefix_selects_the_encoder_of_a_larger_checkpoint():
    sd = numpy_passt_state(SMALL)
    wrapped = {**{"encoder." + k: v for k, v in sd.items()}, "decoder.weight": np.zeros(2)}
    a, b = flat(passt_to_nnx(wrapped, SMALL, prefix="encoder.")), flat(passt_to_nnx(sd, SMALL))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_fused_qkv_lora_gives_the_same_weight_delta():
    """loralib: delta W (out, in) = B A; ours: delta kernel (in, out) = lora_a lora_b."""
    cfg = dataclasses.replace(SMALL, lora_rank=3)
    sd = numpy_passt_state(cfg, lora=3)
    got = flat(passt_to_nnx(sd, cfg))
    d = cfg.dim
    delta = sd["blocks.0.attn.qkv.lora_B"] @ sd["blocks.0.attn.qkv.lora_A"]  # (3d, d)
    for i, name in enumerate(("query", "key", "value")):
        ours_delta = got[f"blocks/0/attention/{name}/lora_a"] @ got[f"blocks/0/attention/{name}/lora_b"]
        np.testing.assert_allclose(ours_delta, delta[i * d:(i + 1) * d].T, rtol=1e-5, atol=1e-5)
    # adapters absent from the checkpoint (proj, fc1, fc2) are not an error: they start fresh
    assert "blocks/0/attention/out/lora_a" not in got


# ----------------------------------------------------------------------------- safe file reading


def test_load_unwraps_containers_and_prefixes(tmp_path):
    torch = _require("torch")
    weights = {"module.a.weight": torch.arange(6.0).reshape(2, 3), "module.b": torch.ones(2, dtype=torch.bfloat16)}
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": weights, "epoch": 3}, path)
    got = load_torch_state_dict(path)
    assert sorted(got) == ["a.weight", "b"]
    np.testing.assert_array_equal(got["a.weight"], np.arange(6.0).reshape(2, 3))
    assert got["b"].dtype == np.float32


class _Payload:
    """Unpickling this would run ``_mark`` (code execution); weights_only must refuse it."""

    def __reduce__(self):
        return (_mark, ())


_MARKS = []


def _mark():
    _MARKS.append(1)
    return {}


def test_load_never_runs_pickled_code_and_names_bad_files(tmp_path):
    torch = _require("torch")
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="evil.pt.*weights_only"):
        load_torch_state_dict(evil)
    assert _MARKS == []
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip or a pickle")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_torch_state_dict(corrupt)
    with pytest.raises(CheckpointError, match="missing.pt: no such checkpoint file"):
        load_torch_state_dict(tmp_path / "missing.pt")
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(CheckpointError, match="list.pt: holds a list"):
        load_torch_state_dict(listing)
