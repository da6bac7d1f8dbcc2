"""The DCASE 2022/2023 task-4 CRNN baseline (DESED_task ``desed_task/nnet/CRNN.py``) in NNX.

feats (batch, frames, mel) -> per-example scaling -> CNN (time /4, mel -> 1)
-> 2-layer BiGRU (128 per direction) -> dropout -> dense + sigmoid = strong (batch, frames', classes)
-> attention pooling over time = weak (batch, classes).

With the DCASE front end (626 frames, 128 mels) frames' = 156; 1,112,420 parameters with the
default config (the baseline is quoted as ~1.1M).

Input scaling happens inside the model, per example over (time, mel), like the baseline's
``TorchScaler('instance', normtype, dims=(1, 2))``; the DCASE 2023 recipe uses
``normtype: minmax``, which is our default; ``'standard'`` (mean/std, unbiased std as
``torch.std``) and ``'none'`` are available.

Train/eval: an explicit, required, keyword-only ``train`` (dropout on, BatchNorm batch
statistics and running average updates), passed down to every layer; NNX's ``model.train()``
/ ``model.eval()`` mode flags change nothing. Dropout keys come from ``rngs`` (a PRNG key or
``nnx.Rngs``), which is required in train mode. The model holds no RNG state, so ``nnx.split``
gives only params and BatchNorm statistics.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import CNN, CNNConfig, as_rngs, torch_uniform
from jaxaudio.nn.gru import GRU
from jaxaudio.nn.pooling import attention_pooling

INPUT_NORMS = ("minmax", "standard", "none")


@dataclasses.dataclass(frozen=True)
class CRNNConfig:
    """n_classes: output classes; cnn: the CNN stack; rnn_hidden: GRU size per direction;
    rnn_layers: stacked BiGRU layers; dropout_recurrent: between GRU layers; dropout: after
    the GRU; attention: attention pooling (else mean over time) for the weak output;
    attention_softmax: 'class' (DESED_task) or 'time' (see ``nn.pooling``);
    input_norm: per-example scaling, one of ``INPUT_NORMS``; norm_eps: its epsilon;
    unroll_rnn: Python-unrolled GRU instead of ``lax.scan``;
    export_rnn: the GRU's export loop (``nn.gru``, ``export_loop``): same numbers, smaller TFLite file.
    """

    n_classes: int = 10
    cnn: CNNConfig = dataclasses.field(default_factory=CNNConfig)
    rnn_hidden: int = 128
    rnn_layers: int = 2
    dropout_recurrent: float = 0.0
    dropout: float = 0.5
    attention: bool = True
    attention_softmax: str = "class"
    input_norm: str = "minmax"
    norm_eps: float = 1e-8
    unroll_rnn: bool = False
    export_rnn: bool = False

    def __post_init__(self):
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"input_norm={self.input_norm!r}; expected one of {INPUT_NORMS}")
        if self.attention_softmax not in ("class", "time"):
            raise ConfigError(f"attention_softmax={self.attention_softmax!r}; expected 'class' or 'time'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}; expected a rate in [0, 1)")


def instance_scale(feats: jax.Array, kind: str, eps: float) -> jax.Array:
    """Scale each example over its (time, mel) axes; ``feats`` is (batch, time, mel)."""
    axes = (1, 2)
    if kind == "minmax":
        lo = jnp.min(feats, axis=axes, keepdims=True)
        hi = jnp.max(feats, axis=axes, keepdims=True)
        return (feats - lo) / (hi - lo + eps)
    if kind == "standard":
        mean = jnp.mean(feats, axis=axes, keepdims=True)
        std = jnp.std(feats, axis=axes, keepdims=True, ddof=1)
        return (feats - mean) / (std + eps)
    return feats


class CRNN(nnx.Module):
    """``__call__(feats (batch, frames, mel), *, train, rngs=None)`` ->
    ``{'strong': (batch, frames', classes), 'weak': (batch, classes)}``, both probabilities."""

    def __init__(self, cfg: CRNNConfig = CRNNConfig(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.cnn = CNN(cfg.cnn, rngs=rngs)
        self.rnn = GRU(
            cfg.cnn.channels[-1], cfg.rnn_hidden, cfg.rnn_layers, bidirectional=True,
            dropout=cfg.dropout_recurrent, unroll=cfg.unroll_rnn, export_loop=cfg.export_rnn, rngs=rngs,
        )
        self.dropout = nnx.Dropout(cfg.dropout)
        width = 2 * cfg.rnn_hidden
        init = torch_uniform(width)
        self.dense = nnx.Linear(width, cfg.n_classes, kernel_init=init, bias_init=init, rngs=rngs)
        if cfg.attention:
            self.dense_softmax = nnx.Linear(width, cfg.n_classes, kernel_init=init, bias_init=init, rngs=rngs)

    def __call__(self, feats: jax.Array, *, train: bool, rngs=None) -> dict[str, jax.Array]:
        if feats.ndim != 3:
            raise ConfigError(f"CRNN input has shape {feats.shape}; expected (batch, frames, mel)")
        rngs = as_rngs(rngs)
        if train and self.cfg.dropout > 0 and rngs is None:
            raise ConfigError(f"dropout={self.cfg.dropout} needs `rngs` (a key) when train=True")
        x = instance_scale(feats, self.cfg.input_norm, self.cfg.norm_eps)
        x = self.cnn(x, train=train, rngs=rngs)
        x = self.rnn(x, train=train, rngs=rngs)
        x = self.dropout(x, deterministic=not train, rngs=rngs)
        strong = jax.nn.sigmoid(self.dense(x))
        if self.cfg.attention:
            weak = attention_pooling(strong, self.dense_softmax(x), softmax_over=self.cfg.attention_softmax)
        else:
            weak = jnp.mean(strong, axis=1)
        return {"strong": strong, "weak": weak}
