"""The mobile-convolution network MobileNet V1, MobileNet V2 and EfficientNet-B0 share: a 3x3/2
stem, stages of depthwise-separable or inverted-residual ("MBConv") blocks, an optional 1x1 head
conv, global average pooling and one Linear.

timm builds all three with one class (``timm/models/efficientnet.py: EfficientNet``, blocks from
``_efficientnet_blocks.py``, assembled by ``_efficientnet_builder.py``), so we do too, with the
same module names, so ``convert/timm.py`` maps every tensor by name (``blocks.1.0.conv_dw.weight``
-> ``blocks[1][0].conv_dw.kernel``)::

    x (batch, h, w, in_channels)
    -> conv_stem 3x3/2 -> bn1 -> act                                  (batch, h/2, w/2, stem)
    -> blocks[stage][block]                                           (batch, h/32, w/32, c_last)
    -> conv_head 1x1 -> bn2 -> act   (absent when head_channels == 0: MobileNet V1)
    -> mean over (h, w) = features()                                  (batch, num_features)
    -> dropout (train) -> classifier                                  (batch, num_classes)

Blocks (``Stage.kind``), as timm's block strings decode them (``_decode_block_str``):

* ``"ds"``  ``DepthwiseSeparableConv``: conv_dw kxk/s -> bn1 -> act -> [se] -> conv_pw 1x1 -> bn2
  (no activation after the projection); residual when the stride is 1 and the width unchanged.
* ``"dsa"`` the same with an activation after bn2 and never a residual (MobileNet V1's blocks).
* ``"ir"``  ``InvertedResidual``: conv_pw 1x1 (in -> mid) -> bn1 -> act -> conv_dw kxk/s -> bn2 ->
  act -> [se] -> conv_pwl 1x1 (mid -> out) -> bn3; residual when the stride is 1 and the width
  unchanged, through stochastic depth in training.

Facts taken from timm's source (read, not copied), each applied below:

* Padding ``((stride - 1) + (k - 1)) // 2`` per side (``timm.layers.padding.get_padding``, pad
  type ``''``): symmetric, as PyTorch's ``Conv2d(padding=p)``, never XLA's 'SAME'.
* Expanded width ``make_divisible(in * expansion)`` (multiple of 8, never below 90 % of the
  product, ``timm.layers.helpers.make_divisible``).
* Squeeze-excite: mean over (h, w) -> conv_reduce 1x1 (bias) -> the block's activation ->
  conv_expand 1x1 (bias) -> sigmoid gate. Its reduced width is ``round(mid * se_ratio /
  expansion)``: timm's builder divides the ratio by the expansion (``se_from_exp=False`` for
  ``EfficientNet``), so B0's ``se0.25`` means a quarter of the block's *input* width.
* Stochastic depth: block ``i`` of ``n`` (counted over all stages) drops its residual branch with
  probability ``drop_path_rate * i / n`` (``EfficientNetBuilder._make_block``), per sample, scaled
  by ``1 / keep`` (``timm.layers.DropPath``); off in eval. Blocks without a residual never drop.
* BatchNorm: ``nn.BatchNorm2d`` defaults (eps 1e-5, momentum 0.1) for these three models (their
  registrations pass no ``bn_eps``); ``bn_eps`` is a config field for ports that do.
* Init (``_init_weight_goog``, the TensorFlow reference's): conv kernels N(0, 2 / fan_out) with
  ``fan_out = kh kw out / groups``, biases 0, BatchNorm 1 / 0, the classifier U(+-1/sqrt(classes))
  with bias 0. Only training from scratch sees it; imported weights replace it.

Train/eval: the explicit ``train`` (batch statistics and running-average updates, dropout and
stochastic depth on); ``rngs`` (an ``nnx.Rngs`` or a PRNG key) is needed only in training with
``drop_rate`` or ``drop_path_rate`` above 0. NNX keeps the biased batch variance in its running
estimate where PyTorch keeps the unbiased one (a factor n / (n - 1), n = batch * h * w).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.cnn_zoo.layers import ACTIVATIONS, BN_DECAY, BN_EPS, activation, global_avg_pool, torch_padding

KINDS = ("ds", "dsa", "ir")


class Stage(NamedTuple):
    """One stage of blocks, as a timm block string: ``ir_r2_k3_s2_e6_c24_se0.25`` is
    ``Stage("ir", repeats=2, kernel=3, stride=2, expansion=6, channels=24, se_ratio=0.25)``.
    Only the first block of a stage has the stride."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    expansion: float
    channels: int
    se_ratio: float = 0.0


@dataclasses.dataclass(frozen=True)
class MBConvConfig:
    """Sizes of a mobile-convolution network (module docstring); the presets live with each
    family (``mobilenet.py``, ``efficientnet.py``). Channel counts are final (after timm's
    width-multiplier rounding), so a preset reads as the network it builds.

    stages: the block stages, ``Stage`` tuples (plain tuples / lists are converted).
    stem_channels: the 3x3/2 stem conv's width.
    head_channels: the 1x1 conv before pooling; 0 = none (features are the last stage's output).
    act: activation after every BatchNorm that has one, and inside squeeze-excite.
    drop_rate: dropout on the pooled features before the classifier (train only).
    drop_path_rate: stochastic depth of the last block (linear from 0 over the blocks).
    bn_eps: BatchNorm epsilon.
    """

    stages: tuple
    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    stem_channels: int = 32
    head_channels: int = 1280
    act: str = "relu6"
    bn_eps: float = BN_EPS

    def __post_init__(self):
        def bad(key, problem):
            raise ConfigError(f"MBConvConfig.{key}: {problem}")

        try:
            stages = tuple(Stage(*s) for s in self.stages)
        except TypeError:
            bad("stages", f"expected (kind, repeats, kernel, stride, expansion, channels[, se_ratio]) tuples, "
                          f"got {self.stages!r}")
        if not stages:
            bad("stages", "needs at least one stage")
        for i, s in enumerate(stages):
            if s.kind not in KINDS:
                bad(f"stages[{i}].kind", f"{s.kind!r}; expected one of {KINDS}")
            if min(s.repeats, s.kernel, s.channels) < 1 or s.stride not in (1, 2):
                bad(f"stages[{i}]", f"repeats, kernel and channels must be positive and stride 1 or 2, got {s}")
            if s.expansion <= 0 or not 0 <= s.se_ratio <= 1:
                bad(f"stages[{i}]", f"expansion must be > 0 and se_ratio in [0, 1], got {s}")
            if s.kind != "ir" and s.expansion != 1:
                bad(f"stages[{i}].expansion", f"{s.kind!r} blocks do not expand; expected 1, got {s.expansion}")
        object.__setattr__(self, "stages", stages)
        for key in ("num_classes", "in_channels", "stem_channels"):
            if int(getattr(self, key)) < 1:
                bad(key, f"must be a positive integer, got {getattr(self, key)!r}")
        if self.head_channels < 0:
            bad("head_channels", f"must be >= 0 (0: no head conv), got {self.head_channels}")
        if self.act not in ACTIVATIONS:
            bad("act", f"{self.act!r}; expected one of {', '.join(ACTIVATIONS)}")
        for key in ("drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                bad(key, f"must be in [0, 1), got {getattr(self, key)}")
        if self.bn_eps <= 0:
            bad("bn_eps", f"must be positive, got {self.bn_eps}")

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """The nearest multiple of ``divisor`` (at least ``divisor``), one step up when rounding would
    lose more than ``1 - round_limit`` of ``value``: how timm sizes expanded widths."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < round_limit * value else out


def fan_out_normal(groups: int = 1):
    """N(0, 2 / fan_out), ``fan_out = kh kw out / groups`` (the TensorFlow reference's init: for a
    depthwise conv only the kernel's own taps count)."""

    def init(key, shape, dtype=jnp.float32):
        fan_out = math.prod(shape[:-2]) * shape[-1] // groups
        return math.sqrt(2.0 / fan_out) * jax.random.normal(key, shape, dtype)

    return init


def conv(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, *, groups: int = 1, bias: bool = False,
         rngs: nnx.Rngs) -> nnx.Conv:
    """``Conv2d`` with timm's static padding ``((stride - 1) + (kernel - 1)) // 2`` per side."""
    pad = ((stride - 1) + (kernel - 1)) // 2
    return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=stride, padding=torch_padding((kernel, kernel), pad),
                    feature_group_count=groups, use_bias=bias, kernel_init=fan_out_normal(groups), rngs=rngs)


def batch_norm(ch: int, eps: float, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(ch, epsilon=eps, momentum=BN_DECAY, rngs=rngs)


def drop_path(x: jax.Array, rate: float, *, train: bool, rngs: Optional[nnx.Rngs]) -> jax.Array:
    """Stochastic depth on a residual branch ``x``: each sample's branch is zeroed with
    probability ``rate`` and the kept ones scaled by ``1 / (1 - rate)`` (train only)."""
    if not train or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rngs.dropout(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class SqueezeExcite(nnx.Module):
    """Channel gate: ``x * sigmoid(conv_expand(act(conv_reduce(mean_hw(x)))))``."""

    def __init__(self, ch: int, reduced: int, act: str, *, rngs: nnx.Rngs):
        self.conv_reduce = conv(ch, reduced, bias=True, rngs=rngs)
        self.conv_expand = conv(reduced, ch, bias=True, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = self.conv_expand(activation(self.act)(self.conv_reduce(s)))
        return x * jax.nn.sigmoid(s)


class DepthwiseSeparable(nnx.Module):
    """conv_dw kxk/s -> bn1 -> act -> [se] -> conv_pw 1x1 -> bn2 [-> act if ``pw_act``] [+ x]."""

    def __init__(self, in_ch: int, out_ch: int, stage: Stage, stride: int, cfg: MBConvConfig, drop_rate: float,
                 *, rngs: nnx.Rngs):
        self.conv_dw = conv(in_ch, in_ch, stage.kernel, stride, groups=in_ch, rngs=rngs)
        self.bn1 = batch_norm(in_ch, cfg.bn_eps, rngs=rngs)
        # timm divides se_ratio by the block's exp_ratio, which a ds block has not: 1.
        self.se = SqueezeExcite(in_ch, round(in_ch * stage.se_ratio), cfg.act, rngs=rngs) if stage.se_ratio else None
        self.conv_pw = conv(in_ch, out_ch, rngs=rngs)
        self.bn2 = batch_norm(out_ch, cfg.bn_eps, rngs=rngs)
        self.pw_act = stage.kind == "dsa"
        self.has_skip = stage.kind == "ds" and stride == 1 and in_ch == out_ch
        self.drop_rate = drop_rate
        self.act = cfg.act

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        act = activation(self.act)
        y = act(self.bn1(self.conv_dw(x), use_running_average=not train))
        if self.se is not None:
            y = self.se(y)
        y = self.bn2(self.conv_pw(y), use_running_average=not train)
        if self.pw_act:
            y = act(y)
        return x + drop_path(y, self.drop_rate, train=train, rngs=rngs) if self.has_skip else y


class InvertedResidual(nnx.Module):
    """conv_pw 1x1 -> bn1 -> act -> conv_dw kxk/s -> bn2 -> act -> [se] -> conv_pwl 1x1 -> bn3 [+ x]."""

    def __init__(self, in_ch: int, out_ch: int, stage: Stage, stride: int, cfg: MBConvConfig, drop_rate: float,
                 *, rngs: nnx.Rngs):
        mid = make_divisible(in_ch * stage.expansion)
        self.conv_pw = conv(in_ch, mid, rngs=rngs)
        self.bn1 = batch_norm(mid, cfg.bn_eps, rngs=rngs)
        self.conv_dw = conv(mid, mid, stage.kernel, stride, groups=mid, rngs=rngs)
        self.bn2 = batch_norm(mid, cfg.bn_eps, rngs=rngs)
        reduced = round(mid * (stage.se_ratio / stage.expansion))  # timm: a fraction of the *input* width
        self.se = SqueezeExcite(mid, reduced, cfg.act, rngs=rngs) if stage.se_ratio else None
        self.conv_pwl = conv(mid, out_ch, rngs=rngs)
        self.bn3 = batch_norm(out_ch, cfg.bn_eps, rngs=rngs)
        self.has_skip = stride == 1 and in_ch == out_ch
        self.drop_rate = drop_rate
        self.act = cfg.act

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        act = activation(self.act)
        y = act(self.bn1(self.conv_pw(x), use_running_average=not train))
        y = act(self.bn2(self.conv_dw(y), use_running_average=not train))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.conv_pwl(y), use_running_average=not train)
        return x + drop_path(y, self.drop_rate, train=train, rngs=rngs) if self.has_skip else y


def classifier_uniform(num_classes: int):
    bound = 1.0 / math.sqrt(num_classes)  # timm: U(+-1/sqrt(fan_out)), fan_out = the class count

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MBConvNet(nnx.Module):
    """``__call__(x (batch, h, w, in_channels), *, train, rngs=None) -> logits (batch, num_classes)``;
    ``features(x, *, train, rngs=None) -> (batch, num_features)`` (module docstring)."""

    def __init__(self, cfg: MBConvConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.conv_stem = conv(cfg.in_channels, cfg.stem_channels, 3, 2, rngs=rngs)
        self.bn1 = batch_norm(cfg.stem_channels, cfg.bn_eps, rngs=rngs)
        stages, ch, index = [], cfg.stem_channels, 0
        for stage in cfg.stages:
            block = InvertedResidual if stage.kind == "ir" else DepthwiseSeparable
            blocks = []
            for r in range(stage.repeats):
                rate = cfg.drop_path_rate * index / cfg.num_blocks
                blocks.append(block(ch, stage.channels, stage, stage.stride if r == 0 else 1, cfg, rate, rngs=rngs))
                ch, index = stage.channels, index + 1
            stages.append(nnx.List(blocks))
        self.blocks = nnx.List(stages)
        if cfg.head_channels:
            self.conv_head = conv(ch, cfg.head_channels, rngs=rngs)
            self.bn2 = batch_norm(cfg.head_channels, cfg.bn_eps, rngs=rngs)
            ch = cfg.head_channels
        else:
            self.conv_head = self.bn2 = None
        self.num_features = ch
        self.classifier = nnx.Linear(ch, cfg.num_classes, kernel_init=classifier_uniform(cfg.num_classes),
                                     bias_init=nnx.initializers.zeros, rngs=rngs)

    def _rngs(self, train: bool, rngs, *, head: bool):
        """The random streams training draws from (None when nothing random runs); ``head``:
        the classifier's dropout runs too (``__call__``, not ``features``)."""
        if not train or (self.cfg.drop_path_rate == 0 and (not head or self.cfg.drop_rate == 0)):
            return None
        if rngs is None:
            raise ConfigError(f"training with drop_rate={self.cfg.drop_rate} / drop_path_rate="
                              f"{self.cfg.drop_path_rate} needs rngs (an nnx.Rngs or a PRNG key)")
        return rngs if isinstance(rngs, nnx.Rngs) else nnx.Rngs(dropout=rngs)

    def _check(self, x: jax.Array):
        if x.ndim != 4 or x.shape[-1] != self.cfg.in_channels:
            raise ShapeError(f"expected images (batch, h, w, {self.cfg.in_channels}), got shape {x.shape}")

    def _features(self, x: jax.Array, train: bool, rngs) -> jax.Array:
        act = activation(self.cfg.act)
        x = act(self.bn1(self.conv_stem(x), use_running_average=not train))
        for stage in self.blocks:
            for block in stage:
                x = block(x, train=train, rngs=rngs)
        if self.conv_head is not None:
            x = act(self.bn2(self.conv_head(x), use_running_average=not train))
        return global_avg_pool(x)

    def features(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        self._check(x)
        return self._features(x, train, self._rngs(train, rngs, head=False))

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        self._check(x)
        rngs = self._rngs(train, rngs, head=True)
        h = self._features(x, train, rngs)
        if train and self.cfg.drop_rate > 0:
            h = nnx.Dropout(self.cfg.drop_rate)(h, deterministic=False, rngs=rngs)
        return self.classifier(h)
