"""The authors' AST-SED head weights (Transformer4SED ``AST_SED``, PyTorch) -> our ``ASTSED``.

Everything after the encoder, by the reference's names (``src/models/ast/ast_models.py``)::

    ours                          AST_SED
    out_norm                      out_norm
    fte/tag_embed                 linear_emb                       (Linear 1 -> dim)
    fte/blocks/i/norm1, norm2     frequency_transformer.i.norm1, norm2
    fte/blocks/i/attention/query, key, value   frequency_transformer.i.attn.qkv (rows q | k | v, no bias)
    fte/blocks/i/attention/out    frequency_transformer.i.attn.proj
    fte/blocks/i/mlp/fc_in, fc_out             frequency_transformer.i.mlp.fc1, fc2
    fte/norm                      frequency_transformer_norm
    gru/layers/k (w_ih, w_hh, b_ih, b_hh)      GRU.weight_ih_lk, ... and the _reverse direction, stacked
                                                (``nn/gru.py``'s layout: transposed, forward first)
    classifier                    classifier

The encoder comes from a Hugging Face AST file (``convert/ast.load_ast``); the reference's own
``patch_transformer.v.*`` tensors (timm names) are not read here. The walk and its errors for
missing, unused and misshapen tensors are ``convert/timm.py``'s ``timm_to_nnx``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxaudio.convert.timm import timm_to_nnx
from jaxaudio.errors import CheckpointError
from jaxaudio.models.astsed import ASTSED

_QKV = ("query", "key", "value")
_FTE_BLOCK = {"attention.out": "attn.proj", "mlp.fc_in": "mlp.fc1", "mlp.fc_out": "mlp.fc2"}


def _fte_rename(ours: str) -> str:
    if ours == "tag_embed":
        return "linear_emb"
    if ours == "norm":
        return "frequency_transformer_norm"
    _, index, rest = ours.split(".", 2)   # blocks.<i>.<rest>
    if rest.startswith("attention.") and rest.split(".")[1] in _QKV:
        return f"frequency_transformer.{index}.attn.{rest.split('.')[1]}"   # split from qkv below
    return f"frequency_transformer.{index}.{_FTE_BLOCK.get(rest, rest)}"


def _split_qkv(tensors: dict, source: str) -> dict:
    """``frequency_transformer.i.attn.qkv.weight (3d, d)`` -> ``...attn.query/key/value.weight``."""
    out = {}
    for name, array in tensors.items():
        if not name.endswith(".attn.qkv.weight"):
            if name.endswith(".attn.qkv.bias"):
                raise CheckpointError(f"{source}: {name}: the FTE blocks have no qkv bias (timm 0.4.5 Block default)")
            out[name] = array
            continue
        if array.ndim != 2 or array.shape[0] != 3 * array.shape[1]:
            raise CheckpointError(f"{source}: {name} has shape {array.shape}; expected (3 * dim, dim)")
        stem, d = name[: -len("qkv.weight")], array.shape[1]
        for i, part in enumerate(_QKV):
            out[f"{stem}{part}.weight"] = array[i * d:(i + 1) * d]
    return out


def _stack_gru(tensors: Mapping[str, np.ndarray], layers: int, source: str) -> dict:
    """``GRU.weight_ih_l{k}`` (+ ``_reverse``) -> ``GRU.l{k}.w_ih`` (dirs, in, 3H) and so on."""
    out = {}
    for k in range(layers):
        for ours, torch_name, transpose in (("w_ih", "weight_ih", True), ("w_hh", "weight_hh", True),
                                            ("b_ih", "bias_ih", False), ("b_hh", "bias_hh", False)):
            names = [f"GRU.{torch_name}_l{k}", f"GRU.{torch_name}_l{k}_reverse"]
            missing = [n for n in names if n not in tensors]
            if missing:
                raise CheckpointError(f"{source}: {', '.join(missing)} not found (a 2-direction GRU of "
                                      f"{layers} layers is expected)")
            arrays = [np.asarray(tensors[n], np.float32) for n in names]
            out[f"GRU.l{k}.{ours}"] = np.stack([a.T for a in arrays] if transpose else arrays)
    return out


def astsed_head_from_torch(state_dict: Mapping[str, np.ndarray], model: ASTSED, *, prefix: str = "",
                           source: str = "state dict") -> ASTSED:
    """Load the head tensors of ``state_dict`` (numpy arrays, AST_SED names under ``prefix``) into
    ``model`` in place and return it; ``patch_transformer.*`` (the encoder) is ignored."""
    tensors = {k[len(prefix):]: np.asarray(v) for k, v in state_dict.items()
               if k.startswith(prefix) and not k[len(prefix):].startswith("patch_transformer.")}
    cfg = model.cfg
    if cfg.freq_pool == "fte":
        fte = _split_qkv({k: v for k, v in tensors.items() if k.startswith(("linear_emb.", "frequency_transformer"))},
                         source)
        timm_to_nnx(fte, model.fte, rename=_fte_rename, source=source)
    gru = {k: v for k, v in tensors.items() if k.startswith("GRU.")}
    extra = sorted(set(gru) - {f"GRU.{w}_l{k}{r}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                               for k in range(cfg.gru_layers) for r in ("", "_reverse")})
    if extra:
        raise CheckpointError(f"{source}: {len(extra)} GRU tensors have no place in a {cfg.gru_layers}-layer GRU, "
                              f"e.g. {', '.join(extra[:3])}")
    timm_to_nnx(_stack_gru(gru, cfg.gru_layers, source), model.gru,
                rename=lambda ours: "GRU.l" + ours.split(".")[1], source=source)
    for name in ("out_norm", "classifier"):
        part = {k: v for k, v in tensors.items() if k.startswith(name + ".")}
        timm_to_nnx(part, getattr(model, name), rename=lambda ours, name=name: name, source=source)
    return model
