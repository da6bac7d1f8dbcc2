"""InceptionV3 (Szegedy et al., "Rethinking the Inception Architecture", arXiv 1512.00567) as timm's
``inception_v3`` builds it, so timm / torchvision weights load by name.

    stem: Conv2d_1a_3x3 (/2) -> Conv2d_2a_3x3 -> Conv2d_2b_3x3 -> Pool1 (max 3/2)
          -> Conv2d_3b_1x1 -> Conv2d_4a_3x3 -> Pool2 (max 3/2)
    Mixed_5b..5d  InceptionA  (1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1), 35x35 at 299
    Mixed_6a      InceptionB  (3x3/2 | 1x1-3x3-3x3/2 | maxpool/2): the grid reduction to 17x17
    Mixed_6b..6e  InceptionC  (factorised 7x7: 1x7 / 7x1 chains)
    Mixed_7a      InceptionD  (grid reduction to 8x8)
    Mixed_7b, 7c  InceptionE  (expanded 1x3 | 3x1 filter banks)
    -> global average pool -> dropout -> fc

Every conv is timm's ``BasicConv2d`` (a ``ConvNormAct`` in timm 1.x): conv (no bias, padding 0
unless stated) -> BatchNorm (eps 1e-3, momentum 0.1) -> ReLU, with ``conv`` / ``bn`` children as
timm names them. Conv and fc kernels start as timm's: ``trunc_normal_(std=0.1)``, whose cut at
+-2 (absolute, 20 std) never bites, so a plain normal(0, 0.1); biases start at zero.
Branch outputs concatenate along channels in timm's order, which the next block's
weights depend on. The branch average pools are ``F.avg_pool2d(3, 1, 1)``, PyTorch's default
``count_include_pad=True`` (the zero padding counts in the border means), the stem's max pools are
unpadded 3/2. With the published stem a side of 75 is the smallest that still leaves a 1x1 map
after Mixed_7a.

The auxiliary classifier (timm's ``AuxLogits``, on Mixed_6e, used only in training as a
regulariser of the ImageNet run) is dropped: distillation uses the main logits, and a head that no
loss reads would only waste parameters. timm's ``inception_v3`` omits it too by default, but its
torchvision-ported checkpoint (``inception_v3.tv_in1k``) carries ``AuxLogits.*`` tensors: pass
such a state dict through ``drop_aux_logits`` first, which removes exactly those keys (and logs
how many), so the name-aligned import still refuses any other tensor it cannot place; ``load_timm``
does so for a checkpoint file.

The ``tiny`` preset keeps the structure (every block type, parallel branches concatenated) at an
eighth of the width with one block per repeated stage, and pads the stem's 3x3 convs
(``stem_padding=1``) so 64x64 inputs (down to 61) still reach Mixed_7c.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.base import ZooEntry
from jaxaudio.models.cnn_zoo.layers import (BN_DECAY, avg_pool_torch, global_avg_pool, max_pool_torch, pair,
                                            torch_padding)
from jaxaudio.nn.cnn import as_rngs

_logger = logging.getLogger(__name__)

AUX_PREFIX = "AuxLogits."


@dataclasses.dataclass(frozen=True)
class InceptionV3Config:
    """Sizes of timm's ``InceptionV3`` (defaults: ``inception_v3``) and the knobs of smaller variants.

    width: multiplies every conv's output channels (stem and branches; rounded, at least 1).
    stem_padding: padding of the stem's unpadded 3x3 convs (1a, 2a, 4a); timm 0.
    pool_features: one InceptionA block (Mixed_5b, 5c, ...) per entry, its pool branch's width.
    channels_7x7: one InceptionC block (Mixed_6b, 6c, ...) per entry, its 7x7 chains' width.
    e_blocks: InceptionE blocks (Mixed_7b, 7c, ...).
    """

    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.0                              # timm: head dropout before fc (default 0)
    width: float = 1.0                                  # timm: 1.0 (our knob)
    stem_padding: int = 0                               # timm BasicConv2d default padding 0
    pool_features: tuple[int, ...] = (32, 64, 64)       # timm Mixed_5b, 5c, 5d
    channels_7x7: tuple[int, ...] = (128, 160, 160, 192)  # timm Mixed_6b..6e
    e_blocks: int = 2                                   # timm Mixed_7b, 7c
    bn_eps: float = 1e-3                                # timm BasicConv2d BatchNorm2d(eps=0.001)

    def __post_init__(self):
        object.__setattr__(self, "pool_features", tuple(int(c) for c in self.pool_features))
        object.__setattr__(self, "channels_7x7", tuple(int(c) for c in self.channels_7x7))
        for key in ("num_classes", "in_channels"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"InceptionV3Config.{key} must be a positive integer, got {getattr(self, key)!r}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"InceptionV3Config.drop_rate={self.drop_rate}; expected a rate in [0, 1)")
        if self.width <= 0:
            raise ConfigError(f"InceptionV3Config.width must be positive, got {self.width}")
        if self.stem_padding not in (0, 1):
            raise ConfigError(f"InceptionV3Config.stem_padding={self.stem_padding}; expected 0 (timm) or 1")
        if min(self.pool_features + self.channels_7x7, default=1) < 1 or self.e_blocks < 0:
            raise ConfigError("InceptionV3Config: block widths must be positive and e_blocks >= 0")

    def ch(self, channels: int) -> int:
        """A published width at this config's ``width``."""
        return max(1, int(round(channels * self.width)))


def min_input_size(cfg: InceptionV3Config) -> int:
    """The smallest square side that leaves a non-empty map after Mixed_7a (75 for timm's stem)."""
    side = 1
    while _final_side(cfg, side) < 1:
        side += 1
    return side


def _final_side(cfg: InceptionV3Config, n: int) -> int:
    p = cfg.stem_padding
    n = (n + 2 * p - 3) // 2 + 1      # Conv2d_1a_3x3, stride 2
    n = n + 2 * p - 2                 # Conv2d_2a_3x3 (2b pads 1, 3b is 1x1)
    n = (n - 3) // 2 + 1              # Pool1
    n = n + 2 * p - 2                 # Conv2d_4a_3x3
    n = (n - 3) // 2 + 1              # Pool2
    n = (n - 3) // 2 + 1              # Mixed_6a (3x3/2, unpadded)
    return (n - 3) // 2 + 1 if n >= 3 else 0   # Mixed_7a


def timm_normal(std: float = 0.1):
    """timm's InceptionV3 init, normal(0, std), drawn flat and reshaped: on CPU, jax 0.10's
    partitionable threefry compiles a draw of a 4-D shape ~50x slower than of the same count flat
    (15 s for one 3x3x8x13 kernel), which made building the model take minutes."""
    def init(key, shape, dtype=jnp.float32):
        return (std * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)
    return init


class BasicConv2d(nnx.Module):
    """timm's ``BasicConv2d``: ``conv`` (no bias) -> ``bn`` (eps 1e-3) -> ReLU; padding 0 unless given."""

    def __init__(self, in_ch: int, out_ch: int, kernel, stride: int = 1, padding=0, *, eps: float,
                 rngs: nnx.Rngs):
        kernel = pair(kernel)
        self.conv = nnx.Conv(in_ch, out_ch, kernel, strides=stride, padding=torch_padding(kernel, padding),
                             use_bias=False, kernel_init=timm_normal(), rngs=rngs)
        self.bn = nnx.BatchNorm(out_ch, epsilon=eps, momentum=BN_DECAY, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))


class _Block(nnx.Module):
    """Shared plumbing: ``_conv(cfg, in, out, kernel, stride, padding)`` makes a BasicConv2d."""

    def _conv(self, cfg, in_ch, out_ch, kernel, stride=1, padding=0, *, rngs):
        return BasicConv2d(in_ch, out_ch, kernel, stride, padding, eps=cfg.bn_eps, rngs=rngs)


def _pool_same(x):
    return avg_pool_torch(x, 3, 1, 1, count_include_pad=True)   # timm F.avg_pool2d(x, 3, 1, 1)


class InceptionA(_Block):
    def __init__(self, cfg: InceptionV3Config, in_ch: int, pool_features: int, *, rngs: nnx.Rngs):
        c = cfg.ch
        self.branch1x1 = self._conv(cfg, in_ch, c(64), 1, rngs=rngs)
        self.branch5x5_1 = self._conv(cfg, in_ch, c(48), 1, rngs=rngs)
        self.branch5x5_2 = self._conv(cfg, c(48), c(64), 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = self._conv(cfg, in_ch, c(64), 1, rngs=rngs)
        self.branch3x3dbl_2 = self._conv(cfg, c(64), c(96), 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = self._conv(cfg, c(96), c(96), 3, padding=1, rngs=rngs)
        self.branch_pool = self._conv(cfg, in_ch, c(pool_features), 1, rngs=rngs)
        self.out_channels = c(64) + c(64) + c(96) + c(pool_features)

    def __call__(self, x, *, train: bool):
        b1 = self.branch1x1(x, train=train)
        b5 = self.branch5x5_2(self.branch5x5_1(x, train=train), train=train)
        b3 = self.branch3x3dbl_1(x, train=train)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(b3, train=train), train=train)
        bp = self.branch_pool(_pool_same(x), train=train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    def __init__(self, cfg: InceptionV3Config, in_ch: int, *, rngs: nnx.Rngs):
        c = cfg.ch
        self.branch3x3 = self._conv(cfg, in_ch, c(384), 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = self._conv(cfg, in_ch, c(64), 1, rngs=rngs)
        self.branch3x3dbl_2 = self._conv(cfg, c(64), c(96), 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = self._conv(cfg, c(96), c(96), 3, stride=2, rngs=rngs)
        self.out_channels = c(384) + c(96) + in_ch

    def __call__(self, x, *, train: bool):
        b3 = self.branch3x3(x, train=train)
        bd = self.branch3x3dbl_1(x, train=train)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(bd, train=train), train=train)
        return jnp.concatenate([b3, bd, max_pool_torch(x, 3, 2)], axis=-1)


class InceptionC(_Block):
    def __init__(self, cfg: InceptionV3Config, in_ch: int, channels_7x7: int, *, rngs: nnx.Rngs):
        c, c7 = cfg.ch, cfg.ch(channels_7x7)
        self.branch1x1 = self._conv(cfg, in_ch, c(192), 1, rngs=rngs)
        self.branch7x7_1 = self._conv(cfg, in_ch, c7, 1, rngs=rngs)
        self.branch7x7_2 = self._conv(cfg, c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = self._conv(cfg, c7, c(192), (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = self._conv(cfg, in_ch, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = self._conv(cfg, c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = self._conv(cfg, c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = self._conv(cfg, c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = self._conv(cfg, c7, c(192), (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = self._conv(cfg, in_ch, c(192), 1, rngs=rngs)
        self.out_channels = 4 * c(192)

    def __call__(self, x, *, train: bool):
        b1 = self.branch1x1(x, train=train)
        b7 = x
        for conv in (self.branch7x7_1, self.branch7x7_2, self.branch7x7_3):
            b7 = conv(b7, train=train)
        bd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            bd = conv(bd, train=train)
        bp = self.branch_pool(_pool_same(x), train=train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    def __init__(self, cfg: InceptionV3Config, in_ch: int, *, rngs: nnx.Rngs):
        c = cfg.ch
        self.branch3x3_1 = self._conv(cfg, in_ch, c(192), 1, rngs=rngs)
        self.branch3x3_2 = self._conv(cfg, c(192), c(320), 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = self._conv(cfg, in_ch, c(192), 1, rngs=rngs)
        self.branch7x7x3_2 = self._conv(cfg, c(192), c(192), (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = self._conv(cfg, c(192), c(192), (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = self._conv(cfg, c(192), c(192), 3, stride=2, rngs=rngs)
        self.out_channels = c(320) + c(192) + in_ch

    def __call__(self, x, *, train: bool):
        b3 = self.branch3x3_2(self.branch3x3_1(x, train=train), train=train)
        b7 = x
        for conv in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7, train=train)
        return jnp.concatenate([b3, b7, max_pool_torch(x, 3, 2)], axis=-1)


class InceptionE(_Block):
    def __init__(self, cfg: InceptionV3Config, in_ch: int, *, rngs: nnx.Rngs):
        c = cfg.ch
        self.branch1x1 = self._conv(cfg, in_ch, c(320), 1, rngs=rngs)
        self.branch3x3_1 = self._conv(cfg, in_ch, c(384), 1, rngs=rngs)
        self.branch3x3_2a = self._conv(cfg, c(384), c(384), (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = self._conv(cfg, c(384), c(384), (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = self._conv(cfg, in_ch, c(448), 1, rngs=rngs)
        self.branch3x3dbl_2 = self._conv(cfg, c(448), c(384), 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = self._conv(cfg, c(384), c(384), (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = self._conv(cfg, c(384), c(384), (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = self._conv(cfg, in_ch, c(192), 1, rngs=rngs)
        self.out_channels = c(320) + 4 * c(384) + c(192)

    def __call__(self, x, *, train: bool):
        b1 = self.branch1x1(x, train=train)
        b3 = self.branch3x3_1(x, train=train)
        b3 = jnp.concatenate([self.branch3x3_2a(b3, train=train), self.branch3x3_2b(b3, train=train)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x, train=train), train=train)
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd, train=train), self.branch3x3dbl_3b(bd, train=train)], axis=-1)
        bp = self.branch_pool(_pool_same(x), train=train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def _names(stage: str, count: int, first: str = "b") -> tuple[str, ...]:
    """timm's block names: Mixed_5b, Mixed_5c, ... (letters continue past the published count)."""
    return tuple(f"Mixed_{stage}{chr(ord(first) + i)}" for i in range(count))


class InceptionV3(nnx.Module):
    """``__call__(x (batch, h, w, in_channels), *, train, rngs=None) -> logits``; attribute names
    are timm's module names (``Mixed_6b.branch7x7_2.conv``), so ``timm_to_nnx`` maps by name."""

    def __init__(self, cfg: InceptionV3Config = InceptionV3Config(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        c, p, eps = cfg.ch, cfg.stem_padding, cfg.bn_eps
        self.Conv2d_1a_3x3 = BasicConv2d(cfg.in_channels, c(32), 3, 2, p, eps=eps, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(c(32), c(32), 3, 1, p, eps=eps, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(c(32), c(64), 3, 1, 1, eps=eps, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(c(64), c(80), 1, 1, 0, eps=eps, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(c(80), c(192), 3, 1, p, eps=eps, rngs=rngs)
        width = c(192)
        blocks = []
        for name, pool_features in zip(_names("5", len(cfg.pool_features)), cfg.pool_features):
            blocks.append((name, InceptionA(cfg, width, pool_features, rngs=rngs)))
            width = blocks[-1][1].out_channels
        blocks.append(("Mixed_6a", InceptionB(cfg, width, rngs=rngs)))
        width = blocks[-1][1].out_channels
        for name, c7 in zip(_names("6", len(cfg.channels_7x7)), cfg.channels_7x7):
            blocks.append((name, InceptionC(cfg, width, c7, rngs=rngs)))
            width = blocks[-1][1].out_channels
        blocks.append(("Mixed_7a", InceptionD(cfg, width, rngs=rngs)))
        width = blocks[-1][1].out_channels
        for name in _names("7", cfg.e_blocks):
            blocks.append((name, InceptionE(cfg, width, rngs=rngs)))
            width = blocks[-1][1].out_channels
        for name, block in blocks:
            setattr(self, name, block)
        self.block_names = tuple(name for name, _ in blocks)
        self.num_features = width
        self.min_size = min_input_size(cfg)
        self.head_drop = nnx.Dropout(cfg.drop_rate)
        self.fc = nnx.Linear(width, cfg.num_classes, kernel_init=timm_normal(), rngs=rngs)

    def _check(self, x: jax.Array):
        cfg = self.cfg
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ShapeError(f"InceptionV3 input has shape {tuple(x.shape)}; expected (batch, h, w, {cfg.in_channels})")
        if min(x.shape[1:3]) < self.min_size:
            raise ShapeError(f"InceptionV3 input {tuple(x.shape[1:3])} is smaller than {self.min_size}x"
                             f"{self.min_size}, the least this stem leaves a map for after Mixed_7a")

    def forward_features(self, x: jax.Array, *, train: bool) -> jax.Array:
        """The last feature map ``(batch, h', w', num_features)``."""
        self._check(x)
        x = self.Conv2d_1a_3x3(x, train=train)
        x = self.Conv2d_2a_3x3(x, train=train)
        x = self.Conv2d_2b_3x3(x, train=train)
        x = max_pool_torch(x, 3, 2)                      # Pool1
        x = self.Conv2d_3b_1x1(x, train=train)
        x = self.Conv2d_4a_3x3(x, train=train)
        x = max_pool_torch(x, 3, 2)                      # Pool2
        for name in self.block_names:
            x = getattr(self, name)(x, train=train)
        return x

    def features(self, x: jax.Array, *, train: bool) -> jax.Array:
        return global_avg_pool(self.forward_features(x, train=train))

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        rngs = as_rngs(rngs)
        if train and self.cfg.drop_rate > 0 and rngs is None:
            raise ConfigError(f"drop_rate={self.cfg.drop_rate} needs `rngs` (a key) when train=True")
        x = self.head_drop(self.features(x, train=train), deterministic=not train, rngs=rngs)
        return self.fc(x)


# tiny (our choice): every block type once, an eighth of the width, a padded stem for 64x64 inputs;
# 0.16 M parameters with 45 classes, 256 features; a batch of 32 64x64 images trains in ~0.05 s on one core.
TINY = InceptionV3Config(width=0.125, stem_padding=1, pool_features=(32,), channels_7x7=(128,), e_blocks=1)
PUBLISHED = InceptionV3Config()   # timm inception_v3

ENTRIES = {
    "inception_v3": ZooEntry(name="inception_v3", model=InceptionV3, presets={"tiny": TINY, "published": PUBLISHED},
                             timm_name="inception_v3", classifier="fc", min_size=min_input_size(PUBLISHED),
                             skip_prefixes=(AUX_PREFIX,)),   # the aux classifier is not built (module doc)
}
