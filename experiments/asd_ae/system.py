"""The DCASE2020 task-2 autoencoder baseline: one autoencoder per machine type, one training stage.

Wiring only: the network is ``jaxaudio/models/asd_ae.py`` (one per type in ``asd_ae_bank.py``), the
data ``experiments/asd/data.py``, the metrics ``jaxaudio/evaluators/asd.py``; the trainer runs and
resumes the stage.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from experiments.asd import data as asd_run_data
from experiments.asd import predictor as asd_predictor
from experiments.asd.thresholds import thresholds_stage
from experiments.asd_ae import config as ae_config
from jaxaudio.audio import features
from jaxaudio.models.asd_ae import DCASE2020_T2_FRONTEND, ASDAEConfig
from jaxaudio.models.asd_ae_bank import ASDAEBank, ASDAEBankConfig
from jaxaudio.train.stage_config import stage_fields
from jaxaudio.train.system import Stage, System

STAGE = ae_config.STAGE
KEYS = ("audio", "class_id")


def frontend_config(config) -> features.FrontEndConfig:
    f = config.frontend
    return dataclasses.replace(DCASE2020_T2_FRONTEND, sample_rate=config.data.sample_rate, n_mels=f.n_mels,
                               n_fft=f.n_fft, win_length=f.win_length, hop_length=f.hop_length,
                               norm_mean=f.norm_mean, norm_std=f.norm_std)


def model_config(config) -> ASDAEBankConfig:
    m = config.model
    classes = list(config.data.classes) or asd_run_data.ASDData(config).classes
    ae = ASDAEConfig(n_mels=config.frontend.n_mels, frames=m.frames, hidden=m.hidden, depth=m.depth,
                     bottleneck=m.bottleneck, bn_momentum=m.bn_momentum, bn_epsilon=m.bn_epsilon)
    return ASDAEBankConfig(ae=ae, class_types=asd_run_data.class_types(classes)[1])


def build_model(config) -> ASDAEBank:
    return ASDAEBank(model_config(config), rngs=nnx.Rngs(config.seed))


def loss_fn(config):
    """Every context vector of the batch's clips, each type's AE on its own type's clips."""
    fe = frontend_config(config)

    def loss(model, batch, rng, teacher, step):
        value = model.loss(features.log_mel(batch["audio"], fe), batch["class_id"], train=True)
        return value, {"ae_mse": value / len(model.aes)}

    return loss


def stages(config, workdir: str) -> list[Stage]:
    data = asd_run_data.ASDData(config)
    batch = int(config.batch.train)
    return [Stage(STAGE, loss=loss_fn(config), batch_keys=KEYS, batches=lambda: data.train_batches(batch, config.seed),
                  **stage_fields(config.stages[STAGE], f"stages.{STAGE}")),
            # decision thresholds for --mode=predict: gamma fits to the training normals' errors, as
            # the DCASE2021 baseline AE fits them (experiments/asd/thresholds.py)
            thresholds_stage(config, data, predict, STAGE, KEYS)]


def predict(config):
    """Clip score: its own type's AE's mean reconstruction error over the clip's context vectors."""
    fe = frontend_config(config)

    def fn(model, batch):
        # padding rows have class_id -1: any type will do, their scores are dropped
        return {"score": model.score(features.log_mel(batch["audio"], fe), jnp.maximum(batch["class_id"], 0))}

    return fn


def predictor(config, workdir: str):
    return asd_predictor.predictor(SYSTEM, config, workdir)


SYSTEM = System(
    name="asd_ae",
    description="DCASE2020 task-2 autoencoder baseline: a dense AE per machine type on 5-frame log-mel context, MSE",
    get_config=ae_config.get_config,
    presets=ae_config.PRESETS,
    build_model=build_model,
    stages=stages,
    evaluators=asd_run_data.evaluators,
    predict=predict,
    final_stage=lambda config: STAGE,
    eval_keys=KEYS,
    finalize_config=asd_run_data.finalize,
    predictor=predictor,
    task="asd",
)
