"""PaSST (``hear21passt`` / Transformer4SED) PyTorch weights -> our ``jaxaudio.nn.vit.ViT``.

The name and layout mapping is the table in ``jaxaudio/nn/vit.py``'s docstring: torch Linear
weights are transposed to ``(in, out)``, the fused ``attn.qkv`` is cut into query/key/value
row blocks, the patch conv goes from OIHW to HWIO, and the position embeddings from
channels-first to channels-last. Classifier heads (``head.*``, ``head_dist.*``) are dropped:
they belong to the SED model, not the encoder.

Time positions. PaSST-S holds 99 time positions (998 frames). Our ViT's ``time_pos_embed``
has ``cfg.time_patches`` entries (from ``cfg.max_frames``), so the checkpoint's embedding is
brought to that length:
  * fewer: the first ``T`` entries. This is what the reference does at inference for shorter
    clips (``time_new_pos_embed[..., :T]``), so the converted model matches torch fed the same
    short clip. (In training, PaSST's own repo slides a random window instead; to keep that,
    convert with ``max_frames=998`` and feed shorter clips: our ViT draws the window itself.)
  * more: linear interpolation along time with PyTorch's ``align_corners=False`` sampling (as
    ``F.interpolate(..., mode='bilinear')`` on the ``(1, d, 1, T)`` tensor). The reference
    has no such path: ``hear21passt`` fails on longer inputs and PaSST's training repo cuts the
    input to 99 patches; its 20 s / 30 s models were trained with longer embeddings. So this
    is our choice, a start for fine-tuning, not a reproduction.

LoRA. ``loralib`` adapters are mapped when present: ``X.lora_A (r, in) -> lora_a = A.T`` and
``X.lora_B (out, r) -> lora_b = B.T``; for the fused qkv, B is split in three row blocks and
A is shared (``lora.Linear``) or split in three ``r``-row blocks (``lora.MergedLinear`` with
all three enabled). Adapters the checkpoint lacks keep their fresh init (zero ``lora_b``,
so the model starts equal to the checkpoint), as when LoRA fine-tuning begins.
"""
from __future__ import annotations

import logging
import os
import re

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.convert.torch_io import load_torch_state_dict
from jaxaudio.errors import CheckpointError
from jaxaudio.nn.lora import is_lora_path
from jaxaudio.nn.vit import ViT, ViTConfig

_logger = logging.getLogger(__name__)

# Checkpoint entries that have no place in the encoder.
DROPPED = re.compile(r"^(head|head_dist|pre_logits)\.")
_BLOCK_LINEARS = {"attn.proj": ("attention", "out"), "mlp.fc1": ("mlp", "fc_in"), "mlp.fc2": ("mlp", "fc_out")}
_QKV = ("query", "key", "value")


def resize_time_positions(embed: np.ndarray, length: int) -> np.ndarray:
    """``(..., T0)`` -> ``(..., length)``: first entries if shorter, linear interpolation if longer.

    Interpolation samples source position ``(o + 0.5) * T0 / length - 0.5`` clamped to
    ``[0, T0 - 1]`` (PyTorch's ``align_corners=False``).
    """
    old = embed.shape[-1]
    if length <= old:
        return embed[..., :length]
    src = np.clip((np.arange(length) + 0.5) * (old / length) - 0.5, 0.0, old - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, old - 1)
    frac = (src - lo).astype(embed.dtype)
    return embed[..., lo] * (1 - frac) + embed[..., hi] * frac


class _Mapper:
    """Collects our flat parameter paths -> arrays and remembers which torch names were used."""

    def __init__(self, state_dict: dict, cfg: ViTConfig, prefix: str, source: str):
        self.tensors = {k[len(prefix):]: np.asarray(v) for k, v in state_dict.items() if k.startswith(prefix)}
        if not self.tensors:
            raise CheckpointError(f"{source}: no entries start with prefix {prefix!r}")
        self.cfg = cfg
        self.source = source
        self.used: set[str] = set()
        self.out: dict[tuple, np.ndarray] = {}

    def take(self, name: str) -> np.ndarray | None:
        if name in self.tensors:
            self.used.add(name)
            return self.tensors[name].astype(np.float32)
        return None

    def expect_shape(self, name: str, array: np.ndarray, shape: tuple) -> np.ndarray:
        if array.shape != tuple(shape):
            raise CheckpointError(
                f"{self.source}: {name} has shape {array.shape}; the ViT config "
                f"(dim={self.cfg.dim}, n_mels={self.cfg.n_mels}, patch_size={self.cfg.patch_size}, "
                f"stride={self.cfg.stride}) needs {tuple(shape)}"
            )
        return array

    def put(self, path: tuple, name: str, transform=lambda a: a, shape=None):
        array = self.take(name)
        if array is None:
            return
        if shape is not None:
            array = self.expect_shape(name, array, shape)
        self.out[path] = transform(array)

    def lora(self, path: tuple, torch_linear: str, d_out: int, part: slice | None, index: int = 0):
        """loralib A/B of ``torch_linear`` -> ``path + ('lora_a'|'lora_b')`` (``part``: qkv row block)."""
        a, b = self.take(torch_linear + ".lora_A"), self.take(torch_linear + ".lora_B")
        if a is None or b is None:
            return
        rank = self.cfg.lora_rank
        if b.shape[1] != rank or a.shape[0] not in (rank, 3 * rank):
            raise CheckpointError(
                f"{self.source}: {torch_linear}.lora_A {a.shape} / lora_B {b.shape} do not fit "
                f"vit.lora_rank={rank}"
            )
        if part is not None:
            b = b[part]
            if a.shape[0] == 3 * rank:  # MergedLinear: one rank-r A per q/k/v
                a = a[index * rank:(index + 1) * rank]
        self.out[path + ("lora_a",)] = a.T
        self.out[path + ("lora_b",)] = self.expect_shape(torch_linear + ".lora_B", b, (d_out, rank)).T


def _map_all(m: _Mapper, n_blocks: int) -> None:
    cfg, d = m.cfg, m.cfg.dim
    p, hidden = cfg.patch_size, int(cfg.dim * cfg.mlp_ratio)
    m.put(("patch_embed", "proj", "kernel"), "patch_embed.proj.weight",
          lambda w: w.transpose(2, 3, 1, 0), shape=(d, 1, p, p))
    m.put(("patch_embed", "proj", "bias"), "patch_embed.proj.bias", shape=(d,))
    m.put(("cls_token",), "cls_token", shape=(1, 1, d))
    m.put(("dist_token",), "dist_token", shape=(1, 1, d))
    m.put(("token_pos_embed",), "new_pos_embed", shape=(1, 2, d))
    m.put(("freq_pos_embed",), "freq_new_pos_embed", lambda e: e.transpose(0, 2, 3, 1),
          shape=(1, d, cfg.freq_patches, 1))
    time = m.take("time_new_pos_embed")
    if time is not None:
        if time.ndim != 4 or time.shape[:3] != (1, d, 1):
            raise CheckpointError(f"{m.source}: time_new_pos_embed has shape {time.shape}; expected (1, {d}, 1, T)")
        m.out[("time_pos_embed",)] = resize_time_positions(time, cfg.time_patches).transpose(0, 2, 3, 1)
    m.put(("norm", "scale"), "norm.weight", shape=(d,))
    m.put(("norm", "bias"), "norm.bias", shape=(d,))

    for n in range(n_blocks):
        t, ours = f"blocks.{n}.", ("blocks", n)
        for norm in ("norm1", "norm2"):
            m.put(ours + (norm, "scale"), t + norm + ".weight", shape=(d,))
            m.put(ours + (norm, "bias"), t + norm + ".bias", shape=(d,))
        qkv_w, qkv_b = m.take(t + "attn.qkv.weight"), m.take(t + "attn.qkv.bias")
        for i, name in enumerate(_QKV):
            rows = slice(i * d, (i + 1) * d)
            path = ours + ("attention", name)
            if qkv_w is not None:
                m.out[path + ("kernel",)] = m.expect_shape(t + "attn.qkv.weight", qkv_w, (3 * d, d))[rows].T
            if qkv_b is not None:
                m.out[path + ("bias",)] = m.expect_shape(t + "attn.qkv.bias", qkv_b, (3 * d,))[rows]
            m.lora(path, t + "attn.qkv", d, rows, i)
        shapes = {"attn.proj": (d, d), "mlp.fc1": (hidden, d), "mlp.fc2": (d, hidden)}
        for torch_name, (group, name) in _BLOCK_LINEARS.items():
            path = ours + (group, name)
            out_dim, in_dim = shapes[torch_name]
            m.put(path + ("kernel",), t + torch_name + ".weight", lambda w: w.T, shape=(out_dim, in_dim))
            m.put(path + ("bias",), t + torch_name + ".bias", shape=(out_dim,))
            m.lora(path, t + torch_name, out_dim, None)


def _path_name(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def passt_to_nnx(state_dict: dict, cfg: ViTConfig, *, prefix: str = "", strict: bool = True,
                 source: str = "<state dict>") -> nnx.State:
    """PaSST tensors (torch names, numpy or torch arrays) -> ``nnx.State`` of ``ViT(cfg)`` parameters.

    prefix: only entries starting with it are read (e.g. ``'encoder.'`` in an SED checkpoint);
      it is stripped before mapping, and other entries are ignored.
    strict: raise ``CheckpointError`` when a checkpoint entry is not used (heads aside) or a
      non-LoRA parameter of our model gets no value; with ``strict=False`` both lists are logged
      and the returned state simply lacks the missing parameters.
    source: how messages name the checkpoint (``load_passt`` passes the file path).
    The state holds only what the checkpoint provides; apply it with ``nnx.update(model, state)``.
    """
    state_dict = {k: (v.detach().cpu().float().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}
    m = _Mapper(state_dict, cfg, prefix, source)
    n_blocks = 1 + max((int(k.split(".")[1]) for k in m.tensors if re.match(r"blocks\.\d+\.", k)), default=-1)
    if n_blocks > cfg.depth:
        raise CheckpointError(f"{source}: has {n_blocks} blocks; vit.depth={cfg.depth}")
    _map_all(m, cfg.depth)

    abstract = nnx.eval_shape(lambda: ViT(cfg, rngs=nnx.Rngs(0)))
    wanted = {path: var for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    for path, array in m.out.items():
        if path not in wanted:
            raise CheckpointError(f"{source}: maps to {_path_name(path)}, which ViT(cfg) does not have")
        if array.shape != wanted[path].shape:
            raise CheckpointError(
                f"{source}: {_path_name(path)} converted to shape {array.shape}; ViT(cfg) needs {wanted[path].shape}"
            )
    unexpected = sorted(k for k in m.tensors if k not in m.used and not DROPPED.match(k))
    missing = sorted(_path_name(p) for p in wanted if p not in m.out and not is_lora_path(p))
    if unexpected or missing:
        problem = (f"unexpected entries {unexpected or 'none'}; "
                   f"parameters of ViT(cfg) with no checkpoint entry {missing or 'none'}")
        if strict:
            raise CheckpointError(f"{source}: {problem} (pass strict=False to load the rest)")
        _logger.warning("%s: %s", source, problem)
    flat = [(path, nnx.Param(jnp.asarray(array, wanted[path].dtype))) for path, array in sorted(
        m.out.items(), key=lambda item: _path_name(item[0]))]
    return nnx.from_flat_state(flat)


def load_passt(path: os.PathLike | str, cfg: ViTConfig, *, rngs: nnx.Rngs | None = None, prefix: str = "",
               strict: bool = True) -> ViT:
    """A ``ViT(cfg)`` holding the weights of a PaSST checkpoint file (read without running pickled code)."""
    state = passt_to_nnx(load_torch_state_dict(path), cfg, prefix=prefix, strict=strict, source=str(path))
    model = ViT(cfg, rngs=rngs if rngs is not None else nnx.Rngs(0))
    nnx.update(model, state)
    return model
