"""GeCo's two networks in one module: a predictive autoencoder per machine type and the extractor.

Why one module: the trainer holds one model per run; the PAE stage trains ``paes/`` (the
extractor's parameters frozen) and the extractor stage trains ``net/`` with the PAEs frozen,
reading them under ``stop_gradient``. Each PAE sees only its own machine type's clips, as GeCo
pre-trains them per type; ``reconstruct`` routes every row to its type's PAE.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models.geco import GeCoConfig, GeCoNet
from jaxaudio.models.machine_types import own_rows_mean, own_type_rows, row_types
from jaxaudio.models.pae import PAE, PAEConfig, prediction_error


@dataclasses.dataclass(frozen=True)
class GeCoPairConfig:
    """net: the extractor; pae: every machine type's PAE (same sizes); class_types: the machine
    type (0..n_types-1) of each ID class, in class order; reconstructions: False builds no PAE
    (the ID-classifier baseline)."""

    net: GeCoConfig
    pae: PAEConfig
    class_types: tuple[int, ...]
    reconstructions: bool = True

    def __post_init__(self):
        if len(self.class_types) != self.net.n_classes:
            raise ConfigError(f"GeCoPairConfig: {len(self.class_types)} class types for net.n_classes="
                              f"{self.net.n_classes} classes")
        if self.pae.n_mels != self.net.n_mels:
            raise ConfigError(f"GeCoPairConfig: pae.n_mels={self.pae.n_mels} differs from the extractor's "
                              f"{self.net.n_mels} mels")

    @property
    def n_types(self) -> int:
        return max(self.class_types) + 1


class GeCoPair(nnx.Module):
    """``paes`` (one ``PAE`` per machine type, absent without reconstructions) and ``net`` (``GeCoNet``)."""

    def __init__(self, cfg: GeCoPairConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.net = GeCoNet(cfg.net, rngs=rngs)
        if cfg.reconstructions:
            self.paes = nnx.List([PAE(cfg.pae, rngs=rngs) for _ in range(cfg.n_types)])

    def __call__(self, mel, wave=None, *, train: bool, rngs=None, **kwargs):
        return self.net(mel, wave, train=train, rngs=rngs, **kwargs)

    def row_types(self, class_id: jax.Array) -> jax.Array:
        """The machine type of each row's ID class."""
        return row_types(self.cfg.class_types, class_id)

    def pae_loss(self, mel: jax.Array, class_id: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """Sum over machine types of that type's PAE's mean prediction error over its own rows:
        each PAE's gradient is that of its own per-type training (a type absent from the batch adds 0)."""
        types = self.row_types(class_id)
        total = jnp.zeros((), jnp.float32)
        if self._routable(train):
            errors = prediction_error(self._routed(mel, types, train=train), mel)
            for k in range(len(self.paes)):
                total = total + own_rows_mean(errors, types, k)
            return total
        for k, pae in enumerate(self.paes):
            total = total + own_rows_mean(prediction_error(pae(mel, train=train, rngs=rngs), mel), types, k)
        return total

    def _routable(self, train: bool) -> bool:
        """Rows can run one PAE each (weights gathered per row) unless training draws dropout."""
        return not train or (self.cfg.pae.dropout == 0 and self.cfg.pae.attention_dropout == 0)

    def _routed(self, mel: jax.Array, types: jax.Array, *, train: bool) -> jax.Array:
        """Row i through PAE ``types[i]`` at the cost of one PAE over the batch: the PAEs' weights
        stacked, gathered per row, and the PAE ``vmap``-ped over rows (gradients flow back to each
        type's weights through the gather)."""
        graphdef = nnx.graphdef(self.paes[0])
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(nnx.state(pae) for pae in self.paes))
        per_row = jax.tree.map(lambda leaf: leaf[types], stacked)

        def one(state, rows):
            return nnx.merge(graphdef, state)(rows[None], train=train)[0]

        return jax.vmap(one)(per_row, mel)

    def reconstruct(self, mel: jax.Array, class_id: jax.Array) -> jax.Array:
        """Each row predicted by its own machine type's PAE (eval mode), ``(batch, frames, n_mels)``,
        at the cost of one PAE over the batch: every row runs the PAE with its own type's weights
        gathered for it (``_routed``), instead of every PAE over every row. The extractor stage
        calls this each step, so with six machine types it was most of the step."""
        return self._routed(mel, self.row_types(class_id), train=False)

    def reconstruct_every_pae(self, mel: jax.Array, class_id: jax.Array) -> jax.Array:
        """``reconstruct`` the plain way (every PAE over every row, each row kept from its own
        type's): the reference the routed version is tested against."""
        return own_type_rows([pae(mel, train=False) for pae in self.paes], self.row_types(class_id))
