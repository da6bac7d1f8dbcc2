"""FunASR Paraformer weights (``model.pt`` / ModelScope ``model.pb``) -> ``jaxaudio.models.paraformer.Paraformer``.

FunASR names (``funasr/models/paraformer/model.py`` with ``ConformerEncoder``, ``ParaformerSANDecoder``,
``CifPredictor``, ``CTC``) map by module path; the encoder's table is in ``jaxaudio/nn/conformer.py``'s
docstring, the rest is::

    ctc.ctc_lo.{weight,bias}                         ctc/{kernel,bias}
    predictor.cif_conv1d.{weight,bias}               predictor/conv/{kernel,bias}
    predictor.cif_output.{weight,bias}               predictor/output/{kernel,bias}
    decoder.embed.0.weight                           decoder/embed/embedding           (V, d) as is
    decoder.decoders.N.{self_attn,src_attn}.linear_{q,k,v,out}.*
                                                     decoder/decoders/N/{self_attn,src_attn}/{query,key,value,out}/*
    decoder.decoders.N.feed_forward.w_{1,2}.*        decoder/decoders/N/feed_forward/{fc_in,fc_out}/*
    decoder.decoders.N.norm{1,2,3}.*                 decoder/decoders/N/norm{1,2,3}/{scale,bias}
    decoder.after_norm.*, decoder.output_layer.*     decoder/after_norm/*, decoder/output_layer/*

Layouts by our layer type: ``nnx.Linear`` kernel ``= W.T``; ``nnx.Conv`` kernel from torch's
``(O, I/groups, k)`` (Conv1d) -> ``(k, I/groups, O)`` or ``(O, I, kh, kw)`` (Conv2d) ->
``(kh, kw, I, O)``; ``nnx.LayerNorm`` / ``nnx.BatchNorm`` ``weight`` -> ``scale``,
``running_mean`` / ``running_var`` -> ``mean`` / ``var``; ``nnx.Embed`` ``weight`` -> ``embedding``;
other parameters (``pos_bias_u`` / ``pos_bias_v``) by name, as they are.

Dropped without a word: ``num_batches_tracked`` and the positional encodings' ``pe`` tables of old
checkpoints (FunASR's own load hook drops those; the tables are computed, not learned). Any other
checkpoint tensor that has no place in the model, a tensor of the model that the checkpoint lacks,
or a shape that does not fit is a ``CheckpointError`` naming them all, so a wrong config (block
count, sizes, vocabulary) cannot load silently.

What the state dict cannot tell: FunASR's ``rel_pos_type`` (the AISHELL-1 recipe runs FunASR's
default, "legacy", with the same parameters as "latest") and its padding conventions. Build the
model with ``funasr_config(cfg)`` (``rel_pos="legacy"``, ``funasr_padding=True``) to compute what
FunASR computes; ``load_funasr_checkpoint`` takes ``cfg`` as given.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

import numpy as np
from flax import nnx

from jaxaudio.convert.nnx_targets import targets, torch_layout
from jaxaudio.convert.torch_io import load_torch_state_dict, to_numpy
from jaxaudio.errors import CheckpointError
from jaxaudio.models.paraformer import Paraformer, ParaformerConfig

# Tensors a FunASR checkpoint may hold that are no parameters (BatchNorm's counter, old ``pe`` buffers).
IGNORED = re.compile(r"(^|\.)(num_batches_tracked|pe)$")

# Our dotted module path -> FunASR's, one rule per path segment pattern (applied in order).
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.embed\.conv1(?=\.|$)", "encoder.embed.conv.0"),
    (r"^encoder\.embed\.conv2(?=\.|$)", "encoder.embed.conv.2"),
    (r"^encoder\.embed\.out(?=\.|$)", "encoder.embed.out.0"),
    (r"\.attention(?=\.|$)", ".self_attn"),
    (r"\.(self_attn|src_attn)\.query(?=\.|$)", r".\1.linear_q"),
    (r"\.(self_attn|src_attn)\.key(?=\.|$)", r".\1.linear_k"),
    (r"\.(self_attn|src_attn)\.value(?=\.|$)", r".\1.linear_v"),
    (r"\.(self_attn|src_attn)\.out(?=\.|$)", r".\1.linear_out"),
    (r"\.fc_in(?=\.|$)", ".w_1"),
    (r"\.fc_out(?=\.|$)", ".w_2"),
    (r"^decoder\.embed(?=\.|$)", "decoder.embed.0"),
    (r"^ctc(?=\.|$)", "ctc.ctc_lo"),
    (r"^predictor\.conv(?=\.|$)", "predictor.cif_conv1d"),
    (r"^predictor\.output(?=\.|$)", "predictor.cif_output"),
)


def funasr_name(module_path: str) -> str:
    """Our dotted module path (``encoder.encoders.0.attention.query``) -> FunASR's prefix
    (``encoder.encoders.0.self_attn.linear_q``)."""
    for pattern, repl in _RENAMES:
        module_path = re.sub(pattern, repl, module_path)
    return module_path


def funasr_config(cfg: ParaformerConfig, rel_pos_type: str = "legacy") -> ParaformerConfig:
    """``cfg`` with the encoder options that make the model compute what FunASR computes:
    ``rel_pos`` = FunASR's ``rel_pos_type`` (its default and the AISHELL-1 recipe's: "legacy") and
    ``funasr_padding=True`` (FunASR's masks and conv padding; ``jaxaudio/nn/conformer.py``)."""
    encoder = dataclasses.replace(cfg.encoder, rel_pos=rel_pos_type, funasr_padding=True)
    return dataclasses.replace(cfg, encoder=encoder)


def paraformer_state_from_funasr(state_dict: Mapping, model: Paraformer, *, source: str = "state dict") -> Paraformer:
    """Load a FunASR Paraformer ``state_dict`` (``{name: torch tensor or numpy array}``, FunASR names)
    into ``model`` in place and return it. Raises ``CheckpointError`` listing every missing,
    unexpected or misshapen tensor (module docstring)."""
    tensors = {str(k): to_numpy(source, str(k), v) for k, v in state_dict.items() if not IGNORED.search(str(k))}
    state = nnx.state(model)
    used: set[str] = set()
    missing: list[str] = []
    misshapen: list[str] = []
    for target in targets(model, state):
        name = target.torch_name(funasr_name(target.module))
        if name not in tensors:
            missing.append(f"{name} (for {target.label})")
            continue
        used.add(name)
        array = torch_layout(target.kind, target.leaf, tensors[name].astype(np.float32))
        if array.shape != target.shape:
            misshapen.append(f"{name} {tuple(tensors[name].shape)} (needs {target.shape} after layout change, "
                             f"for {target.label})")
            continue
        target.assign(array)
    unused = sorted(set(tensors) - used)
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors the model needs are not in the checkpoint: {', '.join(missing)}")
    if unused:
        problems.append(f"{len(unused)} checkpoint tensors have no place in the model: {', '.join(unused)}")
    if misshapen:
        problems.append(f"{len(misshapen)} tensors have the wrong shape: {', '.join(misshapen)}")
    if problems:
        raise CheckpointError(f"{source} does not fit ParaformerConfig (check blocks, sizes, vocab_size): "
                              + "; ".join(problems))
    nnx.update(model, state)
    return model


def load_funasr_checkpoint(path: os.PathLike | str, cfg: ParaformerConfig, *, seed: int = 0) -> Paraformer:
    """A FunASR Paraformer checkpoint file (``model.pt``, ``model.pt.ep*`` with its ``state_dict``
    container, ModelScope ``model.pb``; read with ``weights_only``) -> a ``Paraformer(cfg)`` holding
    its weights. ``cfg`` as given: ``funasr_config(cfg)`` reproduces FunASR's numerics."""
    model = Paraformer(cfg, rngs=nnx.Rngs(seed))
    return paraformer_state_from_funasr(load_torch_state_dict(path), model, source=str(path))


__all__ = ["IGNORED", "funasr_name", "funasr_config", "paraformer_state_from_funasr", "load_funasr_checkpoint"]
