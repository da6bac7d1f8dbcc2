"""Paraformer: Conformer encoder, CIF predictor, glancing sampler; one training stage.

Wiring only: the network and its losses are ``jaxaudio/models/paraformer.py`` (with
``nn/conformer.py`` and ``nn/cif.py``), the data ``experiments/asr/data.py``, the metrics
``jaxaudio/evaluators/asr.py``; the trainer runs, validates and resumes the stage.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.asr import data as asr_data
from experiments.asr.training import (
    asr_system,
    augmented_features,
    encoder_config,
    eval_features,
    train_stages,
    vocab_size,
)
from experiments.paraformer import config as paraformer_config
from jaxaudio.models import paraformer as paraformer_model
from jaxaudio.train.system import Stage


def model_config(config) -> paraformer_model.ParaformerConfig:
    m, p = config.model, config.paraformer
    return paraformer_model.ParaformerConfig(
        encoder=encoder_config(config), vocab_size=vocab_size(config), decoder_layers=m.decoder_layers,
        decoder_heads=m.decoder_heads, decoder_ffn=m.decoder_ffn, decoder_dropout=m.decoder_dropout,
        decoder_attention_dropout=m.decoder_attention_dropout, predictor_dropout=p.predictor_dropout,
        threshold=p.threshold, tail_threshold=p.tail_threshold, max_tokens=int(config.data.max_tokens),
        ctc_weight=m.ctc_weight, predictor_weight=p.predictor_weight, label_smoothing=m.label_smoothing,
        sampling_ratio=p.sampling_ratio)


def build_model(config) -> paraformer_model.Paraformer:
    return paraformer_model.Paraformer(model_config(config), rngs=nnx.Rngs(config.seed))


def loss_fn(config):
    def loss(model, batch, rng, teacher, step):
        k_aug, k_glance, k_drop = jax.random.split(rng, 3)
        feats, mask = augmented_features(config, batch, k_aug)
        out = model(feats, mask, batch["tokens"], batch["token_len"], train=True, rngs=k_drop, key=k_glance)
        parts = paraformer_model.paraformer_loss(out, batch["tokens"], batch["token_len"], model.cfg)
        return parts["loss"], {k: v for k, v in parts.items() if k != "loss"}

    return loss


def stages(config, workdir: str) -> list[Stage]:
    return train_stages(config, loss_fn(config))


def decode(model, feats, mask) -> dict:
    """Greedy single-step decoding: tokens, their count and each token's encoder frame (CIF fire)."""
    out = paraformer_model.greedy_decode(model, feats, mask)
    return {"tokens": out["ids"], "token_len": jnp.minimum(out["token_num"], out["ids"].shape[1]),
            "fire_frames": out["fire_positions"]}


def predict(config):
    def fn(model, batch):
        return decode(model, *eval_features(config, batch))

    return fn


def frame_seconds(config) -> float:
    """Seconds per encoder frame: the fbank hop times the ÷4 subsampling."""
    fe = asr_data.frontend_config(config)
    return 4 * fe.hop_length / fe.sample_rate


SYSTEM = asr_system(
    name="paraformer",
    description="Paraformer non-autoregressive ASR: Conformer encoder, CIF predictor, glancing sampler, CTC + CE + "
                "quantity loss",
    get_config=paraformer_config.get_config,
    presets=paraformer_config.PRESETS,
    build_model=build_model,
    stages=stages,
    predict=predict,
)
