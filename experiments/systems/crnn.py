"""CRNN baseline: log-mel on device -> CRNN, mean-teacher training, PSDS evaluation.

Wiring only: every piece lives in ``jaxaudio``. A run resumes from its workdir by itself.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
from flax import nnx

from experiments.systems import sed_augment, sed_data, sed_eval
from jaxaudio.audio import features
from jaxaudio.data.desed import DESED_CLASSES
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.errors import ConfigError
from jaxaudio.models.crnn import CRNN, CRNNConfig
from jaxaudio.nn.cnn import CNNConfig
from jaxaudio.objectives.sed import mean_teacher_loss
from jaxaudio.train import distributed
from jaxaudio.train.checkpoint import abstract_like
from jaxaudio.train.log import get_logger
from jaxaudio.train.loop import LoopConfig, train_loop
from jaxaudio.train.mesh import batch_sharding, global_batch, make_mesh, replicated
from jaxaudio.train.optim import make_lr_schedule, make_optimizer
from jaxaudio.train.schedules import sigmoid_rampup
from jaxaudio.train.sharding import create_sharded_state
from jaxaudio.train.step import make_eval_step, make_train_step

TRAIN_KEYS = ("audio", "strong", "weak", "has_strong", "has_weak")
EVAL_KEYS = ("audio", "index")


def frontend_config(config) -> features.FrontEndConfig:
    preset = getattr(features, config.frontend.preset, None)
    if not isinstance(preset, features.FrontEndConfig):
        raise ConfigError(f"frontend.preset: unknown front end {config.frontend.preset!r} (e.g. DCASE_16K)")
    cfg = dataclasses.replace(preset, n_mels=config.frontend.n_mels, n_fft=config.frontend.n_fft,
                              hop_length=config.frontend.hop_length,
                              win_length=min(preset.win_length, config.frontend.n_fft))
    if cfg.sample_rate != config.data.sample_rate:
        raise ConfigError(
            f"frontend.preset {config.frontend.preset} expects {cfg.sample_rate} Hz but data.sample_rate is "
            f"{config.data.sample_rate}"
        )
    return cfg


def model_config(config) -> CRNNConfig:
    m = config.model
    cnn = CNNConfig(channels=tuple(m.channels), pooling=tuple(tuple(p) for p in m.pooling), dropout=m.dropout,
                    activation=m.activation)
    return CRNNConfig(n_classes=len(DESED_CLASSES), cnn=cnn, rnn_hidden=m.rnn_hidden, rnn_layers=m.rnn_layers,
                      dropout=m.dropout)


def lr_schedule_config(config) -> dict:
    t = config.train
    return {"kind": "warmup_exp_down", "warmup_steps": t.warmup_steps, "decay_start_step": t.steps // 2,
            "exponent": -1.0}


def make_tx(config):
    """AdamW with warm-up then exponential decay over the second half, gradients clipped."""
    t = config.train
    return make_optimizer([], {"lr": t.lr, "schedule": lr_schedule_config(config)}, t.clip_norm, t.steps)


def make_loss_fn(config, fe: features.FrontEndConfig, segments: list[tuple[int, int]]):
    """Mean-teacher loss with the augmentations of the DCASE baseline, all inside the step."""
    t = config.train

    augment_batch = sed_augment.make_augment(segments, frame_shift_sigma=t.frame_shift_sigma,
                                             mixup_prob=t.mixup_prob, filter_augment=t.filter_augment)

    def loss_fn(model, batch, rng, teacher, step):
        k_aug, k_student, k_teacher = jax.random.split(rng, 3)
        feats = features.log_mel(batch["audio"], fe)
        feats, strong, weak = augment_batch(k_aug, feats, batch["strong"], batch["weak"])
        student_out = model(feats, rngs=k_student)
        teacher_out = teacher(feats, rngs=k_teacher)
        targets = {"strong": strong, "weak": weak, "has_strong": batch["has_strong"], "has_weak": batch["has_weak"]}
        w_cons = t.consistency_max * sigmoid_rampup(step, t.consistency_rampup_steps)
        return mean_teacher_loss(student_out, teacher_out, targets, w_cons)

    return loss_fn


def run(config, workdir: str) -> dict:
    distributed.maybe_initialize()
    logger = get_logger("jaxaudio.crnn")
    os.makedirs(workdir, exist_ok=True)
    fe = frontend_config(config)
    mcfg = model_config(config)
    clip_samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    n_out = mcfg.cnn.output_frames(fe.num_frames(clip_samples))
    encoder = FrameLabelEncoder(DESED_CLASSES, config.data.clip_seconds, n_out)

    root = sed_data.data_root(config.data)
    batches = sed_data.train_batches(root, config.data, config.batch, encoder, config.seed)
    segments = sed_augment.batch_segments((config.batch.strong, config.batch.weak, config.batch.unlabeled))

    mesh = make_mesh(**config.mesh)
    t = config.train
    schedule_cfg = lr_schedule_config(config)
    tx = make_tx(config)
    key = jax.random.key(config.seed)
    graphdef, state, shardings = create_sharded_state(
        lambda: CRNN(mcfg, rngs=nnx.Rngs(config.seed)), tx, key, mesh, with_teacher=True)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    logger.info("CRNN: %d parameters; mesh %s; %d output frames per clip", n_params, dict(mesh.shape), n_out)

    bsharding = batch_sharding(mesh)
    train_step = make_train_step(
        graphdef, make_loss_fn(config, fe, segments), tx, state_shardings=shardings, batch_sharding=bsharding,
        ema_decay=t.ema_decay, learning_rate=make_lr_schedule(t.lr, schedule_cfg, t.steps))

    def predict_fn(model, batch):
        out = model(features.log_mel(batch["audio"], fe))
        return out["strong"], batch["index"]

    eval_step = make_eval_step(graphdef, predict_fn, params_sharding=shardings.params,
                               model_state_sharding=shardings.model_state, batch_sharding=bsharding,
                               out_sharding=replicated(mesh))
    to_train = lambda b: global_batch({k: b[k] for k in TRAIN_KEYS}, mesh)  # noqa: E731
    to_eval = lambda b: global_batch({k: b[k] for k in EVAL_KEYS}, mesh)  # noqa: E731
    val_source = sed_data.clip_source(root, config.data, config.data.validation, encoder)

    def evaluate(state, step, source=val_source, plot_prefix=None):
        results = {}
        for who, params, mstate in (("student", state.params, state.model_state),
                                    ("teacher", state.teacher["params"], state.teacher["model_state"])):
            scores = sed_eval.predict_subset(source, lambda b: eval_step(params, mstate, b), config.batch.eval,
                                             to_eval)
            plot = os.path.join(workdir, f"{plot_prefix}_{who}_psd_roc.png") if plot_prefix else None
            metrics = sed_eval.sed_metrics(scores, source, config.eval.median_window, plot_path=plot,
                                           title=f"CRNN {who}")
            results.update({f"{who}/{k}": v for k, v in metrics.items()})
        return results

    loop_cfg = LoopConfig(total_steps=t.steps, log_every=t.log_every, eval_every=t.eval_every or None,
                          checkpoint_every=t.checkpoint_every, keep=t.keep,
                          best_metric="teacher/psds1" if t.eval_every else None)
    started = time.time()
    state, summary = train_loop(workdir=workdir, state=state, train_step=train_step, batches=batches,
                                to_device=to_train, config=loop_cfg,
                                eval_fn=evaluate if t.eval_every else None,
                                abstract_state=abstract_like(state), progress_desc="crnn")
    final = {}
    for split in (config.data.validation, config.data.test):
        source = val_source if split == config.data.validation else sed_data.clip_source(
            root, config.data, split, encoder)
        logger.info("evaluating on %s (%d clips)", split, len(source))
        final.update({f"{split}/{k}": v for k, v in evaluate(state, t.steps, source, plot_prefix=split).items()})
    summary = dict(summary)
    summary["final_eval"] = final
    summary["params"] = n_params
    summary["total_wall_seconds"] = time.time() - started
    sed_eval.write_json(os.path.join(workdir, "metrics.json"), summary)
    for line in (f"{k}: {v:.4f}" for k, v in sorted(final.items())):
        logger.info(line)
    return final
