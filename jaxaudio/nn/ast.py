"""AST (Audio Spectrogram Transformer, Gong et al. 2021) encoder on the ViT blocks of ``nn/vit.py``.

AST-SED (papers.md §4) reads AST's layer-10 tokens, LayerNormed, without the cls/dist tokens.
AST differs from PaSST (``nn/vit.py``) in its positions and nothing else the encoder needs:
one learned embedding ``position_embeddings (1, 2 + F*T, dim)`` over ``[cls, dist, patches]``
(Hugging Face ``ASTEmbeddings``) instead of separate frequency / time tables, and no patchout.
The three root parameters keep Hugging Face's names (``cls_token``, ``distillation_token``,
``position_embeddings``) so that ``jaxaudio/convert/ast.py`` maps every tensor by module path.

Shapes. Input: normalised fbank ``(batch, frames, n_mels)`` (``jaxaudio.audio.ast_frontend``).
The patch conv (``nn/vit.py``'s ``PatchEmbed``: 16x16, strides ``(freq_stride, time_stride)``,
VALID) runs over the ``(n_mels, frames)`` image: ``F = (n_mels-16)//10 + 1`` (128 -> 12),
``T' = (frames-16)//10 + 1`` (1024 -> 101). Tokens are flattened **frequency-major**, index
``f*T' + t`` after ``[cls, dist]``, as Hugging Face's ``Conv2d`` over ``(B, 1, F, T)`` then
``flatten(2)``; so ``tokens[:, 2:]`` reshapes to ``(batch, F, T', dim)``.

Shorter inputs (``T' < T``, the checkpoint's ``max_frames`` grid): patch ``(f, t)`` takes
``position_embeddings[2 + f*T + t]``, the first ``T'`` columns of each frequency row, i.e. the
grid cut in time. (Hugging Face accepts only ``max_frames``. Transformer4SED's
``get_mutable_pos_embedding`` slices rows ``f*T'..(f+1)*T'`` of the flat table, which are the
first ``F*T'`` entries, not a time cut, whenever ``T' < T``.) Longer inputs are an error: pad or
cut them first (``ast_frontend.pad_or_cut``) or convert with a larger ``max_frames``.

Outputs of ``ASTEncoder.__call__`` (a dict):
  ``tokens``      ``(batch, 2 + F*T', dim)``: output of block ``out_layer`` (1-based, before any
                  LayerNorm; Hugging Face ``hidden_states[out_layer]``; None = the last block).
  ``patch_grid``  ``(batch, F, T', dim)``: ``norm(tokens)`` with cls/dist dropped, the SED
                  features. ``norm`` is the encoder's final LayerNorm. (The authors' ``AST_SED``
                  instead applies a LayerNorm of its own, ``out_norm``, to ``layer10_out``; an SED
                  model that follows it should normalise ``tokens`` itself.)
  ``final``       ``(batch, 2 + F*T', dim)``: last block + final LayerNorm (Hugging Face
                  ``last_hidden_state``); absent with ``stop_at_layer=True``.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import as_rngs
from jaxaudio.nn.vit import NUM_PREFIX_TOKENS, PatchEmbed, ViTConfig, vit_block

_normal02 = nnx.initializers.normal(0.02)


@dataclasses.dataclass(frozen=True)
class ASTConfig:
    """Sizes of the AST encoder (defaults: the AudioSet AST, ``AST_BASE``).

    max_frames: frames the position grid is sized for (1024 -> 101 time patches).
    norm_eps: LayerNorm epsilon of every norm (Hugging Face ``layer_norm_eps``: 1e-12; timm's
      ViT, which PaSST uses, has 1e-6).
    dropout / attention_dropout: Hugging Face ``hidden_dropout_prob`` (also on the embedded
      tokens) / ``attention_probs_dropout_prob``.
    out_layer: 1-based block whose output ``tokens`` holds; None = the last block.
    """

    n_mels: int = 128
    max_frames: int = 1024
    patch_size: int = 16
    freq_stride: int = 10
    time_stride: int = 10
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-12
    dropout: float = 0.0
    attention_dropout: float = 0.0
    out_layer: int | None = None

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ConfigError(f"ast.dim={self.dim} is not divisible by ast.num_heads={self.num_heads}")
        if min(self.freq_stride, self.time_stride) < 1:
            raise ConfigError(f"ast.freq_stride={self.freq_stride}, ast.time_stride={self.time_stride}; expected >= 1")
        if min(self.n_mels, self.max_frames) < self.patch_size:
            raise ConfigError(f"ast.n_mels={self.n_mels} and ast.max_frames={self.max_frames} must be at least "
                              f"ast.patch_size={self.patch_size}")
        if self.out_layer is not None and not 1 <= self.out_layer <= self.depth:
            raise ConfigError(f"ast.out_layer={self.out_layer}; expected 1..{self.depth} or None")

    @functools.cached_property
    def vit(self) -> ViTConfig:
        """The same sizes as a ``ViTConfig``: what ``PatchEmbed``, ``vit_block`` and the grid sizes use."""
        return ViTConfig(n_mels=self.n_mels, max_frames=self.max_frames, patch_size=self.patch_size,
                         stride=self.freq_stride, time_stride=self.time_stride, dim=self.dim, depth=self.depth,
                         num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                         dropout=self.dropout, attention_dropout=self.attention_dropout, norm_eps=self.norm_eps)

    def patches(self, frames: int) -> int:
        """Time patches over ``frames`` frames (VALID conv)."""
        return self.vit.patches(frames)

    @property
    def freq_patches(self) -> int:
        return self.vit.freq_patches

    @property
    def time_patches(self) -> int:
        return self.vit.time_patches

    @property
    def num_positions(self) -> int:
        return NUM_PREFIX_TOKENS + self.freq_patches * self.time_patches


# Hugging Face MIT/ast-finetuned-audioset-10-10-0.4593 (transformers ASTConfig defaults: 128 mel x
# 1024 frames, 16x16 patches, strides 10, 768-d, 12 blocks of 12 heads, 3072 hidden, eps 1e-12);
# out_layer 10: AST-SED's layer10_out.
AST_BASE = ASTConfig(out_layer=10)
# Small enough for CPU tests: 64 mel x 200 frames -> 5 x 19 patches.
TINY = ASTConfig(n_mels=64, max_frames=200, dim=32, depth=3, num_heads=4, mlp_ratio=2.0, out_layer=2)


class ASTEncoder(nnx.Module):
    """AST: normalised fbank ``(batch, frames, n_mels)`` -> dict of token sequences (module doc)."""

    def __init__(self, cfg: ASTConfig = AST_BASE, *, rngs: nnx.Rngs):
        self.cfg = cfg
        vit = cfg.vit
        self.patch_embed = PatchEmbed(vit, rngs=rngs)
        self.cls_token = nnx.Param(_normal02(rngs.params(), (1, 1, cfg.dim)))
        self.distillation_token = nnx.Param(_normal02(rngs.params(), (1, 1, cfg.dim)))
        self.position_embeddings = nnx.Param(_normal02(rngs.params(), (1, cfg.num_positions, cfg.dim)))
        self.token_dropout = nnx.Dropout(cfg.dropout)
        self.blocks = nnx.List([vit_block(vit, rngs=rngs) for _ in range(cfg.depth)])
        self.norm = nnx.LayerNorm(cfg.dim, epsilon=cfg.norm_eps, rngs=rngs)

    def embed(self, fbank: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """Patches + positions after ``[cls, dist]``: ``(batch, 2 + F*T', dim)`` (module doc)."""
        cfg = self.cfg
        if fbank.ndim != 3 or fbank.shape[2] != cfg.n_mels:
            raise ConfigError(f"AST input has shape {fbank.shape}; expected (batch, frames, ast.n_mels={cfg.n_mels})")
        if not cfg.patch_size <= fbank.shape[1] <= cfg.max_frames:
            raise ConfigError(f"AST input has {fbank.shape[1]} frames; expected {cfg.patch_size}.."
                              f"ast.max_frames={cfg.max_frames} (pad or cut first)")
        grid = self.patch_embed(fbank)  # (batch, F, T', dim)
        batch, n_freq, n_time, dim = grid.shape
        pos = self.position_embeddings[...]
        prefix_pos, grid_pos = pos[:, :NUM_PREFIX_TOKENS], pos[:, NUM_PREFIX_TOKENS:]
        grid_pos = grid_pos.reshape(1, n_freq, cfg.time_patches, dim)[:, :, :n_time]  # first T' columns
        patches = (grid + grid_pos).reshape(batch, n_freq * n_time, dim)  # frequency-major: f*T' + t
        prefix = jnp.concatenate([self.cls_token[...], self.distillation_token[...]], axis=1) + prefix_pos
        tokens = jnp.concatenate([jnp.broadcast_to(prefix, (batch, NUM_PREFIX_TOKENS, dim)), patches], axis=1)
        return self.token_dropout(tokens, deterministic=not train, rngs=rngs)

    def __call__(self, fbank: jax.Array, *, train: bool, rngs=None, stop_at_layer: bool = False) -> dict:
        """See the module docstring; ``stop_at_layer`` skips the blocks after ``out_layer``."""
        cfg = self.cfg
        layer = cfg.out_layer or cfg.depth
        rngs = as_rngs(rngs)
        if train and (cfg.dropout or cfg.attention_dropout) and rngs is None:
            raise ConfigError("ASTEncoder with train=True and dropout needs `rngs` (a key)")
        x = self.embed(fbank, train=train, rngs=rngs)
        out = {}
        for i, block in enumerate(self.blocks[: layer if stop_at_layer else cfg.depth], start=1):
            x = block(x, train=train, rngs=rngs)
            if i == layer:
                out["tokens"] = x
        normed = self.norm(out["tokens"])
        if not stop_at_layer:
            out["final"] = normed if layer == cfg.depth else self.norm(x)
        out["patch_grid"] = normed[:, NUM_PREFIX_TOKENS:].reshape(
            normed.shape[0], cfg.freq_patches, -1, cfg.dim)
        return out
