"""Paraformer: Conformer encoder, CIF predictor, glancing sampler; one training stage.

Wiring only: the network and its losses are ``jaxaudio/models/paraformer.py`` (with
``nn/conformer.py`` and ``nn/cif.py``), the data ``experiments/asr/data.py``, the metrics
``jaxaudio/evaluators/asr.py``; the trainer runs, validates and resumes the stage.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.asr.recipe import TRAIN_STAGE
from experiments.asr.training import (
    asr_system,
    augmented_features,
    encoder_config,
    eval_features,
    frame_seconds,
    train_stage,
    training_data,
    vocab_size,
)
from experiments.paraformer import config as paraformer_config
from jaxaudio.models import paraformer as paraformer_model
from jaxaudio.nn.cnn import as_rngs
from jaxaudio.objectives.mwer import mwer_loss
from jaxaudio.train.system import Stage

MWER_STAGE = "mwer"


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


def loss_fn(config, *, mwer: bool = False):
    """The training loss (0.3 CTC + 0.7 CE + 1.0 quantity). With ``mwer``: ``config.mwer.base_weight``
    times that, plus ``config.mwer.weight`` times the MWER loss of a first decoder pass with gradient
    over the CIF embeddings (scaled to the target length, so the hypotheses differ in their tokens,
    not their count; ``jaxaudio/objectives/mwer.py`` says which reading of the paper this is)."""
    def loss(model, batch, rng, teacher, step):
        if mwer:
            rng, k_mwer, k_mwer_drop = jax.random.split(rng, 3)
        k_aug, k_glance, k_drop = jax.random.split(rng, 3)
        feats, mask = augmented_features(config, batch, k_aug)
        out = model(feats, mask, batch["tokens"], batch["token_len"], train=True, rngs=k_drop, key=k_glance)
        parts = paraformer_model.paraformer_loss(out, batch["tokens"], batch["token_len"], model.cfg)
        if mwer:
            first = model.decoder(out["acoustic"], out["target_mask"], out["enc"], out["enc_mask"], train=True,
                                  rngs=as_rngs(k_mwer_drop))
            value, aux = mwer_loss(k_mwer, first, batch["token_len"], batch["tokens"], batch["token_len"],
                                   n=int(config.mwer.hypotheses))
            total = float(config.mwer.base_weight) * parts["loss"] + float(config.mwer.weight) * value
            parts = {**parts, **aux, "base_loss": parts["loss"], "loss": total}
        return parts["loss"], {k: v for k, v in parts.items() if k != "loss"}

    return loss


def stages(config, workdir: str) -> list[Stage]:
    data = training_data(config, workdir)
    out = [train_stage(config, loss_fn(config), data)]
    if mwer_enabled(config):
        out.append(train_stage(config, loss_fn(config, mwer=True), data, name=MWER_STAGE, init_from=TRAIN_STAGE))
    return out


def mwer_enabled(config) -> bool:
    return int(config.stages.get(MWER_STAGE, {}).get("steps", 0)) > 0


def final_stage(config) -> str:
    return MWER_STAGE if mwer_enabled(config) else TRAIN_STAGE


def decode(model, feats, mask, *, every_frame: bool = False) -> dict:
    """Greedy single-step decoding: tokens, their count and each token's encoder frame (CIF fire);
    ``every_frame``: a token slot per encoder frame instead of ``data.max_tokens`` (``greedy_decode``)."""
    out = paraformer_model.greedy_decode(model, feats, mask, every_frame=every_frame)
    return {"tokens": out["ids"], "token_len": jnp.minimum(out["token_num"], out["ids"].shape[1]),
            "fire_frames": out["fire_positions"]}


def predict(config):
    def fn(model, batch):
        return decode(model, *eval_features(config, batch))

    return fn


def predictor(config, workdir: str):
    """``--mode=predict`` (``jaxaudio/predict/asr.py``): greedy decoding as ``decode``, but with one
    token slot per encoder frame (``every_frame``) instead of ``data.max_tokens``, so a file longer
    than the training utterances loses no token to a full buffer."""
    from experiments.asr import predictor as asr_predictor

    return asr_predictor.predictor(SYSTEM, config, workdir, functools.partial(decode, every_frame=True),
                                   frame_seconds=frame_seconds(config))


def inference_model(config, workdir: str, *, export: bool = True):
    """``--mode=export``: zero-padded waveform -> token ids, token count and CIF fire frames
    (``experiments/paraformer/export.py``; ``export=False``: the training-time graph)."""
    from experiments.paraformer import export as paraformer_export

    return paraformer_export.inference_model(config, workdir, export=export)


SYSTEM = asr_system(
    name="paraformer",
    description="Paraformer non-autoregressive ASR: Conformer encoder, CIF predictor, glancing sampler, CTC + CE + "
                "quantity loss",
    get_config=paraformer_config.get_config,
    presets=paraformer_config.PRESETS,
    build_model=build_model,
    stages=stages,
    final_stage=final_stage,
    predict=predict,
    inference_model=inference_model,
    predictor=predictor,
)
