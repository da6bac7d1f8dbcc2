"""The autoregressive ASR baseline: Paraformer's encoder, a causal decoder, joint CTC; one stage.

Wiring only: the network, its loss and its decoders are ``jaxaudio/models/ar_asr.py``; data,
features and the training stage are shared with Paraformer (``experiments/asr``).
"""
from __future__ import annotations

import functools

import jax
from flax import nnx

from experiments.ar_asr import config as ar_config
from experiments.asr.training import asr_system, augmented_features, encoder_config, eval_features, \
    frame_seconds, train_stages, vocab_size
from jaxaudio.models import ar_asr
from jaxaudio.train.system import Stage


def model_config(config) -> ar_asr.ARASRConfig:
    m = config.model
    return ar_asr.ARASRConfig(
        encoder=encoder_config(config), vocab_size=vocab_size(config), decoder_layers=m.decoder_layers,
        decoder_heads=m.decoder_heads, decoder_ffn=m.decoder_ffn, decoder_dropout=m.decoder_dropout,
        decoder_attention_dropout=m.decoder_attention_dropout, max_tokens=int(config.data.max_tokens),
        ctc_weight=m.ctc_weight, label_smoothing=m.label_smoothing,
        length_penalty=float(config.decode.length_penalty))


def build_model(config) -> ar_asr.ARASR:
    return ar_asr.ARASR(model_config(config), rngs=nnx.Rngs(config.seed))


def loss_fn(config):
    def loss(model, batch, rng, teacher, step):
        k_aug, k_drop = jax.random.split(rng)
        feats, mask = augmented_features(config, batch, k_aug)
        out = model(feats, mask, batch["tokens"], batch["token_len"], train=True, rngs=k_drop)
        parts = ar_asr.ar_asr_loss(out, batch["tokens"], batch["token_len"], model.cfg)
        return parts["loss"], {k: v for k, v in parts.items() if k != "loss"}

    return loss


def stages(config, workdir: str) -> list[Stage]:
    return train_stages(config, loss_fn(config))


def decode(model, feats, mask, *, beam: int = 1, ctc_weight: float = 0.0) -> dict:
    """Beam search (greedy for beam 1), joint CTC / attention when ``ctc_weight > 0`` (static): tokens and
    their count, as the ASR evaluator reads them."""
    if int(beam) == 1:
        out = ar_asr.greedy_decode(model, feats, mask, ctc_weight=float(ctc_weight))
    else:
        out = ar_asr.beam_search(model, feats, mask, beam=int(beam), ctc_weight=float(ctc_weight))
    return {"tokens": out["tokens"], "token_len": out["lengths"]}


def decode_ctc_weight(config) -> float:
    """``config.decode.ctc_weight``; 0 (attention only) for run records written before it existed."""
    return float(config.decode.get("ctc_weight", 0.0))


def predict(config):
    beam, weight = int(config.decode.beam), decode_ctc_weight(config)

    def fn(model, batch):
        return decode(model, *eval_features(config, batch), beam=beam, ctc_weight=weight)

    return fn


def predictor(config, workdir: str):
    """``--mode=predict`` (``jaxaudio/predict/asr.py``): the evaluator's decoding (beam search of
    ``config.decode.beam``, ``data.max_tokens`` slots). No CIF, so no fire frames and no token times
    (``token_times`` is null); ``frame_seconds`` (one encoder frame) is only recorded in the summary."""
    from experiments.asr import predictor as asr_predictor

    return asr_predictor.predictor(SYSTEM, config, workdir, functools.partial(
        decode, beam=int(config.decode.beam), ctc_weight=decode_ctc_weight(config)),
                                   frame_seconds=frame_seconds(config))


SYSTEM = asr_system(
    name="ar_asr",
    description="Autoregressive ASR baseline: Paraformer's Conformer encoder, causal Transformer decoder, joint CTC, "
                "beam search",
    get_config=ar_config.get_config,
    presets=ar_config.PRESETS,
    build_model=build_model,
    stages=stages,
    predict=predict,
    predictor=predictor,
)
