"""CRNN baseline: log-mel on device -> CRNN, one mean-teacher training stage, PSDS evaluation.

Wiring only: every piece lives in ``jaxaudio``; the trainer runs the stage and resumes it.
"""
from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from experiments.crnn import config as crnn_config
from experiments.sed import augment as sed_augment
from experiments.sed import data as sed_data
from experiments.sed import task
from jaxaudio.audio import features
from jaxaudio.audio.features import FRONTEND_SCOPE
from jaxaudio.errors import ConfigError
from jaxaudio.models.crnn import CRNN, CRNNConfig, instance_scale
from jaxaudio.nn.cnn import CNNConfig
from jaxaudio.nn.pooling import POOLING_SCOPE
from jaxaudio.objectives.sed import mean_teacher_loss
from jaxaudio.train.stage_config import stage_fields
from jaxaudio.train.system import Stage, System
from jaxaudio.train.schedules import sigmoid_rampup

STAGE = "train"


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
    return CRNNConfig(n_classes=len(sed_data.classes(config.data)), cnn=cnn, rnn_hidden=m.rnn_hidden,
                      rnn_layers=m.rnn_layers, dropout=m.dropout)


def output_frames(config) -> int:
    fe = frontend_config(config)
    clip_samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    return model_config(config).cnn.output_frames(fe.num_frames(clip_samples))


def build_model(config) -> CRNN:
    return CRNN(model_config(config), rngs=nnx.Rngs(config.seed))


def loss_fn(config, segments=None):
    """Mean-teacher loss with the augmentations of the DCASE baseline, all inside the step.
    ``segments``: the rows of each source in a batch (default: the config's batch counts)."""
    s, b = config.stages[STAGE], config.batch
    fe = frontend_config(config)
    segments = segments or sed_augment.batch_segments((b.strong, b.weak, b.unlabeled))
    augment = sed_augment.stage_augment(s, fe, segments, (b.strong, b.weak, b.unlabeled))

    def loss(model, batch, rng, teacher, step):
        k_aug, k_student, k_teacher = jax.random.split(rng, 3)
        feats = features.log_mel(batch["audio"], fe)
        feats, teacher_feats, strong, weak = augment.pair(k_aug, feats, batch["strong"], batch["weak"])
        student_out = model(feats, train=True, rngs=k_student)
        teacher_out = teacher(teacher_feats, train=True, rngs=k_teacher)
        targets = {"strong": strong, "weak": weak, "has_strong": batch["has_strong"], "has_weak": batch["has_weak"]}
        w_cons = s.consistency_max * sigmoid_rampup(step, s.consistency_rampup_steps)
        return mean_teacher_loss(student_out, teacher_out, targets, w_cons)

    return loss


def stages(config, workdir: str) -> list[Stage]:
    data = task.SEDData(config, output_frames(config))
    return [Stage(STAGE, loss=loss_fn(config), batches=lambda: data.mixed_batches(data.finetune_counts(), config.seed),
                  batch_keys=task.TRAIN_KEYS, **stage_fields(config.stages[STAGE], f"stages.{STAGE}"))]


def predict(config):
    fe = frontend_config(config)
    return lambda model, batch: model(features.log_mel(batch["audio"], fe), train=False)


def inference_model(config, workdir: str, *, export: bool = True):
    """The teacher of the finished stage as waveform -> {strong, weak}; in the export form the
    GRU runs its loop (one builtin WHILE per layer: unrolled, its ~3,500 ops cost more file
    than the int8 weights) and the per-example scaling runs in the front end's scope, so the
    int8 variant keeps it in float (quantizing dB values before min-max scaling rounds twice);
    the attention pooling of the weak head stays float too."""
    from jaxaudio.export import frontend as export_frontend
    from jaxaudio.train.trainer import restore_final

    fe = frontend_config(config)
    trained = model_config(config)
    _, state, _ = restore_final(SYSTEM, config, workdir)
    mcfg = dataclasses.replace(trained, input_norm="none", export_rnn=True) if export else trained
    graphdef = nnx.split(nnx.eval_shape(lambda: CRNN(mcfg, rngs=nnx.Rngs(0))), nnx.Param, ...)[0]

    def fn(variables, waveform):
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        if not export:
            return model(features.log_mel(waveform, fe), train=False)
        feats = export_frontend.log_mel(waveform, fe)
        with jax.named_scope(FRONTEND_SCOPE):
            feats = instance_scale(feats, trained.input_norm, trained.norm_eps)
        return model(feats, train=False)

    teacher = state.teacher
    return task.inference_model(config, task.SEDData(config, output_frames(config)), name="crnn", fn=fn,
                                variables={"params": teacher["params"], "model_state": teacher["model_state"]},
                                source=task.describe(workdir, STAGE, int(state.step)),
                                float_scopes=(POOLING_SCOPE,))  # int8 would divide 0 by 0 (nn/pooling.py)


def predictor(config, workdir: str):
    from jaxaudio.train.trainer import batch_predictor

    predict_batch, source = batch_predictor(SYSTEM, config, workdir)
    return task.predictor(config, task.SEDData(config, output_frames(config)), predict_batch), source


def scaling_cases(preset: str) -> dict:
    from experiments.crnn.scaling import crnn_case

    return {"crnn": lambda: crnn_case(preset)}


SYSTEM = System(
    name="crnn",
    description="DCASE task-4 CRNN baseline, mean teacher, PSDS evaluation",
    get_config=crnn_config.get_config,
    presets=crnn_config.PRESETS,
    build_model=build_model,
    stages=stages,
    evaluators=lambda config: task.evaluators(config, task.SEDData(config, output_frames(config))),
    predict=predict,
    final_stage=lambda config: STAGE,
    eval_keys=task.EVAL_KEYS,
    finalize_config=sed_data.resolve_data,
    inference_model=inference_model,
    predictor=predictor,
    scaling_cases=scaling_cases,
)
