"""Hugging Face AST weights (``ASTModel`` / ``ASTForAudioClassification``) -> our ``ASTEncoder``.

Two naming schemes are read. The Hub files (``MIT/ast-finetuned-audioset-10-10-0.4593``) and
``save_pretrained`` keep the transformers-4 names; a transformers-5 model's ``state_dict()`` has
the renamed ones (transformers 5 maps the old names on load). Per block ``N``::

    ours (nnx path)             transformers 4 / Hub file               transformers 5
    blocks/N/norm1              encoder.layer.N.layernorm_before        layers.N.layernorm_before
    blocks/N/attention/query    encoder.layer.N.attention.attention.query  layers.N.attention.q_proj
      (key, value likewise)
    blocks/N/attention/out      encoder.layer.N.attention.output.dense  layers.N.attention.o_proj
    blocks/N/norm2              encoder.layer.N.layernorm_after         layers.N.layernorm_after
    blocks/N/mlp/fc_in          encoder.layer.N.intermediate.dense      layers.N.mlp.fc1
    blocks/N/mlp/fc_out         encoder.layer.N.output.dense            layers.N.mlp.fc2
  and in both: ``patch_embed/proj`` <- ``embeddings.patch_embeddings.projection``, the root
  ``cls_token`` / ``distillation_token`` / ``position_embeddings`` <- ``embeddings.<same>``,
  ``norm`` <- ``layernorm``; all under ``audio_spectrogram_transformer.`` in the classifier's
  files, whose ``classifier.*`` head is dropped. Layouts follow our layer types
  (``convert/nnx_targets.py``): Linear weights transposed, the patch conv OIHW -> HWIO. The walk,
  with its errors for missing, unused and misshapen tensors (naming the file and the tensor), is
  ``convert/timm.py``'s ``timm_to_nnx``, handed a rename from our module paths to the file's.

Positions. The checkpoint's ``position_embeddings (1, 2 + F*T0, d)`` is brought to our grid's
``T`` time columns (from ``cfg.max_frames``) with ``passt.resize_time_positions`` on each
frequency row, cls/dist entries kept: more columns are linearly interpolated (``align_corners=False``,
as ``F.interpolate(..., size=(F, T), mode='bilinear')`` on the ``(1, d, F, T0)`` grid, which is
what the authors' AST does for longer inputs); fewer are the first ``T`` columns, so the
converted model equals the checkpoint fed ``T``-column inputs (``nn/ast.py``'s rule for short
inputs) rather than a squeezed grid.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.convert.passt import resize_time_positions
from jaxaudio.convert.timm import timm_to_nnx
from jaxaudio.convert.torch_io import load_torch_state_dict
from jaxaudio.errors import CheckpointError
from jaxaudio.nn.ast import ASTConfig, ASTEncoder
from jaxaudio.nn.vit import NUM_PREFIX_TOKENS

PREFIX = "audio_spectrogram_transformer."
HEAD = "classifier."
POSITIONS = "embeddings.position_embeddings"
# our block submodule -> (transformers 4 / Hub name, transformers 5 name), under the block's prefix
_BLOCK = {
    "norm1": ("layernorm_before", "layernorm_before"),
    "attention.query": ("attention.attention.query", "attention.q_proj"),
    "attention.key": ("attention.attention.key", "attention.k_proj"),
    "attention.value": ("attention.attention.value", "attention.v_proj"),
    "attention.out": ("attention.output.dense", "attention.o_proj"),
    "norm2": ("layernorm_after", "layernorm_after"),
    "mlp.fc_in": ("intermediate.dense", "mlp.fc1"),
    "mlp.fc_out": ("output.dense", "mlp.fc2"),
}
_ROOT = {"": "embeddings", "patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm"}


def _renamer(prefix: str, legacy: bool):
    """Our dotted module path -> the checkpoint's module name."""
    block = "encoder.layer.{}." if legacy else "layers.{}."

    def rename(ours: str) -> str:
        if ours in _ROOT:
            return prefix + _ROOT[ours]
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", ours)
        if match is None or match.group(2) not in _BLOCK:
            return prefix + ours  # not an AST module: reported missing under our own name
        return prefix + block.format(match.group(1)) + _BLOCK[match.group(2)][0 if legacy else 1]

    return rename


def resize_positions(pos: np.ndarray, n_freq: int, n_time: int, *, source: str = "<state dict>") -> np.ndarray:
    """``(1, 2 + n_freq*T0, d)`` -> ``(1, 2 + n_freq*n_time, d)`` (module docstring)."""
    if pos.ndim != 3 or pos.shape[0] != 1 or (pos.shape[1] - NUM_PREFIX_TOKENS) % n_freq:
        raise CheckpointError(f"{source}: {POSITIONS} has shape {pos.shape}; expected (1, 2 + {n_freq}*T, dim) "
                              f"for ast.n_mels / patch_size / freq_stride giving {n_freq} frequency patches")
    prefix, grid = pos[:, :NUM_PREFIX_TOKENS], pos[:, NUM_PREFIX_TOKENS:].reshape(1, n_freq, -1, pos.shape[2])
    grid = np.moveaxis(resize_time_positions(np.moveaxis(grid, 2, 3), n_time), 3, 2)
    return np.concatenate([prefix, grid.reshape(1, -1, pos.shape[2])], axis=1)


def ast_to_nnx(state_dict: Mapping[str, np.ndarray], model: ASTEncoder, *, source: str = "<state dict>") -> ASTEncoder:
    """Load Hugging Face AST tensors (either naming, numpy or torch) into ``model`` in place and return it.

    ``model`` may be abstract (``nnx.eval_shape``): every parameter gets a value or this raises.
    """
    tensors = {str(k): (v.detach().cpu().float().numpy() if hasattr(v, "detach") else np.asarray(v))
               for k, v in state_dict.items()}
    prefix = PREFIX if any(k.startswith(PREFIX) for k in tensors) else ""
    legacy = any(k.startswith(prefix + "encoder.layer.") for k in tensors)
    cfg: ASTConfig = model.cfg
    if prefix + POSITIONS in tensors:
        tensors[prefix + POSITIONS] = resize_positions(tensors[prefix + POSITIONS], cfg.freq_patches,
                                                       cfg.time_patches, source=source)
    # classifier="": none of our layers is a head to keep at its fresh init; the file's head is skipped
    return timm_to_nnx(tensors, model, rename=_renamer(prefix, legacy), classifier="",
                       skip_prefixes=(HEAD,), source=source)


def load_ast(path: os.PathLike | str, cfg: ASTConfig) -> ASTEncoder:
    """An ``ASTEncoder(cfg)`` holding a Hugging Face AST checkpoint (``.safetensors``, or a torch
    file read with ``weights_only=True``); built abstractly, so no random init is computed."""
    model = ast_to_nnx(load_torch_state_dict(path), nnx.eval_shape(lambda: ASTEncoder(cfg, rngs=nnx.Rngs(0))),
                       source=str(path))
    nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
    return model
