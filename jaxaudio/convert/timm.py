"""timm (or torchvision) CNN weights -> a CNN-zoo member, mapped by module name.

Zoo members name their submodules as timm does (``jaxaudio/models/cnn_zoo/layers.py``), so one
walk serves every architecture: each of our layers finds its tensors under its own dotted path
(after the member's ``rename``) with the layer type's leaf names and layouts:

    nnx.Conv       kernel (kh, kw, in/groups, out) <- weight (out, in/groups, kh, kw); bias
    nnx.Linear     kernel (in, out) <- weight (out, in) (or a 1x1 conv's (out, in, 1, 1)); bias
    nnx.BatchNorm  scale <- weight, bias, mean <- running_mean, var <- running_var
    nnx.LayerNorm  scale <- weight, bias       (timm's channels-first LayerNorm2d too)
    other Params   the same name and shape (e.g. ConvNeXt's layer scale ``gamma``)

Two mismatches are expected and handled, each logged: an input conv for another channel count
than the checkpoint's 3 (timm's ``adapt_input_conv``: summed for 1 channel, else the RGB kernel
repeated and scaled by 3 / channels), and a classifier for another class count (kept at its fresh
init: ImageNet's 1,000-way head means nothing for 45 scene classes). Anything else that does not
fit, a tensor of ours the checkpoint lacks, or a checkpoint tensor nothing took is an error
naming the file and the tensor, so a wrong mapping cannot load silently.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Mapping, Optional

import numpy as np
from flax import nnx

from jaxaudio.convert.nnx_targets import targets, torch_layout
from jaxaudio.convert.torch_io import load_torch_state_dict
from jaxaudio.errors import CheckpointError

_logger = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".num_batches_tracked",)


def adapt_input_conv(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """An RGB conv kernel ``(kh, kw, 3, out)`` for ``in_channels`` inputs, as timm adapts it."""
    if in_channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeat = math.ceil(in_channels / kernel.shape[2])
    return np.tile(kernel, (1, 1, repeat, 1))[:, :, :in_channels] * (kernel.shape[2] / in_channels)


def timm_to_nnx(state_dict: Mapping[str, np.ndarray], model: nnx.Module, *,
                rename: Optional[Callable[[str], str]] = None, classifier: str = "fc",
                skip_prefixes: tuple[str, ...] = (), source: str = "state dict") -> nnx.Module:
    """Load ``state_dict`` (timm names, numpy arrays) into ``model`` in place and return it;
    tensors under ``skip_prefixes`` (parts the member does not build) are dropped, with a log line."""
    tensors = {k: np.asarray(v) for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
    skipped = [k for k in tensors if k.startswith(tuple(skip_prefixes))]
    if skipped:
        _logger.info("%s: skipped %d tensors under %s (not built)", source, len(skipped), ", ".join(skip_prefixes))
        tensors = {k: v for k, v in tensors.items() if k not in set(skipped)}
    rename = rename or (lambda name: name)
    state = nnx.state(model)
    used: set[str] = set()
    missing: list[str] = []
    for target in targets(model, state):
        ours, leaf, kind = target.module, target.leaf, target.kind
        name = target.torch_name(rename(ours))
        if name not in tensors:
            missing.append(f"{name} (for {ours}.{leaf})")
            continue
        used.add(name)
        array = torch_layout(kind, leaf, tensors[name].astype(np.float32, copy=False))
        shape = target.shape
        if array.shape != shape:
            if kind is nnx.Conv and leaf == "kernel" and array.shape[2] == 3 and array.shape[:2] + array.shape[3:] \
                    == shape[:2] + shape[3:]:
                _logger.info("%s: %s adapted from 3 input channels to %d", source, name, shape[2])
                array = adapt_input_conv(array, shape[2])
            elif ours == classifier and kind is nnx.Linear and array.shape[-1:] != shape[-1:] \
                    and array.shape[:-1] == shape[:-1]:    # only the class count differs
                _logger.info("%s: %s has shape %s, the model's classifier %s: kept at its fresh init",
                             source, name, array.shape, shape)
                continue
            else:
                raise CheckpointError(f"{source}: {name} has shape {tensors[name].shape}; {ours}.{leaf} needs "
                                      f"{shape} (after layout change {array.shape})")
        target.assign(array)
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} tensors the model needs are not in the checkpoint, "
                              f"e.g. {', '.join(missing[:5])}")
    unused = sorted(set(tensors) - used)
    if unused:
        raise CheckpointError(f"{source}: {len(unused)} checkpoint tensors have no place in the model, "
                              f"e.g. {', '.join(unused[:5])}")
    nnx.update(model, state)
    return model


def load_timm(path: str, name: str, model: nnx.Module) -> nnx.Module:
    """A timm checkpoint file (``.safetensors`` or ``.pth`` read with ``weights_only``) of zoo member
    ``name`` into ``model`` (built from ``cnn_zoo.config(name, ...)``)."""
    from jaxaudio.models import cnn_zoo

    entry = cnn_zoo.entry(name)
    return timm_to_nnx(load_torch_state_dict(path), model, rename=entry.rename, classifier=entry.classifier,
                       skip_prefixes=entry.skip_prefixes, source=path)
