"""PMAM wiring from the experiment config: front end, network sizes, the model and its mel input.

Kept apart from the stage code so the export hook and the scaling study can build the same
network from a run's ``config.json`` without importing the training stages.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.sed import data as sed_data
from jaxaudio.audio import features
from jaxaudio.errors import ConfigError
from jaxaudio.models.pmam import PMAM, PMAMConfig
from jaxaudio.nn import vit as vit_lib
from jaxaudio.nn.cnn import CNNConfig
from jaxaudio.train.log import get_logger
from jaxaudio.utils.config import from_section

VIT_BASES = {"PASST_S_LORA": vit_lib.PASST_S_LORA, "PASST_S": vit_lib.PASST_S, "plain": vit_lib.ViTConfig()}


def frontend_config(config) -> features.FrontEndConfig:
    """The named preset with every other ``config.frontend`` key as a field override."""
    overrides = {k: v for k, v in config.frontend.items() if k != "preset"}
    preset = getattr(features, config.frontend.preset, None)
    if not isinstance(preset, features.FrontEndConfig):
        raise ConfigError(f"frontend.preset: unknown front end {config.frontend.preset!r} (e.g. PASST_32K)")
    cfg = from_section(features.FrontEndConfig, overrides, "frontend", base=preset)
    if cfg.sample_rate != config.data.sample_rate:
        raise ConfigError(f"frontend.sample_rate {cfg.sample_rate} Hz differs from data.sample_rate "
                          f"{config.data.sample_rate}")
    if cfg.n_mels != config.model.n_mels:
        raise ConfigError(f"frontend.n_mels={cfg.n_mels} differs from model.n_mels={config.model.n_mels}")
    return cfg


def vit_config(config) -> vit_lib.ViTConfig:
    """The PaSST-style encoder of ``config.model`` (PMAM and MAT-SED alike)."""
    m = config.model
    if m.vit not in VIT_BASES:
        raise ConfigError(f"model.vit: unknown encoder {m.vit!r}; known: {', '.join(VIT_BASES)}")
    return dataclasses.replace(VIT_BASES[m.vit], n_mels=m.n_mels, max_frames=m.frames - 2, dim=m.vit_dim,
                               depth=m.vit_depth, num_heads=m.vit_heads, mlp_ratio=m.vit_mlp_ratio, out_layer=None,
                               time_stride=m.get("vit_time_stride", 0))


def model_config(config) -> PMAMConfig:
    m = config.model
    vit = vit_config(config)
    cnn = CNNConfig(channels=tuple(m.cnn_channels), pooling=tuple(tuple(p) for p in m.cnn_pooling),
                    dropout=m.cnn_dropout, activation="cg")
    return PMAMConfig(vit=vit, feature_layer=m.feature_layer, cnn=cnn, freq_pool_heads=m.freq_pool_heads,
                      at_heads=m.at_heads, decoder_dim=m.decoder_dim, context_layers=m.context_layers,
                      context_heads=m.context_heads, n_prototypes=m.n_prototypes,
                      n_classes=len(sed_data.classes(config.data)), pred_len=m.frames, upsample=vit.step)


def with_passt_weights(model, config, name: str = "pmam"):
    """``model`` with its PaSST encoder from ``model.passt_checkpoint`` when one is given."""
    path = config.model.passt_checkpoint
    if path:
        from jaxaudio.convert.passt import load_passt  # torch is needed only here (extra "convert")

        get_logger(f"jaxaudio.{name}").info("PaSST encoder from %s", path)
        model.encoder = load_passt(path, model.cfg.vit, rngs=nnx.Rngs(config.seed))
    return model


def build_model(config) -> PMAM:
    """A fresh PMAM; its PaSST branch from ``model.passt_checkpoint`` when one is given."""
    return with_passt_weights(PMAM(model_config(config), rngs=nnx.Rngs(config.seed)), config)


def mel_frames(audio: jax.Array, fe: features.FrontEndConfig, frames: int, key: jax.Array | None = None) -> jax.Array:
    """Waveform ``(batch, samples)`` -> log-mel ``(batch, frames, n_mels)``, cut to the model's frames.
    ``key``: a training step's, for the front end's mel-bank jitter (``fmin/fmax_aug_range``)."""
    mel = features.log_mel(audio, fe, key)
    if mel.shape[1] < frames:
        raise ConfigError(f"the front end gives {mel.shape[1]} frames per clip but model.frames={frames}; "
                          "lower model.frames or the hop length")
    return mel[:, :frames].astype(jnp.float32)
