"""ResNet-50 (He et al. 2016, timm ``resnet50``) and the pre-activation ResNet-V2 (He et al., "Identity
Mappings in Deep Residual Networks", 2016; the paper's Keras ``ResNet152V2``, timm ``resnetv2_152``).

    x (batch, h, w, in_channels) -> 7x7/2 conv -> [BN, ReLU] -> 3x3/2 max pool
    -> stages of bottlenecks (the first block of stages 2.. has stride 2 on its 3x3 conv)
    -> [V2: BN, ReLU] -> global mean = features (batch, num_features) -> dropout -> Linear = logits

ResNet-50 is the post-activation "v1.5" bottleneck (conv-BN-ReLU, stride on the 3x3, ReLU after the
residual sum, a 1x1 conv + BN projection where shape changes), as torchvision's and timm's.
ResNet-V2 puts BN-ReLU *before* each conv; the projection of a stage's first block reads the
pre-activated input, the block sums without an activation, and one BN-ReLU follows the last stage.
timm's ``resnetv2_50`` / ``_101`` / ``_152`` are that net with plain BatchNorm and plain convs
(its BiT variants, ``resnetv2_*x*_bit``, use weight-standardised convs and GroupNorm: not these),
and every stage's first block has a projection, even stage 1 at stride 1 (timm ``PreActBottleneck``
takes ``proj_layer`` for block 0 unconditionally).

Attribute names are timm's module names (``layer1.0.downsample.0``, ``stages.2.blocks.5.norm3``,
``head.fc``), so ``jaxaudio.convert.timm.timm_to_nnx`` loads a timm state dict without a table.
timm's ResNet-V2 classifier is a 1x1 conv on the pooled map (``ClassifierHead(use_conv=True)``);
ours is the equivalent Linear (every zoo classifier is one), whose weight ``(classes, features, 1, 1)``
the converter reads as ``(classes, features)``.

Init (a from-scratch student starts as timm's would): convs Kaiming-normal fan-out (timm both
nets); ResNet-50's classifier PyTorch-default uniform and its last BN of each block zero-scaled
(timm ``zero_init_last=True``); ResNet-V2's classifier N(0, 0.01), bias 0 (timm ``_init_weights``).
"""
from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.base import ZooEntry
from jaxaudio.models.cnn_zoo.layers import BN_DECAY, BN_EPS, global_avg_pool, max_pool_torch, torch_padding
from jaxaudio.models.cnn_zoo.mbconv import make_divisible  # timm's channel rounding; ResNet-V2 sizes widths with it
from jaxaudio.nn.cnn import as_rngs, torch_uniform

KAIMING_FAN_OUT = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(fan_out, relu)


def _check(name: str, cfg) -> None:
    def bad(key, problem):
        raise ConfigError(f"{name}.{key}: {problem}")

    for key in ("num_classes", "in_channels", "stem_width"):
        if int(getattr(cfg, key)) < 1:
            bad(key, f"must be a positive integer, got {getattr(cfg, key)!r}")
    widths = cfg.planes if hasattr(cfg, "planes") else cfg.channels
    if not cfg.layers or len(cfg.layers) != len(widths):
        bad("layers", f"needs one depth per stage width; got {cfg.layers!r} for {widths!r}")
    if min(cfg.layers) < 1 or min(widths) < 1:
        bad("layers", f"depths and widths must be positive; got {cfg.layers!r}, {widths!r}")
    if not 0.0 <= cfg.drop_rate < 1.0:
        bad("drop_rate", f"must be in [0, 1), got {cfg.drop_rate}")


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Defaults: timm ``resnet50`` (``ResNet(Bottleneck, layers=[3, 4, 6, 3])``)."""

    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.0                  # dropout before the classifier (timm ``drop_rate``, default 0)
    layers: tuple[int, ...] = (3, 4, 6, 3)  # bottlenecks per stage (timm resnet50)
    planes: tuple[int, ...] = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x (timm ``channels``)
    stem_width: int = 64                    # timm: 64 (its 7x7 stem is always 64 wide; tiny: ours)
    zero_init_last: bool = True             # timm default: each block starts as the identity

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))
        object.__setattr__(self, "planes", tuple(int(v) for v in self.planes))
        _check("ResNetConfig", self)


@dataclasses.dataclass(frozen=True)
class ResNetV2Config:
    """Defaults: timm ``resnetv2_152`` (``layers=[3, 8, 36, 3]``, BatchNorm, plain convs), the
    paper's ResNet-152-V2."""

    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.0                  # dropout before the classifier (timm ``drop_rate``, default 0)
    layers: tuple[int, ...] = (3, 8, 36, 3)  # timm resnetv2_152 (resnetv2_50: 3, 4, 6, 3; _101: 3, 4, 23, 3)
    channels: tuple[int, ...] = (256, 512, 1024, 2048)  # block outputs (timm ResNetV2 ``channels``)
    stem_width: int = 64                    # timm ``stem_chs``
    bottle_ratio: float = 0.25              # bottleneck width = make_divisible(out * ratio) (timm)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        _check("ResNetV2Config", self)
        if self.bottle_ratio <= 0:
            raise ConfigError(f"ResNetV2Config.bottle_ratio: must be positive, got {self.bottle_ratio}")


def check_images(x: jax.Array, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[-1] != in_channels:
        raise ShapeError(f"expected images (batch, h, w, {in_channels}), got shape {x.shape}")


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
    """Bias-free conv with PyTorch's symmetric padding ``(k - 1) // 2`` (timm's for both nets)."""
    return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=stride, padding=torch_padding((kernel, kernel)),
                    use_bias=False, kernel_init=KAIMING_FAN_OUT, rngs=rngs)


def _bn(ch: int, *, rngs: nnx.Rngs, zero: bool = False) -> nnx.BatchNorm:
    init = nnx.initializers.zeros if zero else nnx.initializers.ones
    return nnx.BatchNorm(ch, epsilon=BN_EPS, momentum=BN_DECAY, scale_init=init, rngs=rngs)


def _dropout(x: jax.Array, rate: float, train: bool, rngs) -> jax.Array:
    if not train or rate == 0.0:
        return x
    if rngs is None:
        raise ConfigError("ResNet: drop_rate > 0 needs rngs (a key or nnx.Rngs) in train mode")
    return nnx.Dropout(rate)(x, deterministic=False, rngs=as_rngs(rngs))


# ----------------------------------------------------------------------------- ResNet-50


class Bottleneck(nnx.Module):
    """timm ``resnet.Bottleneck``: 1x1 -> 3x3 (stride) -> 1x1 (x4), each BN, ReLU after the sum."""

    def __init__(self, in_ch: int, planes: int, stride: int, *, zero_init_last: bool, rngs: nnx.Rngs):
        out = planes * 4
        self.conv1, self.bn1 = _conv(in_ch, planes, 1, rngs=rngs), _bn(planes, rngs=rngs)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride, rngs=rngs), _bn(planes, rngs=rngs)
        self.conv3, self.bn3 = _conv(planes, out, 1, rngs=rngs), _bn(out, rngs=rngs, zero=zero_init_last)
        # timm's ``downsample`` is nn.Sequential(conv, bn): an nnx.List gives the same ``.0`` / ``.1`` names.
        self.downsample = (nnx.List([_conv(in_ch, out, 1, stride, rngs=rngs), _bn(out, rngs=rngs)])
                           if stride != 1 or in_ch != out else None)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        frozen = not train
        y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=frozen))
        y = jax.nn.relu(self.bn2(self.conv2(y), use_running_average=frozen))
        y = self.bn3(self.conv3(y), use_running_average=frozen)
        if self.downsample is not None:
            x = self.downsample[1](self.downsample[0](x), use_running_average=frozen)
        return jax.nn.relu(y + x)


class ResNet(nnx.Module):
    """ResNet-50 family (module docstring); ``layer1`` ... ``layerN`` hold the stages."""

    def __init__(self, cfg: ResNetConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.conv1 = nnx.Conv(cfg.in_channels, cfg.stem_width, (7, 7), strides=2, padding=((3, 3), (3, 3)),
                              use_bias=False, kernel_init=KAIMING_FAN_OUT, rngs=rngs)
        self.bn1 = _bn(cfg.stem_width, rngs=rngs)
        ch = cfg.stem_width
        for i, (planes, depth) in enumerate(zip(cfg.planes, cfg.layers)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(Bottleneck(ch, planes, stride, zero_init_last=cfg.zero_init_last, rngs=rngs))
                ch = planes * 4
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
        self.num_features = ch
        init = torch_uniform(ch)   # timm leaves nn.Linear at PyTorch's default
        self.fc = nnx.Linear(ch, cfg.num_classes, kernel_init=init, bias_init=init, rngs=rngs)

    def features(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        check_images(x, self.cfg.in_channels)
        x = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        x = max_pool_torch(x, 3, 2, 1)
        for i in range(len(self.cfg.layers)):
            for block in getattr(self, f"layer{i + 1}"):
                x = block(x, train=train)
        return global_avg_pool(x)

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        return self.fc(_dropout(self.features(x, train=train), self.cfg.drop_rate, train, rngs))


# ----------------------------------------------------------------------------- ResNet-V2


class Projection(nnx.Module):
    """timm ``DownsampleConv`` with ``preact=True``: a 1x1 conv (stride), no norm."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = _conv(in_ch, out_ch, 1, stride, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class PreActBottleneck(nnx.Module):
    """timm ``resnetv2.PreActBottleneck``: [BN, ReLU, conv] x (1x1, 3x3 stride, 1x1) + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, mid: int, stride: int, *, project: bool, rngs: nnx.Rngs):
        self.downsample = Projection(in_ch, out_ch, stride, rngs=rngs) if project else None
        self.norm1, self.conv1 = _bn(in_ch, rngs=rngs), _conv(in_ch, mid, 1, rngs=rngs)
        self.norm2, self.conv2 = _bn(mid, rngs=rngs), _conv(mid, mid, 3, stride, rngs=rngs)
        self.norm3, self.conv3 = _bn(mid, rngs=rngs), _conv(mid, out_ch, 1, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        frozen = not train
        pre = jax.nn.relu(self.norm1(x, use_running_average=frozen))
        shortcut = self.downsample(pre) if self.downsample is not None else x
        y = self.conv1(pre)
        y = self.conv2(jax.nn.relu(self.norm2(y, use_running_average=frozen)))
        y = self.conv3(jax.nn.relu(self.norm3(y, use_running_average=frozen)))
        return y + shortcut


class Stage(nnx.Module):
    """timm ``ResNetStage``: ``blocks.0`` projects (stride), the rest keep the shape."""

    def __init__(self, in_ch: int, out_ch: int, depth: int, stride: int, bottle_ratio: float, *, rngs: nnx.Rngs):
        mid = make_divisible(out_ch * bottle_ratio)
        self.blocks = nnx.List([
            PreActBottleneck(in_ch if j == 0 else out_ch, out_ch, mid, stride if j == 0 else 1, project=j == 0,
                             rngs=rngs)
            for j in range(depth)])

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for block in self.blocks:
            x = block(x, train=train)
        return x


class Stem(nnx.Module):
    """timm ``stem.conv`` (7x7/2, no norm: the first block's ``norm1`` pre-activates it); the
    3x3/2 max pool (padding 1) follows in the model."""

    def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(in_ch, out_ch, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                             kernel_init=KAIMING_FAN_OUT, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return max_pool_torch(self.conv(x), 3, 2, 1)


class Head(nnx.Module):
    """timm ``ClassifierHead`` of ResNet-V2: ``head.fc`` (a 1x1 conv there, a Linear here)."""

    def __init__(self, in_ch: int, num_classes: int, *, rngs: nnx.Rngs):
        self.fc = nnx.Linear(in_ch, num_classes, kernel_init=nnx.initializers.normal(0.01),
                             bias_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc(x)


class ResNetV2(nnx.Module):
    """Pre-activation ResNet (module docstring): ``stem``, ``stages``, the final ``norm``, ``head``."""

    def __init__(self, cfg: ResNetV2Config, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.stem = Stem(cfg.in_channels, make_divisible(cfg.stem_width), rngs=rngs)
        ch, stages = make_divisible(cfg.stem_width), []
        for i, (out, depth) in enumerate(zip(cfg.channels, cfg.layers)):
            stages.append(Stage(ch, out, depth, 1 if i == 0 else 2, cfg.bottle_ratio, rngs=rngs))
            ch = out
        self.stages = nnx.List(stages)
        self.norm = _bn(ch, rngs=rngs)
        self.num_features = ch
        self.head = Head(ch, cfg.num_classes, rngs=rngs)

    def features(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        check_images(x, self.cfg.in_channels)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x, train=train)
        return global_avg_pool(jax.nn.relu(self.norm(x, use_running_average=not train)))

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        return self.head(_dropout(self.features(x, train=train), self.cfg.drop_rate, train, rngs))


# ----------------------------------------------------------------------------- registry

# ``tiny``: our choice, ~0.1 M parameters (one block per stage, 1/8 of the widths), for CPU runs.
RESNET50_PRESETS = {
    "tiny": ResNetConfig(layers=(1, 1, 1, 1), planes=(8, 16, 32, 64), stem_width=16),
    "published": ResNetConfig(),
}
RESNETV2_PRESETS = {
    "tiny": ResNetV2Config(layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=16),
    "published": ResNetV2Config(),                       # timm resnetv2_152 (the paper's ResNet152V2)
    "resnetv2_50": ResNetV2Config(layers=(3, 4, 6, 3)),  # timm resnetv2_50
    "resnetv2_101": ResNetV2Config(layers=(3, 4, 23, 3)),  # timm resnetv2_101
}
# The timm model each non-tiny preset equals (ZooEntry.timm_name names the ``published`` one).
RESNETV2_TIMM_NAMES = {"published": "resnetv2_152", "resnetv2_50": "resnetv2_50", "resnetv2_101": "resnetv2_101"}

ENTRIES = {
    "resnet50": ZooEntry(name="resnet50", model=ResNet, presets=RESNET50_PRESETS, timm_name="resnet50",
                         classifier="fc", min_size=32),
    "resnetv2": ZooEntry(name="resnetv2", model=ResNetV2, presets=RESNETV2_PRESETS, timm_name="resnetv2_152",
                         classifier="head.fc", min_size=32),
}
