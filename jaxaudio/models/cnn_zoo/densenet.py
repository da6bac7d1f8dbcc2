"""DenseNet-BC (Huang et al., "Densely Connected Convolutional Networks", arXiv 1608.06993) as timm's
``densenet121`` builds it, so timm / torchvision weights load by name.

    features.conv0 (7x7/2, pad 3) -> norm0 (BN + ReLU) -> pool0 (max 3/2, pad 1)
    -> denseblock1 -> transition1 -> ... -> denseblock4 -> norm5 (BN + ReLU)
    -> global average pool -> dropout (head_drop) -> classifier

A dense layer is pre-activation: ``norm1 -> conv1 (1x1, bn_size * growth) -> norm2 -> conv2
(3x3, growth)`` on the concatenation of the block's input and every earlier layer's output, and
adds ``growth`` channels. A transition halves the channels and the side: ``norm -> conv (1x1) ->
avg pool 2/2``. timm makes each norm a ``BatchNormAct2d`` (BatchNorm and ReLU in one module,
PyTorch's eps 1e-5 / momentum 0.1); its parameters sit under the norm's own name
(``features.denseblock1.denselayer1.norm1.weight``), so ours is an ``nnx.BatchNorm`` of that name
with the ReLU applied after it. Every attribute name is timm's but one: timm's ``features``
Sequential is our ``trunk`` (``features`` is the zoo protocol's pooled-features method), which
``rename`` maps back.

Convs are initialised as timm does (``kaiming_normal_``: normal with variance 2 / fan_in), the
classifier as PyTorch's Linear (uniform +-1 / sqrt(fan_in)) with timm's zero bias. Kernels are drawn flat,
then reshaped: on CPU, jax 0.10's partitionable threefry compiles a 4-D draw ~50x slower. A side
of 29 is the smallest the published stem and three transitions leave a 1x1 map for.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.base import ZooEntry
from jaxaudio.models.cnn_zoo.layers import BN_DECAY, BN_EPS, avg_pool_torch, global_avg_pool, max_pool_torch
from jaxaudio.nn.cnn import as_rngs


def kaiming_normal(key, shape, dtype=jnp.float32):
    """torch ``kaiming_normal_`` (fan_in, ReLU gain) for an HWIO / (in, out) kernel, drawn flat."""
    std = math.sqrt(2.0 / math.prod(shape[:-1]))
    return (std * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)


def torch_linear_uniform(key, shape, dtype=jnp.float32):
    """torch ``nn.Linear``'s default weight init: uniform +-1 / sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


@dataclasses.dataclass(frozen=True)
class DenseNetConfig:
    """Sizes of timm's ``DenseNet`` (defaults: ``densenet121``).

    growth_rate: channels each dense layer adds (the paper's k).
    block_config: dense layers per block; a transition follows every block but the last.
    bn_size: the bottleneck 1x1 conv has ``bn_size * growth_rate`` channels.
    stem_channels: conv0's width; None = ``2 * growth_rate`` (timm's ``num_init_features``).
    proj_drop_rate: dropout on each dense layer's new features (timm ``proj_drop_rate``).
    """

    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.0                        # timm: head dropout before the classifier (default 0)
    growth_rate: int = 32                         # timm densenet121
    block_config: tuple[int, ...] = (6, 12, 24, 16)   # timm densenet121
    bn_size: int = 4                              # timm default
    stem_channels: Optional[int] = None           # timm: growth_rate * 2
    proj_drop_rate: float = 0.0                   # timm default
    bn_eps: float = BN_EPS                        # timm BatchNormAct2d: PyTorch's 1e-5

    def __post_init__(self):
        object.__setattr__(self, "block_config", tuple(int(n) for n in self.block_config))
        for key in ("num_classes", "in_channels", "growth_rate", "bn_size"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"DenseNetConfig.{key} must be a positive integer, got {getattr(self, key)!r}")
        if not self.block_config or min(self.block_config) < 1:
            raise ConfigError(f"DenseNetConfig.block_config={self.block_config}; expected positive layer counts")
        if self.stem_channels is not None and self.stem_channels < 1:
            raise ConfigError(f"DenseNetConfig.stem_channels must be positive or None, got {self.stem_channels}")
        for key in ("drop_rate", "proj_drop_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"DenseNetConfig.{key}={getattr(self, key)}; expected a rate in [0, 1)")

    @property
    def init_features(self) -> int:
        return self.stem_channels if self.stem_channels is not None else 2 * self.growth_rate


def min_input_size(cfg: DenseNetConfig) -> int:
    """The smallest square side leaving a non-empty map after the last transition (29 for 4 blocks)."""
    side = 1
    while True:
        n = (side + 6 - 7) // 2 + 1          # conv0 7x7/2 pad 3
        n = (n + 2 - 3) // 2 + 1             # pool0 3/2 pad 1
        for _ in range(len(cfg.block_config) - 1):
            n //= 2                          # transition avg pool 2/2
        if n >= 1:
            return side
        side += 1


def _bn(cfg: DenseNetConfig, channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, epsilon=cfg.bn_eps, momentum=BN_DECAY, rngs=rngs)


def _norm_act(norm: nnx.BatchNorm, x: jax.Array, train: bool) -> jax.Array:
    """timm's BatchNormAct2d: BatchNorm then ReLU."""
    return jax.nn.relu(norm(x, use_running_average=not train))


def _conv(in_ch: int, out_ch: int, kernel: int, rngs: nnx.Rngs, padding: int = 0) -> nnx.Conv:
    return nnx.Conv(in_ch, out_ch, (kernel, kernel), padding=((padding, padding),) * 2, use_bias=False,
                    kernel_init=kaiming_normal, rngs=rngs)


class DenseLayer(nnx.Module):
    def __init__(self, cfg: DenseNetConfig, in_ch: int, *, rngs: nnx.Rngs):
        width = cfg.bn_size * cfg.growth_rate
        self.norm1 = _bn(cfg, in_ch, rngs)
        self.conv1 = _conv(in_ch, width, 1, rngs)
        self.norm2 = _bn(cfg, width, rngs)
        self.conv2 = _conv(width, cfg.growth_rate, 3, rngs, padding=1)
        self.drop_rate = cfg.proj_drop_rate

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        x = self.conv1(_norm_act(self.norm1, x, train))
        x = self.conv2(_norm_act(self.norm2, x, train))
        if not train or self.drop_rate == 0:
            return x
        # nnx.Dropout's mask, drawn flat: a 4-D draw compiles ~10x slower on CPU (module docstring)
        keep = jax.random.bernoulli(rngs.dropout(), 1.0 - self.drop_rate, (x.size,)).reshape(x.shape)
        return jnp.where(keep, x / (1.0 - self.drop_rate), 0.0)


class DenseBlock(nnx.Module):
    """``denselayer1 .. denselayerN``; returns the input and every layer's output, concatenated."""

    def __init__(self, cfg: DenseNetConfig, num_layers: int, in_ch: int, *, rngs: nnx.Rngs):
        self.layer_names = tuple(f"denselayer{i + 1}" for i in range(num_layers))
        for i, name in enumerate(self.layer_names):
            setattr(self, name, DenseLayer(cfg, in_ch + i * cfg.growth_rate, rngs=rngs))
        self.out_channels = in_ch + num_layers * cfg.growth_rate

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        feats = [x]
        for name in self.layer_names:
            feats.append(getattr(self, name)(jnp.concatenate(feats, axis=-1), train=train, rngs=rngs))
        return jnp.concatenate(feats, axis=-1)


class DenseTransition(nnx.Module):
    def __init__(self, cfg: DenseNetConfig, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
        self.norm = _bn(cfg, in_ch, rngs)
        self.conv = _conv(in_ch, out_ch, 1, rngs)

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        return avg_pool_torch(self.conv(_norm_act(self.norm, x, train)), 2, 2)   # timm AvgPool2d(2, 2)


class DenseFeatures(nnx.Module):
    """timm's ``features`` Sequential: stem, blocks and transitions, norm5 (with its ReLU)."""

    def __init__(self, cfg: DenseNetConfig, *, rngs: nnx.Rngs):
        width = cfg.init_features
        self.conv0 = nnx.Conv(cfg.in_channels, width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                              kernel_init=kaiming_normal, rngs=rngs)
        self.norm0 = _bn(cfg, width, rngs)
        stages = []
        for i, num_layers in enumerate(cfg.block_config):
            block = DenseBlock(cfg, num_layers, width, rngs=rngs)
            setattr(self, f"denseblock{i + 1}", block)
            stages.append(f"denseblock{i + 1}")
            width = block.out_channels
            if i != len(cfg.block_config) - 1:
                setattr(self, f"transition{i + 1}", DenseTransition(cfg, width, width // 2, rngs=rngs))
                stages.append(f"transition{i + 1}")
                width //= 2
        self.stage_names = tuple(stages)
        self.norm5 = _bn(cfg, width, rngs)
        self.out_channels = width

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        x = max_pool_torch(_norm_act(self.norm0, self.conv0(x), train), 3, 2, padding=1)   # pool0
        for name in self.stage_names:
            x = getattr(self, name)(x, train=train, rngs=rngs)
        return _norm_act(self.norm5, x, train)


class DenseNet(nnx.Module):
    """``__call__(x (batch, h, w, in_channels), *, train, rngs=None) -> logits``. Parameter paths are
    timm's (``classifier``, ``features.denseblock2.denselayer3.conv1``) except that timm's
    ``features`` Sequential is our ``trunk``: ``features`` is the zoo protocol's pooled-features
    method (``rename`` maps the prefix back)."""

    def __init__(self, cfg: DenseNetConfig = DenseNetConfig(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.trunk = DenseFeatures(cfg, rngs=rngs)
        self.num_features = self.trunk.out_channels
        self.min_size = min_input_size(cfg)
        self.head_drop = nnx.Dropout(cfg.drop_rate)
        self.classifier = nnx.Linear(self.num_features, cfg.num_classes, kernel_init=torch_linear_uniform,
                                     bias_init=nnx.initializers.zeros, rngs=rngs)

    def forward_features(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """The last feature map ``(batch, h', w', num_features)``, after norm5's ReLU."""
        cfg = self.cfg
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ShapeError(f"DenseNet input has shape {tuple(x.shape)}; expected (batch, h, w, {cfg.in_channels})")
        if min(x.shape[1:3]) < self.min_size:
            raise ShapeError(f"DenseNet input {tuple(x.shape[1:3])} is smaller than {self.min_size}x{self.min_size}, "
                             f"the least the stem and {len(cfg.block_config) - 1} transitions leave a map for")
        return self.trunk(x, train=train, rngs=as_rngs(rngs))

    def features(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """Pooled pre-logits ``(batch, num_features)``; ``rngs`` only for ``proj_drop_rate`` in training."""
        return global_avg_pool(self.forward_features(x, train=train, rngs=rngs))

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        cfg = self.cfg
        rngs = as_rngs(rngs)
        if train and max(cfg.drop_rate, cfg.proj_drop_rate) > 0 and rngs is None:
            raise ConfigError(f"drop_rate={cfg.drop_rate} / proj_drop_rate={cfg.proj_drop_rate} need `rngs` "
                              f"(a key) when train=True")
        x = self.features(x, train=train, rngs=rngs)
        return self.classifier(self.head_drop(x, deterministic=not train, rngs=rngs))


def rename(path: str) -> str:
    """Our module path -> timm's: ``trunk`` is timm's ``features``."""
    if path == "trunk" or path.startswith("trunk."):
        return "features" + path[len("trunk"):]
    return path


# tiny (our choice): growth 16, two layers per block, every part of the published design kept; ~0.1 M
# parameters with 45 classes, 64 features; a batch of 32 64x64 images trains in ~0.1 s on one core.
TINY = DenseNetConfig(growth_rate=16, block_config=(2, 2, 2, 2))
PUBLISHED = DenseNetConfig()   # timm densenet121

ENTRIES = {
    "densenet121": ZooEntry(name="densenet121", model=DenseNet, presets={"tiny": TINY, "published": PUBLISHED},
                            timm_name="densenet121", rename=rename, classifier="classifier",
                            min_size=min_input_size(PUBLISHED)),
}
