"""One DCASE2020 task-2 baseline autoencoder per machine type, trained together on mixed batches.

Why one module: the trainer holds one model per run, and the baseline trains one model per
machine type. ``loss`` sums each type's autoencoder's MSE over its own rows only, and each
autoencoder's BatchNorm layers normalise by (and average the statistics of) its own rows only,
so every autoencoder follows exactly its own per-type training; a type absent from the batch
adds 0 and keeps its running statistics. Training routes each row through its own type's
autoencoder alone (``routed``: kernels gathered per row), so a step costs one autoencoder's
forward and backward pass over the batch, not one per machine type. ``score`` takes each row from
its own type's autoencoder (``ae_score``: eval-mode BatchNorm).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models.asd_ae import PAPER, ASDAEConfig, ASDAutoencoder, ae_score, context_vectors, reconstruction_errors
from jaxaudio.models.machine_types import own_rows_mean, own_type_rows, row_types


@dataclasses.dataclass(frozen=True)
class ASDAEBankConfig:
    """ae: every machine type's autoencoder (same sizes); class_types: the machine type
    (0..n_types-1) of each ID class, in class order."""

    ae: ASDAEConfig = PAPER
    class_types: tuple[int, ...] = (0,)

    def __post_init__(self):
        if not self.class_types or min(self.class_types) < 0:
            raise ConfigError(f"ASDAEBankConfig.class_types={self.class_types!r}; expected type indices >= 0")

    @property
    def n_types(self) -> int:
        return max(self.class_types) + 1


class ASDAEBank(nnx.Module):
    """``aes``: one ``ASDAutoencoder`` per machine type. Inputs: ``log_mel (batch, n_frames, n_mels)``
    (the baseline's features) and ``class_id (batch,)`` (an index into the class list)."""

    def __init__(self, cfg: ASDAEBankConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.aes = nnx.List([ASDAutoencoder(cfg.ae, rngs=rngs) for _ in range(cfg.n_types)])

    def row_types(self, class_id: jax.Array) -> jax.Array:
        return row_types(self.cfg.class_types, class_id)

    def loss(self, log_mel: jax.Array, class_id: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """Sum over machine types of that type's autoencoder's mean MSE over its own rows' context vectors."""
        vectors = context_vectors(log_mel, self.cfg.ae.frames)  # (batch, n_vectors, input_dim)
        types = self.row_types(class_id)
        # every clip has n_vectors vectors, so the mean of the per-clip means is the mean over vectors
        errors = jnp.mean(reconstruction_errors(self.routed(vectors, types, train=train), vectors), axis=-1)
        return sum(own_rows_mean(errors, types, k) for k in range(len(self.aes)))

    def score(self, log_mel: jax.Array, class_id: jax.Array) -> jax.Array:
        """``(batch,)``: each row's ``ae_score`` by its own machine type's autoencoder."""
        return own_type_rows([ae_score(ae, log_mel) for ae in self.aes], self.row_types(class_id))

    def routed(self, x: jax.Array, types: jax.Array, *, train: bool) -> jax.Array:
        """``(batch, n, input_dim)``: row i through autoencoder ``types[i]``, at the cost of one autoencoder
        (each layer's kernel and bias gathered per row), not one per type. ``train``: BatchNorm normalises
        by each type's statistics over its own rows' vectors (flax's: E[x^2] - E[x]^2, biased, the mean
        over the rows' vectors) and moves that type's running averages; a type without rows keeps them."""
        own = jax.nn.one_hot(types, len(self.aes), dtype=jnp.float32)  # (batch, types)
        count = jnp.maximum(jnp.sum(own, axis=0) * x.shape[1], 1.0)[:, None]
        present = jnp.sum(own, axis=0) > 0
        for layers in zip(*(ae.layers for ae in self.aes)):
            x = _routed_dense([layer.dense for layer in layers], x, types)
            norms = [layer.norm for layer in layers]
            if train:
                mean = jnp.einsum("bk,bnh->kh", own, x) / count
                var = jnp.maximum(jnp.einsum("bk,bnh->kh", own, x * x) / count - mean * mean, 0.0)
                for k, norm in enumerate(norms):
                    for stat, value in ((norm.mean, mean[k]), (norm.var, var[k])):
                        moved = norm.momentum * stat[...] + (1.0 - norm.momentum) * jax.lax.stop_gradient(value)
                        stat[...] = jnp.where(present[k], moved, stat[...])
            else:
                mean, var = (jnp.stack([n.mean[...] for n in norms]), jnp.stack([n.var[...] for n in norms]))
            scale, bias = jnp.stack([n.scale[...] for n in norms]), jnp.stack([n.bias[...] for n in norms])
            inv = jax.lax.rsqrt(var + jnp.asarray([n.epsilon for n in norms])[:, None]) * scale
            x = jax.nn.relu((x - mean[types][:, None]) * inv[types][:, None] + bias[types][:, None])
        return _routed_dense([ae.out for ae in self.aes], x, types)


def _routed_dense(linears, x: jax.Array, types: jax.Array) -> jax.Array:
    """``x (batch, n, in) -> (batch, n, out)``, row i through ``linears[types[i]]``."""
    kernel = jnp.stack([lin.kernel[...] for lin in linears])[types]  # (batch, in, out)
    bias = jnp.stack([lin.bias[...] for lin in linears])[types]  # (batch, out)
    return jnp.einsum("bni,bio->bno", x, kernel) + bias[:, None]


__all__ = ["ASDAEBankConfig", "ASDAEBank"]
