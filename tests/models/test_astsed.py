"""AST-SED and AST-GRU (``models/astsed.py``) against a PyTorch reference built in this file.

The reference follows the authors' ``AST_SED.forward`` (Transformer4SED ``src/models/ast/
ast_models.py``) line by line with library modules: Hugging Face ``ASTModel`` for the encoder
(``hidden_states[10]``), timm ``Block(dim, 4, qkv_bias=False)`` for the FTE, ``nn.GRU`` and
``F.interpolate`` (nearest) for the LGD, all with random weights, copied into ours through
``convert/ast.py`` and ``convert/astsed.py``. Under ``CI`` a missing reference fails the test.
The sliding-window inference is checked against a loop that follows ``ASTWithSlide.forward``.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.ast import ast_to_nnx
from jaxaudio.convert.astsed import astsed_head_from_torch
from jaxaudio.errors import CheckpointError, ConfigError
from jaxaudio.models.astsed import AST_GRU, PAPER, ASTSED, ASTSEDConfig
from jaxaudio.nn.ast import ASTConfig
from jaxaudio.nn.global_local import GlobalLocal

# 128 mel x 96 frames -> 12 x 9 patches; 3 blocks read at 2; FTE 2 blocks of 4 heads; GRU 2 x 16.
HF = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
          num_mel_bins=128, max_length=96, frequency_stride=10, time_stride=10)
SMALL = ASTSEDConfig(ast=ASTConfig(max_frames=96, dim=32, depth=3, num_heads=4, mlp_ratio=2.0, out_layer=2),
                     fte_mlp_ratio=4.0, gru_hidden=16, n_classes=5, pred_len=88)
ATOL = 1e-4


def key(seed):
    return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def torch_refs(require_reference):
    torch = require_reference("torch")
    return torch, require_reference("transformers"), require_reference("timm")


class ReferenceHead:
    """``AST_SED``'s modules after the encoder, under the authors' attribute names."""

    def __init__(self, torch, timm, cfg: ASTSEDConfig):
        from timm.models.vision_transformer import Block

        nn, dim = torch.nn, cfg.ast.dim
        torch.manual_seed(7)
        self.modules = nn.ModuleDict({
            "out_norm": nn.LayerNorm(dim),
            "linear_emb": nn.Linear(1, dim),
            "frequency_transformer": nn.ModuleList(
                Block(dim=dim, num_heads=cfg.fte_heads, mlp_ratio=cfg.fte_mlp_ratio, qkv_bias=False,
                      norm_layer=nn.LayerNorm) for _ in range(cfg.fte_depth)),
            "frequency_transformer_norm": nn.LayerNorm(dim),
            "GRU": nn.GRU(dim, cfg.gru_hidden, bidirectional=True, batch_first=True, num_layers=cfg.gru_layers),
            "classifier": nn.Linear(2 * cfg.gru_hidden, cfg.n_classes),
        }).eval()
        with torch.no_grad():   # norms away from (1, 0), so a mix-up of scale and shift shows
            for name, p in self.modules.named_parameters():
                if "norm" in name:
                    p.add_(0.3 * torch.randn_like(p))

    def state_dict(self):
        return {k: v.numpy() for k, v in self.modules.state_dict().items()}

    def forward(self, torch, layer_out, cfg: ASTSEDConfig, n_freq: int):
        """``AST_SED.forward`` from ``layer{k}_out`` (as (B, P, C)) on, in the reference's order."""
        F, m = torch.nn.functional, self.modules
        x = m["out_norm"](layer_out)
        b, _, c = x.shape
        grid = x[:, 2:, :].reshape(b, n_freq, -1, c)
        t = grid.shape[2]
        if cfg.freq_pool == "fte":
            rows = grid.transpose(1, 2).reshape(b * t, n_freq, c)
            tag = m["linear_emb"](torch.ones(rows.size(0), 1, 1))
            rows = torch.cat([tag, rows], dim=1)
            for block in m["frequency_transformer"]:
                rows = block(rows)
            frames = m["frequency_transformer_norm"](rows)[:, 0, :].reshape(b, t, c)
        else:
            frames = grid.mean(dim=1)
        if cfg.decoder == "lgd":
            frames = F.interpolate(frames.transpose(1, 2), scale_factor=cfg.upsample).transpose(1, 2)
            logits = m["classifier"](m["GRU"](frames)[0])
        else:
            logits = m["classifier"](m["GRU"](frames)[0])
            logits = F.interpolate(logits.transpose(1, 2), scale_factor=cfg.upsample).transpose(1, 2)
        strong = torch.sigmoid(logits)[:, :cfg.pred_len]
        weak = torch.clamp((strong * strong).sum(dim=1) / strong.sum(dim=1), 1e-7, 1.0)
        return strong.numpy(), weak.numpy()


def hf_encoder(transformers, torch):
    torch.manual_seed(3)
    model = transformers.ASTModel(transformers.ASTConfig(**HF)).eval()
    with torch.no_grad():   # larger tokens and positions than HF's init, so an order mix-up shows
        for name, p in model.named_parameters():
            if name.endswith(("cls_token", "distillation_token", "position_embeddings")):
                p.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("variant", ["fte_lgd", "mean_gru"])
def test_matches_the_authors_forward(torch_refs, variant):
    torch, transformers, timm = torch_refs
    cfg = SMALL if variant == "fte_lgd" else dataclasses.replace(SMALL, freq_pool="mean", decoder="gru")
    encoder = hf_encoder(transformers, torch)
    head = ReferenceHead(torch, timm, cfg)
    x = np.random.default_rng(0).standard_normal((2, 96, 128)).astype(np.float32)
    with torch.inference_mode():
        layer_out = encoder(torch.from_numpy(x), output_hidden_states=True).hidden_states[cfg.ast.out_layer]
        want_strong, want_weak = head.forward(torch, layer_out, cfg, n_freq=cfg.ast.freq_patches)

    model = ASTSED(cfg, rngs=nnx.Rngs(key(0)))
    ast_to_nnx({k: v.numpy() for k, v in encoder.state_dict().items()}, model.encoder)
    astsed_head_from_torch(head.state_dict(), model)
    out = nnx.jit(lambda m, x: m.sed_forward(x, train=False))(model, jnp.asarray(x))
    assert out["strong"].shape == (2, cfg.pred_len, cfg.n_classes)
    np.testing.assert_allclose(np.asarray(out["strong"]), want_strong, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out["weak"]), want_weak, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(out["weak_at"]), np.asarray(out["weak"]))


def test_head_import_names_what_is_wrong(torch_refs):
    torch, _, timm = torch_refs
    state = ReferenceHead(torch, timm, SMALL).state_dict()
    model = ASTSED(SMALL, rngs=nnx.Rngs(key(0)))
    broken = {k: v for k, v in state.items() if k != "GRU.weight_hh_l1_reverse"}
    with pytest.raises(CheckpointError, match="weight_hh_l1_reverse"):
        astsed_head_from_torch(broken, model, source="ast_sed.pt")
    extra = dict(state, **{"GRU.weight_ih_l2": state["GRU.weight_ih_l1"]})
    with pytest.raises(CheckpointError, match="GRU.weight_ih_l2"):
        astsed_head_from_torch(extra, model, source="ast_sed.pt")
    wrong = dict(state, **{"classifier.weight": np.zeros((3, 2 * SMALL.gru_hidden), np.float32)})
    with pytest.raises(CheckpointError, match="ast_sed.pt: classifier.weight"):
        astsed_head_from_torch(wrong, model, source="ast_sed.pt")


def test_sliding_window_inference_follows_the_reference_loop():
    """``ASTWithSlide.forward``: windows over the padded input, each encoded alone, overlap-averaged
    at round(start * T' / frames), then decoded once; written here as the reference's loop."""
    cfg = dataclasses.replace(SMALL, ast=dataclasses.replace(SMALL.ast, depth=2, out_layer=2))
    model = ASTSED(cfg, rngs=nnx.Rngs(key(1)))
    x = jax.random.normal(key(2), (2, 90, 128))   # padded inside to 96 frames
    window, step = 36, 14   # the last window is cut at the end (26 frames, 2 patches)

    @nnx.jit
    def both(model, x):
        slid = model.sed_forward(x, train=False, sliding=GlobalLocal(window, step, 1.0))
        padded = model.pad(x)
        starts = range(0, padded.shape[1] + step - window, step)
        return slid, [model.frames(padded[:, s:min(s + window, padded.shape[1])], train=False) for s in starts]

    slid, per_window = both(model, x)
    total, n_time = 96, cfg.ast.time_patches
    scale = n_time / total
    embedding, count = np.zeros((2, n_time, cfg.ast.dim)), np.zeros((1, n_time, 1))
    for s, enc in zip(range(0, total + step - window, step), per_window):
        left = round(s * scale)
        right = int(min(n_time, left + enc.shape[1]))
        embedding[:, left:right] += np.asarray(enc)[:, :right - left]
        count[:, left:right] += 1
    want = nnx.jit(lambda m, e: m.decode(e, train=False))(model, jnp.asarray(embedding / count, jnp.float32))
    np.testing.assert_allclose(np.asarray(slid["strong"]), np.asarray(jax.nn.sigmoid(want)), atol=1e-5, rtol=0)


def test_paper_sizes_and_errors():
    assert (PAPER.ast.out_layer, PAPER.ast.freq_patches, PAPER.ast.time_patches) == (10, 12, 101)
    assert (PAPER.fte_depth, PAPER.fte_heads, PAPER.fte_mlp_ratio) == (2, 4, 4.0)
    assert (PAPER.gru_hidden, PAPER.gru_layers, PAPER.upsample, PAPER.pred_len) == (768, 2, 10, 1000)
    assert (AST_GRU.freq_pool, AST_GRU.decoder) == ("mean", "gru")
    np.testing.assert_allclose(PAPER.pad_value, (0 + 4.2677393) / (2 * 4.5689974))
    with pytest.raises(ConfigError, match="freq_pool"):
        ASTSEDConfig(freq_pool="attention")
    with pytest.raises(ConfigError, match="pred_len"):
        dataclasses.replace(SMALL, pred_len=100)   # 9 patches x 10 frames
    model = nnx.eval_shape(lambda: ASTSED(SMALL, rngs=nnx.Rngs(key(0))))
    with pytest.raises(ConfigError, match="at most ast.max_frames=96"):
        model.pad(jnp.zeros((1, 97, 128)))
