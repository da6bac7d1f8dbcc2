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
    frame_seconds, train_stage, training_data, vocab_size
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
    return [train_stage(config, loss_fn(config), training_data(config, workdir))]


def decode(model, feats, mask, *, beam: int = 1, ctc_weight: float = 0.0, ctc_tokens: int = 0) -> dict:
    """Beam search (greedy for beam 1 without CTC), joint CTC / attention when ``ctc_weight > 0``,
    each hypothesis extended by the decoder's ``ctc_tokens`` best ids (0: ESPnet's int(1.5 * beam));
    all static. Tokens and their count, as the ASR evaluator reads them."""
    if int(beam) == 1 and not ctc_weight:
        out = ar_asr.greedy_decode(model, feats, mask)
    else:
        out = ar_asr.beam_search(model, feats, mask, beam=int(beam), ctc_weight=float(ctc_weight),
                                 ctc_tokens=int(ctc_tokens) or None)
    return {"tokens": out["tokens"], "token_len": out["lengths"]}


def decode_options(config) -> dict:
    """``decode``'s keywords from ``config.decode``; run records written before ``ctc_weight`` /
    ``ctc_tokens`` existed decode as they did (attention only)."""
    d = config.decode
    return {"beam": int(d.beam), "ctc_weight": float(d.get("ctc_weight", 0.0)),
            "ctc_tokens": int(d.get("ctc_tokens", 0))}


def predict(config):
    options = decode_options(config)

    def fn(model, batch):
        return decode(model, *eval_features(config, batch), **options)

    return fn


def predictor(config, workdir: str):
    """``--mode=predict`` (``jaxaudio/predict/asr.py``): the evaluator's decoding (``config.decode``,
    ``data.max_tokens`` slots). No CIF, so no fire frames and no token times (``token_times`` is
    null); ``frame_seconds`` (one encoder frame) is only recorded in the summary."""
    from experiments.asr import predictor as asr_predictor

    return asr_predictor.predictor(SYSTEM, config, workdir, functools.partial(decode, **decode_options(config)),
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
