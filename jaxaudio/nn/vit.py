"""PaSST-S style audio ViT: overlapping 16x16 patches, separate freq/time positions, patchout, LoRA.

Shapes. Input ``mel (batch, frames, n_mels)``. The patch conv (kernel 16, stride 10, VALID)
runs over the ``(n_mels, frames)`` image and gives a ``(F, T')`` grid with
``F = (n_mels-16)//10 + 1`` (128 -> 12) and ``T' = (frames-16)//10 + 1`` (998 -> 99);
``time_stride`` (0: ``stride``) steps the time axis alone.
Tokens are flattened **frequency-major**, index ``f*T' + t`` (PaSST's ``flatten(2)`` of
``(B, E, F, T)``), after the two prefix tokens ``[cls, dist]``; so ``tokens[:, 2:]`` reshapes
to ``(batch, F, T', dim)``.

Positions (PaSST, arXiv 2110.05069 §2): ``patch + time_pos_embed[t] + freq_pos_embed[f]``;
cls/dist tokens get ``token_pos_embed``. With fewer time patches than ``time_pos_embed``
holds, eval uses the first ``T'`` entries and training a random contiguous window (as the
reference); with more, the grid is cut to the embedding's length.

Patchout (training only, static shapes so jit compiles once): structured time / frequency
patchout drops ``patchout_time`` whole time columns / ``patchout_freq`` frequency rows,
unstructured patchout drops ``patchout_unstructured`` tokens from the flattened sequence.
Kept indices come from ``jax.random.permutation(...)[:keep]``, sorted, and are shared by the
whole batch (as ``torch.randperm`` in the reference). PaSST-S was trained on AudioSet with
time 40 / freq 4 (PaSST README); the SED recipes (MAT-SED, PMAM) use no time patchout.

Blocks are pre-norm ViT blocks (``x + attn(norm1 x)``, ``x + mlp(norm2 x)``, LayerNorm eps
1e-6, exact GELU). Their dense layers are ``LoRALinear`` (rank 0 = plain dense); with
``lora_rank > 0`` every block linear in ``lora_targets`` gets an adapter, like
Transformer4SED's PaSST-LoRA (qkv, proj, fc1, fc2; r=8, alpha=1 in PMAM). Freeze the
rest with ``jaxaudio.nn.lora.lora_param_groups``. The blocks are ``nn/attention.py``'s
``TransformerBlock`` (so their attention goes through the one core, ``attention.attend``) with
a ``LoRALinear`` projection factory; parameter names are the same, so the same sharding rules
and the PaSST converter apply.

Outputs of ``ViT.__call__`` (a dict):
  ``tokens``        ``(batch, 2 + n, dim)`` output of block ``return_layer`` (1-based, *before*
                    the final LayerNorm, as the reference's ``layer10_out``); when
                    ``return_layer`` is None, the final normed tokens.
  ``patch_tokens``  ``tokens[:, 2:]``.
  ``final``         final-LayerNorm output of the last block (absent with ``stop_at_layer``).
  ``time_index`` / ``freq_index``  kept grid columns / rows (``arange`` without patchout);
  ``patch_index``   kept flat positions, only with unstructured patchout.

Weight conversion from ``hear21passt`` / Transformer4SED ``PaSST`` (torch Linear weight is
``(out, in)``; ours ``(in, out)``; ``d = dim``)::

    torch name                          ours                                   transform
    patch_embed.proj.weight (d,1,16,16) patch_embed/proj/kernel (16,16,1,d)   permute(2,3,1,0)
    patch_embed.proj.bias               patch_embed/proj/bias                  -
    cls_token (1,1,d)                   cls_token (1,1,d)                      -
    dist_token (1,1,d)                  dist_token (1,1,d)                     -
    new_pos_embed (1,2,d)               token_pos_embed (1,2,d)                -
    freq_new_pos_embed (1,d,F,1)        freq_pos_embed (1,F,1,d)               permute(0,2,3,1)
    time_new_pos_embed (1,d,1,T)        time_pos_embed (1,1,T,d)               permute(0,2,3,1)
    blocks.N.norm1.{weight,bias}        blocks/N/norm1/{scale,bias}            -
    blocks.N.attn.qkv.weight (3d,d)     blocks/N/attention/{query,key,value}/kernel
                                                                               rows [0:d],[d:2d],[2d:3d], each .T
    blocks.N.attn.qkv.bias (3d,)        blocks/N/attention/{query,key,value}/bias   same split
    blocks.N.attn.proj.{weight,bias}    blocks/N/attention/out/{kernel,bias}   weight .T
    blocks.N.norm2.{weight,bias}        blocks/N/norm2/{scale,bias}            -
    blocks.N.mlp.fc1.{weight,bias}      blocks/N/mlp/fc_in/{kernel,bias}       weight .T
    blocks.N.mlp.fc2.{weight,bias}      blocks/N/mlp/fc_out/{kernel,bias}      weight .T
    norm.{weight,bias}                  norm/{scale,bias}                      -
    head.*, head_dist.*                 (dropped: heads belong to the SED model)
    LoRA (loralib) X.lora_A (r,in)      X'/lora_a (in,r)                       .T
    LoRA (loralib) X.lora_B (out,r)     X'/lora_b (r,out)                      .T
    (fused qkv: lora_a for query, key and value are the same A.T; lora_b is B split
     into rows [0:d],[d:2d],[2d:3d], each .T — exact, since delta = B A row-blocks)
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import as_rngs, torch_uniform
from jaxaudio.nn.attention import TransformerBlock
from jaxaudio.nn.lora import LoRALinear

NUM_PREFIX_TOKENS = 2  # cls, dist
LORA_TARGETS = ("query", "key", "value", "out", "fc_in", "fc_out")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Sizes and training options of the audio ViT (defaults: PaSST-S, no patchout, no LoRA).

    max_frames: frames the time embedding is sized for (998 -> 99 time patches).
    dropout: dropout after attention/MLP projections and on the token sequence (timm drop_rate).
    patchout_time / patchout_freq / patchout_unstructured: numbers of columns / rows / tokens
      dropped in training.
    lora_rank / lora_alpha / lora_targets: adapters on the named block linears (rank 0: none).
    out_layer: default ``return_layer`` (1-based block index; None = final normed output).
    """

    n_mels: int = 128
    max_frames: int = 998
    patch_size: int = 16
    stride: int = 10
    time_stride: int = 0  # 0: ``stride``; a finer time step where frames are coarser than PaSST's 10 ms
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    norm_eps: float = 1e-6
    patchout_time: int = 0
    patchout_freq: int = 0
    patchout_unstructured: int = 0
    lora_rank: int = 0
    lora_alpha: float = 1.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    out_layer: int | None = None

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ConfigError(f"vit.dim={self.dim} is not divisible by vit.num_heads={self.num_heads}")
        if self.stride < 1 or self.time_stride < 0:
            raise ConfigError(f"vit.stride={self.stride}, vit.time_stride={self.time_stride}; expected >= 1 and >= 0")
        if self.n_mels < self.patch_size or self.max_frames < self.patch_size:
            raise ConfigError(
                f"vit.n_mels={self.n_mels} and vit.max_frames={self.max_frames} must be at least "
                f"vit.patch_size={self.patch_size}"
            )
        if not 0 <= self.patchout_freq < self.freq_patches:
            raise ConfigError(f"vit.patchout_freq={self.patchout_freq}; expected 0..{self.freq_patches - 1}")
        if not 0 <= self.patchout_time < self.time_patches:
            raise ConfigError(f"vit.patchout_time={self.patchout_time}; expected 0..{self.time_patches - 1}")
        if self.patchout_unstructured < 0:
            raise ConfigError(f"vit.patchout_unstructured={self.patchout_unstructured}; expected >= 0")
        unknown = set(self.lora_targets) - set(LORA_TARGETS)
        if unknown:
            raise ConfigError(f"vit.lora_targets has {sorted(unknown)}; expected names from {LORA_TARGETS}")
        if self.out_layer is not None and not 1 <= self.out_layer <= self.depth:
            raise ConfigError(f"vit.out_layer={self.out_layer}; expected 1..{self.depth} or None")

    @property
    def step(self) -> int:
        """Frames between time patches (``time_stride``, else ``stride``)."""
        return self.time_stride or self.stride

    def patches(self, size: int) -> int:
        """Time patches over ``size`` frames (VALID conv)."""
        return (size - self.patch_size) // self.step + 1

    @property
    def freq_patches(self) -> int:
        return (self.n_mels - self.patch_size) // self.stride + 1

    @property
    def time_patches(self) -> int:
        return self.patches(self.max_frames)


PASST_S = ViTConfig(out_layer=10)
# PaSST's own AudioSet training setting (README: "trained with s_patchout_t=40, s_patchout_f=4").
PASST_S_AUDIOSET = dataclasses.replace(PASST_S, patchout_time=40, patchout_freq=4, out_layer=None)
# PMAM's PaSST branch: LoRA r=8, alpha=1 on the block linears (Transformer4SED post_pretrain.yaml).
PASST_S_LORA = dataclasses.replace(PASST_S, lora_rank=8, lora_alpha=1.0)
# Small enough for CPU tests: 64 mel x 200 frames -> 5 x 19 patches.
TINY = ViTConfig(n_mels=64, max_frames=200, dim=32, depth=3, num_heads=4, mlp_ratio=2.0, out_layer=2)


_normal02 = nnx.initializers.normal(0.02)  # timm trunc_normal_(std=.02) truncates at +-2 absolute: ~normal


class PatchEmbed(nnx.Module):
    """Conv ``(patch, patch)``, strides ``(stride, step)``, over ``(batch, n_mels, frames, 1)``
    -> ``(batch, F, T', dim)``."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        init = torch_uniform(cfg.patch_size * cfg.patch_size)
        self.proj = nnx.Conv(1, cfg.dim, (cfg.patch_size, cfg.patch_size), strides=(cfg.stride, cfg.step),
                             padding="VALID", kernel_init=init, bias_init=init, rngs=rngs)

    def __call__(self, mel: jax.Array) -> jax.Array:
        image = jnp.swapaxes(mel, 1, 2)[..., None]  # (batch, n_mels, frames, 1)
        return self.proj(image)


def _block_dense(cfg: ViTConfig, rngs: nnx.Rngs):
    """The blocks' projection factory: ``LoRALinear`` (rank 0 = plain dense) with N(0, 0.02) kernels."""

    def dense(name: str, fan_in: int, fan_out: int, *, use_bias: bool = True) -> LoRALinear:
        rank = cfg.lora_rank if name in cfg.lora_targets else 0
        return LoRALinear(fan_in, fan_out, rank=rank, alpha=cfg.lora_alpha, use_bias=use_bias,
                          kernel_init=_normal02, rngs=rngs)

    return dense


def vit_block(cfg: ViTConfig, *, rngs: nnx.Rngs) -> TransformerBlock:
    """One pre-norm ViT block: ``x + drop(attn(norm1 x))`` then ``x + drop(mlp(norm2 x))``."""
    return TransformerBlock(cfg.dim, cfg.num_heads, int(cfg.dim * cfg.mlp_ratio), dropout=cfg.dropout,
                            attention_dropout=cfg.attention_dropout, norm_eps=cfg.norm_eps, qkv_bias=cfg.qkv_bias,
                            dense=_block_dense(cfg, rngs), rngs=rngs)


def _kept_sorted(key: jax.Array, total: int, keep: int) -> jax.Array:
    """``keep`` distinct indices of ``range(total)``, ascending; a static-size gather index."""
    return jnp.sort(jax.random.permutation(key, total)[:keep]).astype(jnp.int32)


class ViT(nnx.Module):
    """PaSST-S style encoder: ``mel (batch, frames, n_mels)`` -> dict of token sequences (module doc)."""

    def __init__(self, cfg: ViTConfig = PASST_S, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg, rngs=rngs)
        self.cls_token = nnx.Param(_normal02(rngs.params(), (1, 1, cfg.dim)))
        self.dist_token = nnx.Param(_normal02(rngs.params(), (1, 1, cfg.dim)))
        self.token_pos_embed = nnx.Param(_normal02(rngs.params(), (1, NUM_PREFIX_TOKENS, cfg.dim)))
        self.freq_pos_embed = nnx.Param(_normal02(rngs.params(), (1, cfg.freq_patches, 1, cfg.dim)))
        self.time_pos_embed = nnx.Param(_normal02(rngs.params(), (1, 1, cfg.time_patches, cfg.dim)))
        self.token_dropout = nnx.Dropout(cfg.dropout)
        self.blocks = nnx.List([vit_block(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.norm = nnx.LayerNorm(cfg.dim, epsilon=cfg.norm_eps, rngs=rngs)

    def grid_shape(self, frames: int, *, train: bool) -> tuple[int, int]:
        """Static ``(F', T')`` of the patch grid after cutting and structured patchout."""
        cfg = self.cfg
        t = min(cfg.patches(frames), cfg.time_patches)
        if train:
            return cfg.freq_patches - cfg.patchout_freq, t - cfg.patchout_time
        return cfg.freq_patches, t

    def embed(self, mel: jax.Array, *, train: bool, rngs=None) -> dict:
        """Patches + positions, patchout, prefix tokens: ``tokens (batch, 2 + n, dim)`` and kept indices."""
        cfg = self.cfg
        if mel.ndim != 3 or mel.shape[2] != cfg.n_mels:
            raise ConfigError(f"ViT input has shape {mel.shape}; expected (batch, frames, vit.n_mels={cfg.n_mels})")
        if mel.shape[1] < cfg.patch_size:
            raise ConfigError(f"ViT input has {mel.shape[1]} frames; needs at least vit.patch_size={cfg.patch_size}")
        rngs = as_rngs(rngs)
        needs_key = train and (cfg.patchout_time or cfg.patchout_freq or cfg.patchout_unstructured
                               or cfg.dropout or cfg.attention_dropout
                               or self.grid_shape(mel.shape[1], train=False)[1] < cfg.time_patches)
        if needs_key and rngs is None:
            raise ConfigError("ViT with train=True needs `rngs` (a key) for patchout / dropout / position offset")

        grid = self.patch_embed(mel)  # (batch, F, T, dim)
        n_time = grid.shape[2]
        time_pos = self.time_pos_embed[...]
        if n_time >= cfg.time_patches:
            grid = grid[:, :, : cfg.time_patches]
        elif train:
            offset = jax.random.randint(rngs.dropout(), (), 0, cfg.time_patches - n_time + 1)
            time_pos = jax.lax.dynamic_slice_in_dim(time_pos, offset, n_time, axis=2)
        else:
            time_pos = time_pos[:, :, :n_time]
        grid = grid + time_pos + self.freq_pos_embed[...]

        n_freq, n_time = grid.shape[1], grid.shape[2]
        time_index = jnp.arange(n_time, dtype=jnp.int32)
        freq_index = jnp.arange(n_freq, dtype=jnp.int32)
        if train and cfg.patchout_time:
            time_index = _kept_sorted(rngs.dropout(), n_time, n_time - cfg.patchout_time)
            grid = jnp.take(grid, time_index, axis=2)
        if train and cfg.patchout_freq:
            freq_index = _kept_sorted(rngs.dropout(), n_freq, n_freq - cfg.patchout_freq)
            grid = jnp.take(grid, freq_index, axis=1)
        batch, n_freq, n_time, dim = grid.shape
        patches = grid.reshape(batch, n_freq * n_time, dim)  # frequency-major: index f*T' + t
        out = {"time_index": time_index, "freq_index": freq_index}
        if train and cfg.patchout_unstructured:
            total = n_freq * n_time
            if cfg.patchout_unstructured >= total:
                raise ConfigError(
                    f"vit.patchout_unstructured={cfg.patchout_unstructured} drops every one of {total} patches"
                )
            out["patch_index"] = _kept_sorted(rngs.dropout(), total, total - cfg.patchout_unstructured)
            patches = jnp.take(patches, out["patch_index"], axis=1)

        pos = self.token_pos_embed[...]
        prefix = jnp.concatenate([self.cls_token[...] + pos[:, :1], self.dist_token[...] + pos[:, 1:]], axis=1)
        tokens = jnp.concatenate([jnp.broadcast_to(prefix, (batch, NUM_PREFIX_TOKENS, dim)), patches], axis=1)
        out["tokens"] = self.token_dropout(tokens, deterministic=not train, rngs=rngs)
        return out

    def __call__(self, mel: jax.Array, *, train: bool, rngs=None, return_layer: int | None = -1,
                 stop_at_layer: bool = False) -> dict:
        """See the module docstring; ``return_layer=-1`` (default) means ``cfg.out_layer``."""
        cfg = self.cfg
        layer = cfg.out_layer if return_layer == -1 else return_layer
        if layer is not None and not 1 <= layer <= cfg.depth:
            raise ConfigError(f"return_layer={layer}; expected 1..{cfg.depth} or None")
        if stop_at_layer and layer is None:
            raise ConfigError("stop_at_layer=True needs a return_layer")
        rngs = as_rngs(rngs)
        out = self.embed(mel, train=train, rngs=rngs)
        x = out.pop("tokens")
        last = layer if stop_at_layer else cfg.depth
        for i in range(1, last + 1):
            x = self.blocks[i - 1](x, train=train, rngs=rngs)
            if i == layer:
                out["tokens"] = x
        if not stop_at_layer:
            out["final"] = self.norm(x)
            if layer is None:
                out["tokens"] = out["final"]
        out["patch_tokens"] = out["tokens"][:, NUM_PREFIX_TOKENS:]
        return out


def frequency_pool(tokens: jax.Array, n_freq: int, n_time: int, *, mode: str = "mean",
                   pool_module=None) -> jax.Array:
    """Patch tokens ``(batch, n_freq*n_time, dim)`` (frequency-major) -> ``(batch, n_time, dim)``.

    ``'mean'``: average over the frequency patches (MAT-SED). ``'attention'``: ``pool_module``,
    a callable ``(batch, n_time, n_freq, dim) -> (batch, n_time, dim)`` with its ``train`` flag
    already bound (e.g. ``functools.partial(AttentionPool(...), train=train)``; PMAM: 6 heads),
    attends over the ``n_freq`` patches of each time step.
    """
    batch, n, dim = tokens.shape
    if n != n_freq * n_time:
        raise ConfigError(
            f"frequency_pool got {n} tokens; expected n_freq*n_time = {n_freq}*{n_time} patch tokens "
            "(drop the cls/dist tokens first; unstructured patchout breaks the grid)"
        )
    grid = tokens.reshape(batch, n_freq, n_time, dim)
    if mode == "mean":
        return grid.mean(axis=1)
    if mode == "attention":
        if pool_module is None:
            raise ConfigError("frequency_pool mode='attention' needs pool_module")
        return pool_module(jnp.swapaxes(grid, 1, 2))  # (batch, n_time, n_freq, dim) -> (batch, n_time, dim)
    raise ConfigError(f"frequency pool mode={mode!r}; expected 'mean' or 'attention'")


def interpolate_time(x: jax.Array, factor: int = 10, *, mode: str = "linear", pad_to: int | None = None) -> jax.Array:
    """Upsample ``(batch, time, dim)`` by ``factor`` along time, as ``torch.nn.functional.interpolate``.

    pad_to: first repeat the last frame up to this many frames (MAT-SED/PMAM: 99 -> 100, then
    x10 -> 1000 frames at 100 fps). ``'linear'`` is PyTorch's ``align_corners=False``: output
    frame ``o`` samples input position ``(o + 0.5)/factor - 0.5`` clamped to ``[0, time-1]``;
    ``'nearest'`` repeats each frame ``factor`` times.
    """
    time = x.shape[1]
    if pad_to is not None:
        if pad_to < time:
            raise ConfigError(f"interpolate_time pad_to={pad_to} is shorter than the input ({time} frames)")
        if pad_to > time:
            x = jnp.concatenate([x, jnp.repeat(x[:, -1:], pad_to - time, axis=1)], axis=1)
            time = pad_to
    if factor == 1:
        return x
    if mode == "nearest":
        return jnp.repeat(x, factor, axis=1)
    if mode != "linear":
        raise ConfigError(f"interpolate mode={mode!r}; expected 'linear' or 'nearest'")
    src = np.clip((np.arange(time * factor) + 0.5) / factor - 0.5, 0.0, time - 1)
    lo = np.floor(src).astype(np.int32)
    hi = np.minimum(lo + 1, time - 1)
    w = jnp.asarray((src - lo)[None, :, None], x.dtype)
    return jnp.take(x, lo, axis=1) * (1 - w) + jnp.take(x, hi, axis=1) * w
