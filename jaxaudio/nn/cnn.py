"""The DCASE task-4 style CNN: a stack of conv -> BatchNorm -> gate -> dropout -> avg-pool blocks.

It turns a log-mel image ``(batch, time, mel)`` into a frame sequence ``(batch, time', channels)``
by pooling the frequency axis down to one bin. The DCASE 2022/2023 CRNN baseline
(DESED_task ``desed_task/nnet/CNN.py``) and PMAM's CNN branch are both instances of it.

Gating activations, named as in DESED_task (each uses a dense layer ``lin`` over channels,
i.e. a 1x1 convolution with bias, applied at every (time, freq) position):

* ``'glu'``  gated linear unit:  ``lin(x) * sigmoid(x)``  (the DCASE 2023 baseline's setting)
* ``'cg'``   context gating:     ``x * sigmoid(lin(x))``  (PMAM's CNN branch)
* ``'relu'``, ``'leakyrelu'`` (slope 0.2): plain activations, no extra parameters.

BatchNorm: PyTorch's ``BatchNorm2d(eps=1e-3, momentum=0.99)`` updates
``running = (1 - 0.99) * running + 0.99 * batch``; NNX's ``momentum`` is the decay of the running
average, so we pass ``1 - bn_momentum_torch`` (0.01). One small difference remains: PyTorch
stores the unbiased batch variance in the running estimate, NNX the biased one (a factor
n/(n-1) with n = batch*time*freq, negligible here).

Train/eval is an explicit, required ``train`` argument (dropout on, batch statistics used and
the running averages updated), passed down to every block as ``deterministic=not train`` /
``use_running_average=not train``, so a jit step calls ``model(x, train=True, rngs=key)`` and
NNX's ``model.train()`` / ``model.eval()`` mode flags change nothing.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError

ACTIVATIONS = ("glu", "cg", "relu", "leakyrelu")


def torch_uniform(fan_in: int):
    """PyTorch's default Conv/Linear init (weights and biases): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Used so a from-scratch run starts from the same distribution as the PyTorch baselines.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def as_rngs(rngs) -> nnx.Rngs | None:
    """Accept a PRNG key or an ``nnx.Rngs`` for dropout; keys become a fresh ``Rngs``."""
    if rngs is None or isinstance(rngs, nnx.Rngs):
        return rngs
    return nnx.Rngs(dropout=rngs)


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """Layer-by-layer description; defaults are the DCASE 2022/2023 CRNN baseline.

    channels: output channels of each block.
    pooling: (time, freq) average-pool window = stride of each block; (1, 1) means none.
    kernel: square conv kernel size (odd; 'same' padding).
    activation: one of ``ACTIVATIONS`` (see module docstring).
    dropout: dropout rate after the activation of every block.
    n_in_channel: input channels (1 for a single log-mel image).
    bn_epsilon, bn_momentum_torch: BatchNorm settings in PyTorch's convention.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 128, 128, 128)
    pooling: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2))
    kernel: int = 3
    activation: str = "glu"
    dropout: float = 0.5
    n_in_channel: int = 1
    bn_epsilon: float = 1e-3
    bn_momentum_torch: float = 0.99

    def __post_init__(self):
        if len(self.channels) != len(self.pooling):
            raise ConfigError(
                f"cnn.channels has {len(self.channels)} layers but cnn.pooling has "
                f"{len(self.pooling)}; give one (time, freq) pool per layer"
            )
        if self.activation.lower() not in ACTIVATIONS:
            raise ConfigError(f"cnn.activation={self.activation!r}; expected one of {ACTIVATIONS}")
        if self.kernel % 2 != 1:
            raise ConfigError(f"cnn.kernel={self.kernel}; expected an odd size for 'same' padding")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"cnn.dropout={self.dropout}; expected a rate in [0, 1)")

    @property
    def time_pool(self) -> int:
        """Total time downsampling factor (4 for the DCASE baseline)."""
        return math.prod(p[0] for p in self.pooling)

    def output_frames(self, frames: int) -> int:
        """Frames after the CNN; each pool floors like PyTorch's AvgPool2d (626 -> 156)."""
        for pool_t, _ in self.pooling:
            frames //= pool_t
        return frames

    def output_bins(self, bins: int) -> int:
        for _, pool_f in self.pooling:
            bins //= pool_f
        return bins


# The 10-layer CNN branch of PMAM (Transformer4SED config/pmam/post_pretrain.yaml).
PMAM_CNN = CNNConfig(
    channels=(16, 16, 32, 32, 64, 64, 128, 128, 256, 384),
    pooling=((2, 2), (1, 1), (2, 2), (1, 1), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 1)),
    activation="cg",
)


class Gate(nnx.Module):
    """The non-linearity of a block, applied on the channel (last) axis."""

    def __init__(self, channels: int, activation: str, *, rngs: nnx.Rngs):
        self.activation = activation.lower()
        if self.activation in ("glu", "cg"):
            init = torch_uniform(channels)
            self.linear = nnx.Linear(channels, channels, kernel_init=init, bias_init=init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.activation == "glu":
            return self.linear(x) * jax.nn.sigmoid(x)
        if self.activation == "cg":
            return x * jax.nn.sigmoid(self.linear(x))
        if self.activation == "relu":
            return jax.nn.relu(x)
        return jax.nn.leaky_relu(x, negative_slope=0.2)


class ConvBlock(nnx.Module):
    """conv 3x3 (same) -> BatchNorm -> gate -> dropout -> avg-pool; NHWC = (batch, time, freq, ch)."""

    def __init__(self, in_ch: int, out_ch: int, pool: Sequence[int], cfg: CNNConfig, *, rngs: nnx.Rngs):
        init = torch_uniform(in_ch * cfg.kernel * cfg.kernel)
        self.conv = nnx.Conv(
            in_ch, out_ch, (cfg.kernel, cfg.kernel), padding="SAME",
            kernel_init=init, bias_init=init, rngs=rngs,
        )
        self.norm = nnx.BatchNorm(
            out_ch, epsilon=cfg.bn_epsilon, momentum=1.0 - cfg.bn_momentum_torch, rngs=rngs
        )
        self.gate = Gate(out_ch, cfg.activation, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.pool = tuple(int(p) for p in pool)

    def __call__(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.conv(x)
        x = self.norm(x, use_running_average=not train)
        x = self.gate(x)
        x = self.dropout(x, deterministic=not train, rngs=rngs)
        if self.pool != (1, 1):
            x = nnx.avg_pool(x, self.pool, strides=self.pool, padding="VALID")
        return x


class CNN(nnx.Module):
    """``(batch, time, freq)`` (or ``(batch, time, freq, n_in_channel)``) -> ``(batch, time', channels)``."""

    def __init__(self, cfg: CNNConfig = CNNConfig(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        ins = (cfg.n_in_channel,) + tuple(cfg.channels[:-1])
        self.blocks = nnx.List(
            [ConvBlock(i, o, p, cfg, rngs=rngs) for i, o, p in zip(ins, cfg.channels, cfg.pooling)]
        )

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        rngs = as_rngs(rngs)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] != self.cfg.n_in_channel:
            raise ConfigError(
                f"CNN input has shape {x.shape}; expected (batch, time, freq) or "
                f"(batch, time, freq, cnn.n_in_channel={self.cfg.n_in_channel})"
            )
        if train and self.cfg.dropout > 0 and rngs is None:
            raise ConfigError(f"cnn.dropout={self.cfg.dropout} needs `rngs` (a key) when train=True")
        bins = x.shape[2]
        for block in self.blocks:
            x = block(x, train=train, rngs=rngs)
        if x.shape[2] != 1:
            raise ConfigError(
                f"cnn.pooling reduces {bins} frequency bins to {x.shape[2]}, expected 1; "
                "make the product of the freq pools equal the number of mel bins"
            )
        return x[:, :, 0, :]
