"""GeCo: PAE per machine type, then the STgram extractor on originals and reconstructions.

Wiring only: the networks are ``jaxaudio/models/{geco,pae,geco_pair}.py``, the losses
``jaxaudio/objectives/contrastive.py``, the data ``experiments/asd/data.py``, the metrics
``jaxaudio/evaluators/asd.py``; the trainer runs and resumes the stages.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments.asd import data as asd_run_data
from experiments.asd import predictor as asd_predictor
from experiments.asd.thresholds import thresholds_stage
from experiments.geco import config as geco_config
from jaxaudio.audio import features
from jaxaudio.errors import ConfigError
from jaxaudio.models import geco as geco_model
from jaxaudio.models.geco_pair import GeCoPair, GeCoPairConfig
from jaxaudio.models.pae import PAEConfig
from jaxaudio.objectives.contrastive import geco_contrastive_labels, supcon_loss
from jaxaudio.train.stage_config import stage_fields
from jaxaudio.train.system import Stage, System

PAE_STAGE, EXTRACTOR_STAGE = "pae", "extractor"
TRAIN_KEYS = ("audio", "class_id")
EVAL_KEYS = ("audio", "class_id")
FROZEN = r"^paes/"


def frontend_config(config) -> features.FrontEndConfig:
    f = config.frontend
    return dataclasses.replace(geco_model.STGRAM_FRONTEND, sample_rate=config.data.sample_rate, n_mels=f.n_mels,
                               n_fft=f.n_fft, win_length=f.win_length, hop_length=f.hop_length,
                               norm_mean=f.norm_mean, norm_std=f.norm_std)


def model_config(config) -> GeCoPairConfig:
    m, g = config.model, config.geco
    classes = list(config.data.classes) or asd_run_data.ASDData(config).classes
    net = geco_model.GeCoConfig(
        frontend=frontend_config(config), frames=m.frames, n_classes=len(classes), wave_branch=m.wave_branch,
        stem_channels=m.stem_channels, bottlenecks=tuple(tuple(b) for b in m.bottlenecks),
        conv_channels=m.conv_channels, embedding_dim=m.embedding_dim, head=m.head, arc_margin=m.arc_margin,
        arc_scale=m.arc_scale, recon_head=bool(g.reconstructions), recon_wave=m.recon_wave,
        segment_hop=m.segment_hop or None)
    p = m.pae
    pae = PAEConfig(n_mels=net.n_mels, context=p.context, dim=p.dim, layers=p.layers, heads=p.heads,
                    mlp_ratio=p.mlp_ratio)
    return GeCoPairConfig(net=net, pae=pae, class_types=asd_run_data.class_types(classes)[1],
                          reconstructions=bool(g.reconstructions))


def build_model(config) -> GeCoPair:
    return GeCoPair(model_config(config), rngs=nnx.Rngs(config.seed))


def _check_length(mel, frames: int, key: str) -> None:
    if mel.shape[1] < frames:
        raise ConfigError(f"{key}={frames} frames, but a clip (data.clip_seconds) has only {mel.shape[1]}")


def random_crop(key, mel, wave, frames: int, hop: int, samples: int):
    """One random ``frames``-long segment per row of ``mel (b, T, F)`` and the waveform under it."""
    b, t = mel.shape[:2]
    _check_length(mel, frames, "model.frames")
    start = jax.random.randint(key, (b,), 0, t - frames + 1)
    mel_crop = jax.vmap(lambda m, s: jax.lax.dynamic_slice_in_dim(m, s, frames, 0))(mel, start)
    pad = max(0, (t - frames) * hop + samples - wave.shape[1])
    wave = jnp.pad(wave, ((0, 0), (0, pad)))
    wave_crop = jax.vmap(lambda w, s: jax.lax.dynamic_slice_in_dim(w, s * hop, samples, 0))(wave, start)
    return mel_crop, wave_crop


def pae_loss_fn(config):
    fe, frames = frontend_config(config), int(config.stages[PAE_STAGE].frames)

    def loss(model, batch, rng, teacher, step):
        mel = features.log_mel(batch["audio"], fe)
        _check_length(mel, frames, f"stages.{PAE_STAGE}.frames")
        start = jax.random.randint(rng, (mel.shape[0],), 0, mel.shape[1] - frames + 1)
        mel = jax.vmap(lambda m, s: jax.lax.dynamic_slice_in_dim(m, s, frames, 0))(mel, start)
        value = model.pae_loss(mel, batch["class_id"], train=True)
        return value, {"pae_mse": value / len(model.paes)}

    return loss


def extractor_loss_fn(config):
    """CE over IDs on the originals, and with reconstructions SupCon (originals and reconstructions of
    an ID as two classes) + the real-vs-reconstruction BCE (``config.geco`` weights)."""
    fe, g = frontend_config(config), config.geco

    def loss(model, batch, rng, teacher, step):
        # built when the loss is traced, not when the stage list is: the class list may need the data
        net_cfg = model_config(config).net
        n_classes = net_cfg.n_classes
        class_id = batch["class_id"]
        mel = features.log_mel(batch["audio"], fe)
        mel, wave = random_crop(rng, mel, batch["audio"], net_cfg.frames, fe.hop_length, net_cfg.segment_samples)
        b = mel.shape[0]
        if not g.reconstructions:
            out = model(mel, wave, train=True, labels=class_id)
            ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out["id_logits"], class_id))
            return ce, {"ce": ce}
        recon = jax.lax.stop_gradient(model.reconstruct(mel, class_id))
        mel2, wave2, is_recon = geco_model.with_reconstructions(mel, wave, recon)
        ids2 = jnp.concatenate([class_id, class_id])
        out = model(mel2, wave2, train=True, labels=ids2, is_recon=is_recon)
        ce_rows = optax.softmax_cross_entropy_with_integer_labels(out["id_logits"], ids2)
        ce = jnp.mean(ce_rows) if g.ce_on_reconstructions else jnp.mean(ce_rows[:b])
        sc = supcon_loss(out["embedding"], geco_contrastive_labels(ids2, is_recon, n_classes),
                         temperature=g.temperature)
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(out["recon_logit"], is_recon.astype(jnp.float32)))
        total = g.ce_weight * ce + g.supcon_weight * sc + g.recon_weight * bce
        return total, {"ce": ce, "supcon": sc, "recon_bce": bce,
                       "recon_acc": jnp.mean((out["recon_logit"] > 0) == is_recon)}

    return loss


def stages(config, workdir: str) -> list[Stage]:
    data = asd_run_data.ASDData(config)
    batch = int(config.batch.train)
    frozen_paes = ({"name": "paes_frozen", "pattern": FROZEN, "lr": 0.0},)
    out = []
    if config.geco.reconstructions:
        pae = config.stages[PAE_STAGE]
        out.append(Stage(PAE_STAGE, loss=pae_loss_fn(config), batch_keys=TRAIN_KEYS,
                         batches=lambda: data.train_batches(batch, config.seed),
                         **stage_fields(pae, f"stages.{PAE_STAGE}",
                                        extra_groups=({"name": "net_frozen", "pattern": r"^net/", "lr": 0.0},))))
    x = config.stages[EXTRACTOR_STAGE]
    out.append(Stage(EXTRACTOR_STAGE, loss=extractor_loss_fn(config), batch_keys=TRAIN_KEYS,
                     batches=lambda: data.train_batches(batch, config.seed + 1),
                     init_from=PAE_STAGE if config.geco.reconstructions else None,
                     **stage_fields(x, f"stages.{EXTRACTOR_STAGE}",
                                    extra_groups=frozen_paes if config.geco.reconstructions else ())))
    # decision thresholds for --mode=predict, on the training normals (not a training stage:
    # final_stage stays the extractor, whose weights evaluation, predict and export read)
    out.append(thresholds_stage(config, data, predict, EXTRACTOR_STAGE, EVAL_KEYS))
    return out


def predict(config):
    """Clip score: -log p(the clip's ID) averaged over its segments (``segment_clip``)."""
    fe = frontend_config(config)
    net_cfg = model_config(config).net

    def fn(model, batch):
        audio = batch["audio"]
        mel = features.log_mel(audio, fe)
        mel_seg, wave_seg = geco_model.segment_clip(mel, audio, net_cfg)   # (b, n, frames, F), (b, n, S)
        b, n = mel_seg.shape[:2]
        out = model(mel_seg.reshape(b * n, *mel_seg.shape[2:]), wave_seg.reshape(b * n, -1), train=False)
        logits = out["id_logits"].reshape(b, n, -1)
        return {"score": geco_model.clip_score(logits, jnp.maximum(batch["class_id"], 0))}

    return fn


def predictor(config, workdir: str):
    return asd_predictor.predictor(SYSTEM, config, workdir)


def inference_model(config, workdir: str, *, export: bool = True):
    """The finished extractor stage as waveform -> ``score_per_class`` (experiments/asd/export.py):
    log-mel, the clip's segments (``segment_clip``, Tgram waveform segments included), the
    extractor ``net`` (the PAEs only make training data) and for every class the mean over
    segments of -log p(ID). The export form computes the log-mel's DFT matrix in the graph
    (``jaxaudio/export/frontend.py``). int8 keeps in float the log-mel, the segmenting (in the front
    end's scope, so the waveform reaching the Tgram is never rounded to int8), the Tgram's strided
    conv on the waveform (``TGRAM_SCOPE``) and the score head (``SCORE_SCOPE``)."""
    from experiments.asd import export as asd_export
    from jaxaudio.export import frontend as export_frontend
    from jaxaudio.train.trainer import restore_final

    fe = frontend_config(config)
    net_cfg = model_config(config).net
    _, state, _ = restore_final(SYSTEM, config, workdir)
    graphdef = nnx.split(nnx.eval_shape(lambda: geco_model.GeCoNet(net_cfg, rngs=nnx.Rngs(0))), nnx.Param, ...)[0]

    def fn(variables, waveform):
        net = nnx.merge(graphdef, variables["params"], variables["model_state"])
        mel = (export_frontend.log_mel if export else features.log_mel)(waveform, fe)
        with jax.named_scope(features.FRONTEND_SCOPE):
            mel_seg, wave_seg = geco_model.segment_clip(mel, waveform, net_cfg)   # (b, n, frames, F), (b, n, S)
        b, n = mel_seg.shape[:2]
        out = net(mel_seg.reshape(b * n, *mel_seg.shape[2:]), wave_seg.reshape(b * n, -1), train=False)
        return {asd_export.SCORE_PER_CLASS: asd_export.id_scores(out["id_logits"].reshape(b, n, -1))}

    variables = {"params": state.params["net"], "model_state": state.model_state["net"]}
    return asd_export.inference_model(
        config, asd_run_data.ASDData(config), name="geco", fn=fn, variables=variables,
        source=f"{os.path.abspath(workdir)} ({EXTRACTOR_STAGE}, step {int(state.step)})",
        evaluator=asd_run_data.evaluators(config)["test"],
        float_scopes=(asd_export.SCORE_SCOPE, geco_model.TGRAM_SCOPE))


SYSTEM = System(
    name="geco",
    description="GeCo anomalous sound detection: PAE per machine type + STgram extractor, CE + SupCon + BCE",
    get_config=geco_config.get_config,
    presets=geco_config.PRESETS,
    build_model=build_model,
    stages=stages,
    evaluators=asd_run_data.evaluators,
    predict=predict,
    final_stage=lambda config: EXTRACTOR_STAGE,
    eval_keys=EVAL_KEYS,
    finalize_config=asd_run_data.finalize,
    predictor=predictor,
    inference_model=inference_model,
    task="asd",
)
