"""ConvNeXt-T (Liu et al., "A ConvNet for the 2020s", CVPR 2022; timm ``convnext_tiny``).

    x (batch, h, w, in_channels) -> stem: 4x4/4 conv -> LayerNorm
    -> 4 stages; stages 2.. start with LayerNorm -> 2x2/2 conv (``downsample``); then blocks:
       x + drop_path(gamma * fc2(GELU(fc1(LayerNorm(dwconv7x7(x))))))
    -> global mean -> LayerNorm = features (batch, num_features) -> dropout -> Linear = logits

Facts from timm ``convnext.py`` (``ConvNeXt`` defaults = ``convnext_tiny``): depths (3, 3, 9, 3), dims
(96, 192, 384, 768); every conv and Linear has a bias; LayerNorm eps 1e-6 over the channels (timm
``LayerNorm`` / ``LayerNorm2d``: the same op on NHWC); exact (erf) GELU; MLP width ``int(4 * dim)``;
layer scale ``gamma`` initialised to 1e-6; head = pool -> LayerNorm -> dropout -> fc (timm
``NormMlpClassifierHead``, ``head_norm_first=False``); stochastic depth rates rise linearly from 0
to ``drop_path_rate`` over all blocks (timm default rate 0) and act in training only. Init: convs
and Linears N(0, 0.02) (timm's ``trunc_normal_(std=.02)`` cuts at +-2 absolute, i.e. 100 sigma:
a plain normal), biases 0.

Names follow timm (``stem.0``, ``stages.1.downsample.1``, ``stages.2.blocks.4.mlp.fc1``,
``...gamma``, ``head.norm``, ``head.fc``), so ``jaxaudio.convert.timm`` maps a state dict by name.
The smallest input is 32 x 32 (overall stride 32).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.base import ZooEntry
from jaxaudio.models.cnn_zoo.layers import gelu_exact, global_avg_pool
from jaxaudio.nn.cnn import as_rngs

INIT = nnx.initializers.normal(0.02)   # timm _init_weights: trunc_normal_(std=.02) (module docstring)
ZEROS = nnx.initializers.zeros


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
    """Defaults: timm ``convnext_tiny``."""

    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.0                 # dropout before head.fc (timm ``drop_rate``, default 0)
    depths: tuple[int, ...] = (3, 3, 9, 3)  # blocks per stage (convnext_tiny)
    dims: tuple[int, ...] = (96, 192, 384, 768)  # channels per stage (convnext_tiny)
    kernel_size: int = 7                   # depthwise conv (timm ``kernel_sizes``)
    patch_size: int = 4                    # stem conv kernel = stride (timm ``patch_size``)
    mlp_ratio: float = 4.0                 # timm
    ls_init_value: float = 1e-6            # layer-scale gamma init (timm)
    drop_path_rate: float = 0.0            # stochastic depth at the last block (timm default 0)
    norm_eps: float = 1e-6                 # timm LayerNorm / LayerNorm2d default eps

    def __post_init__(self):
        object.__setattr__(self, "depths", tuple(int(v) for v in self.depths))
        object.__setattr__(self, "dims", tuple(int(v) for v in self.dims))

        def bad(key, problem):
            raise ConfigError(f"ConvNeXtConfig.{key}: {problem}")

        for key in ("num_classes", "in_channels", "kernel_size", "patch_size"):
            if int(getattr(self, key)) < 1:
                bad(key, f"must be a positive integer, got {getattr(self, key)!r}")
        if not self.depths or len(self.depths) != len(self.dims):
            bad("depths", f"needs one depth per stage width; got {self.depths!r} for dims {self.dims!r}")
        if min(self.depths) < 1 or min(self.dims) < 1:
            bad("depths", f"depths and dims must be positive; got {self.depths!r}, {self.dims!r}")
        if self.kernel_size % 2 == 0:
            bad("kernel_size", f"must be odd (same-size padding), got {self.kernel_size}")
        for key in ("drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                bad(key, f"must be in [0, 1), got {getattr(self, key)}")
        if self.mlp_ratio <= 0 or self.norm_eps <= 0:
            bad("mlp_ratio", f"mlp_ratio and norm_eps must be positive, got {self.mlp_ratio}, {self.norm_eps}")


def _layer_norm(ch: int, eps: float, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # use_fast_variance=False: E[x^2] - E[x]^2 loses digits on the stem's large-mean activations.
    return nnx.LayerNorm(ch, epsilon=eps, use_fast_variance=False, rngs=rngs)


def drop_path(x: jax.Array, rate: float, *, train: bool, rngs) -> jax.Array:
    """Stochastic depth (timm ``DropPath``): zero a whole sample's branch with probability ``rate``
    and scale the kept ones by ``1 / (1 - rate)``; the identity in eval or at rate 0."""
    if not train or rate == 0.0:
        return x
    rngs = as_rngs(rngs)
    if rngs is None:
        raise ConfigError("ConvNeXt: drop_path_rate > 0 needs rngs (a key or nnx.Rngs) in train mode")
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rngs.dropout(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0)


class Mlp(nnx.Module):
    """timm ``Mlp``: ``fc1`` -> exact GELU -> ``fc2`` over the channels."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, kernel_init=INIT, bias_init=ZEROS, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, kernel_init=INIT, bias_init=ZEROS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu_exact(self.fc1(x)))


class Block(nnx.Module):
    """timm ``ConvNeXtBlock`` (channels-last MLP form, ``conv_mlp=False``)."""

    def __init__(self, dim: int, cfg: ConvNeXtConfig, drop_rate: float, *, rngs: nnx.Rngs):
        k = cfg.kernel_size
        self.conv_dw = nnx.Conv(dim, dim, (k, k), padding=((k // 2, k // 2),) * 2, feature_group_count=dim,
                                kernel_init=INIT, bias_init=ZEROS, rngs=rngs)
        self.norm = _layer_norm(dim, cfg.norm_eps, rngs=rngs)
        self.mlp = Mlp(dim, int(cfg.mlp_ratio * dim), rngs=rngs)
        self.gamma = nnx.Param(jnp.full((dim,), cfg.ls_init_value, jnp.float32))
        self.drop_rate = drop_rate

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        y = self.mlp(self.norm(self.conv_dw(x))) * self.gamma[...]
        return x + drop_path(y, self.drop_rate, train=train, rngs=rngs)


class Stage(nnx.Module):
    """timm ``ConvNeXtStage``: ``downsample`` = [LayerNorm, 2x2/2 conv] when the width or stride
    changes (stages 2..; stage 1 follows the stem at the same width: none), then ``blocks``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, depth: int, cfg: ConvNeXtConfig,
                 drop_rates: list[float], *, rngs: nnx.Rngs):
        k = 2 if stride > 1 else 1
        self.downsample = nnx.List([
            _layer_norm(in_ch, cfg.norm_eps, rngs=rngs),
            nnx.Conv(in_ch, out_ch, (k, k), strides=stride, padding="VALID", kernel_init=INIT, bias_init=ZEROS,
                     rngs=rngs)]) if in_ch != out_ch or stride > 1 else None
        self.blocks = nnx.List([Block(out_ch, cfg, rate, rngs=rngs) for rate in drop_rates[:depth]])

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        if self.downsample is not None:
            x = self.downsample[1](self.downsample[0](x))
        for block in self.blocks:
            x = block(x, train=train, rngs=rngs)
        return x


class Head(nnx.Module):
    """timm ``NormMlpClassifierHead`` without its hidden layer: ``norm`` on the pooled features, ``fc``."""

    def __init__(self, dim: int, num_classes: int, eps: float, *, rngs: nnx.Rngs):
        self.norm = _layer_norm(dim, eps, rngs=rngs)
        self.fc = nnx.Linear(dim, num_classes, kernel_init=INIT, bias_init=ZEROS, rngs=rngs)


class ConvNeXt(nnx.Module):
    """ConvNeXt (module docstring): ``stem`` (conv, LayerNorm), ``stages``, ``head``."""

    def __init__(self, cfg: ConvNeXtConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        p = cfg.patch_size
        self.stem = nnx.List([
            nnx.Conv(cfg.in_channels, cfg.dims[0], (p, p), strides=p, padding="VALID", kernel_init=INIT,
                     bias_init=ZEROS, rngs=rngs),
            _layer_norm(cfg.dims[0], cfg.norm_eps, rngs=rngs)])
        rates = np.linspace(0.0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        stages, ch, start = [], cfg.dims[0], 0
        for i, (depth, dim) in enumerate(zip(cfg.depths, cfg.dims)):
            stages.append(Stage(ch, dim, 1 if i == 0 else 2, depth, cfg, rates[start:start + depth], rngs=rngs))
            ch, start = dim, start + depth
        self.stages = nnx.List(stages)
        self.num_features = ch
        self.head = Head(ch, cfg.num_classes, cfg.norm_eps, rngs=rngs)

    def features(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """Pooled, LayerNorm-ed features (timm ``forward_head(pre_logits=True)``); ``rngs`` only
        matters with ``drop_path_rate > 0`` in training."""
        cfg, stride = self.cfg, self.cfg.patch_size * 2 ** (len(self.cfg.dims) - 1)
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels or min(x.shape[1:3]) < stride:
            raise ShapeError(f"expected images (batch, h, w, {cfg.in_channels}) with h, w >= {stride} (the overall "
                             f"stride), got shape {x.shape}")
        x = self.stem[1](self.stem[0](x))
        for stage in self.stages:
            x = stage(x, train=train, rngs=rngs)
        return self.head.norm(global_avg_pool(x))

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        rngs = as_rngs(rngs)
        x = self.features(x, train=train, rngs=rngs)
        if train and self.cfg.drop_rate > 0.0:
            x = nnx.Dropout(self.cfg.drop_rate)(x, deterministic=False, rngs=rngs)
        return self.head.fc(x)


# ``tiny``: our choice (~0.2 M parameters: one block per stage but two in stage 3, 1/6 of the widths).
PRESETS = {
    "tiny": ConvNeXtConfig(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)),
    "published": ConvNeXtConfig(),
}

ENTRIES = {
    "convnext_tiny": ZooEntry(name="convnext_tiny", model=ConvNeXt, presets=PRESETS, timm_name="convnext_tiny",
                              classifier="head.fc", min_size=32),
}
