"""Blocks every CNN-zoo member shares: conv -> BatchNorm -> activation with PyTorch's padding and
BatchNorm conventions, and the pooled classifier head.

Why PyTorch's conventions: zoo members import timm / torchvision weights, and a converted model
must compute what the reference computes. So padding is explicit per side (XLA's 'SAME' puts the
odd pad on the right for stride 2 and shifts every window), and BatchNorm defaults to PyTorch's
``eps=1e-5, momentum=0.1`` (NNX's momentum is the running average's decay: 0.9). Images are
NHWC ``(batch, height, width, channels)``.

Attribute names follow timm's module names where a member mirrors a timm model, so
``jaxaudio/convert/timm.py`` maps weights by name (``layer1.0.conv1.weight`` ->
``layer1[0].conv1.kernel``) instead of by hand-written tables.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError

BN_EPS = 1e-5          # torch.nn.BatchNorm2d default
BN_DECAY = 0.9         # torch momentum 0.1


def gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)    # torch.nn.GELU's default (erf)


ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu, "relu6": jax.nn.relu6, "silu": jax.nn.silu, "swish": jax.nn.silu,
    "gelu": gelu_exact, "identity": lambda x: x,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def torch_padding(kernel: Sequence[int], padding=None, dilation: int = 1) -> tuple:
    """Per-side padding as PyTorch's ``Conv2d(padding=p)``; default ``dilation * (k - 1) // 2``."""
    if padding is None:
        padding = tuple(dilation * (k - 1) // 2 for k in kernel)
    elif isinstance(padding, int):
        padding = (padding,) * len(kernel)
    return tuple((p, p) for p in padding)    # tuples: the graphdef must hash


def pair(k) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else tuple(k)


class ConvBN(nnx.Module):
    """``conv`` (no bias) -> ``bn`` -> activation; ``groups=in_ch`` is a depthwise conv.

    Names ``conv`` / ``bn`` match timm's ``ConvNormAct`` children (``conv``, ``bn``); members whose
    reference names its parts otherwise keep separate ``nnx.Conv`` / ``nnx.BatchNorm`` attributes.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel=3, stride=1, *, groups: int = 1, padding=None,
                 act: str = "relu", bn_eps: float = BN_EPS, rngs: nnx.Rngs):
        kernel = pair(kernel)
        self.conv = nnx.Conv(in_ch, out_ch, kernel, strides=stride, padding=torch_padding(kernel, padding),
                             feature_group_count=groups, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(out_ch, epsilon=bn_eps, momentum=BN_DECAY, rngs=rngs)
        self.act_name = act

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return activation(self.act_name)(self.bn(self.conv(x), use_running_average=not train))


def global_avg_pool(x: jax.Array) -> jax.Array:
    """``(batch, h, w, c) -> (batch, c)``."""
    return jnp.mean(x, axis=(1, 2))


def max_pool_torch(x: jax.Array, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> jax.Array:
    """``nn.MaxPool2d(kernel, stride, padding, ceil_mode)``: padding with -inf, the ceil mode's
    extra window only where it starts inside the (left-padded) input."""
    h, w = x.shape[1:3]
    pads = []
    for n in (h, w):
        lo = hi = padding
        if ceil_mode:
            out = -(-(n + 2 * padding - kernel) // stride) + 1
            if (out - 1) * stride >= n + padding:
                out -= 1
            hi = max(padding, (out - 1) * stride + kernel - n - padding)
        pads.append((lo, hi))
    return nnx.max_pool(jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf),
                        (kernel, kernel), strides=(stride, stride), padding="VALID")


def avg_pool_torch(x: jax.Array, kernel: int, stride: int, padding: int = 0,
                   count_include_pad: bool = True) -> jax.Array:
    """``nn.AvgPool2d(kernel, stride, padding, count_include_pad)`` (floor mode)."""
    window, strides = (kernel, kernel), (stride, stride)
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    summed = jax.lax.reduce_window(jnp.pad(x, pad), 0.0, jax.lax.add, (1, *window, 1), (1, *strides, 1), "VALID")
    if count_include_pad or padding == 0:
        return summed / (kernel * kernel)
    ones = jnp.pad(jnp.ones((1, *x.shape[1:3], 1), x.dtype), pad)
    counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, *window, 1), (1, *strides, 1), "VALID")
    return summed / counts
