"""Read a PyTorch checkpoint into ``{name: numpy array}`` without running pickled code.

Checkpoints come from strangers, and a plain ``torch.load`` unpickles arbitrary objects, which
can execute code. So ``.pt``/``.pth``/``.ckpt`` files are read with ``weights_only=True`` (only
tensors, dicts, lists and numbers are rebuilt) and ``.safetensors`` files with ``safetensors``,
whose format holds no code at all. ``torch`` / ``safetensors`` are imported lazily: they belong
to the optional ``convert`` extra, and the rest of jaxaudio never needs them.
"""
from __future__ import annotations

import os
import pathlib
from typing import Mapping

import numpy as np

from jaxaudio.errors import CheckpointError

# Training frameworks nest the weights: Lightning under 'state_dict', DeiT/timm under 'model'.
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net")
# Wrappers that prefix every name: DataParallel/DDP ('module.') and torch.compile ('_orig_mod.').
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def to_numpy(path: str, name: str, value) -> np.ndarray:
    """A tensor (any float dtype, bf16 included) or array -> numpy; anything else is an error."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "is_floating_point"):  # a torch.Tensor
        tensor = value.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()  # numpy has no bfloat16; float32 holds every float16/bf16 value
        return tensor.numpy()
    raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")


def _unwrap(path: str, obj) -> Mapping:
    """Descend through training containers until a flat ``{name: tensor}`` mapping is left."""
    while isinstance(obj, Mapping):
        inner = [k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)]
        if not inner:
            return obj
        obj = obj[inner[0]]
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}; expected a state dict (name -> tensor)")


def _strip_wrapper_prefixes(names: list[str]) -> dict[str, str]:
    """Map each name to itself without a wrapper prefix that *every* name carries."""
    renamed = {n: n for n in names}
    for prefix in WRAPPER_PREFIXES:
        if renamed and all(n.startswith(prefix) for n in renamed.values()):
            renamed = {k: v[len(prefix):] for k, v in renamed.items()}
    return renamed


def _load_raw(path: str):
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as err:
            raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package") from err
        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own SafetensorError for bad headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(
            f"{path}: reading a PyTorch checkpoint needs torch (pip install 'jaxaudio[convert]')"
        ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for forbidden globals, RuntimeError for truncated zips
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch state dict with weights_only=True "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err


def load_torch_state_dict(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """Tensors of a ``.pt/.pth/.ckpt`` or ``.safetensors`` file as ``{name: numpy array}``.

    Unwraps ``state_dict`` / ``model`` containers and ``module.`` / ``_orig_mod.`` prefixes.
    Floating tensors come back as float32. Raises ``CheckpointError`` naming the file when it is
    missing, corrupt, would need code execution to unpickle, or holds something other than tensors.
    """
    path = str(path)
    if not pathlib.Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = _unwrap(path, _load_raw(path))
    if not obj:
        raise CheckpointError(f"{path}: the state dict is empty")
    renamed = _strip_wrapper_prefixes([str(k) for k in obj])
    return {renamed[str(k)]: to_numpy(path, str(k), v) for k, v in obj.items()}
