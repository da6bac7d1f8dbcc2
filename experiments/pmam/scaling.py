"""PMAM's scaling cases: the masked-audio-model pre-training step and fine-tuning stage 2."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from experiments.pmam import system
from experiments.pmam.model import build_model, frontend_config, model_config
from experiments.sed.scaling import finetune_batch_spec, quarter_segments
from jaxaudio.scaling.study import Case
from jaxaudio.train.trainer import stage_optimizer


def _parts(preset: str):
    config = system.SYSTEM.get_config(preset)
    config.pretrain.rounds = max(1, config.pretrain.rounds)
    samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    stages = {s.name: s for s in system.stages(config, "")}
    return config, frontend_config(config), model_config(config), samples, stages


def pmam_case(preset: str = "tiny") -> Case:
    """PMAM masked-audio-model pre-training (``round<r>/pretrain``): the experiment's network,
    loss and optimizer, with fixed random prototypes standing in for the fitted GMM means.

    Batch: ``audio (B, samples)`` and soft pseudo labels ``gamma (B, frames, K)``. Two rows per
    device, so 8 devices hold the tiny preset's pre-training batch of 16. The masking step
    replaces some hidden frames by frames drawn from the *whole* batch, so every step also
    all-gathers the fused frames (and all-reduces their gradient): activation traffic that
    grows with the global batch (tests/scaling/test_pmam_study.py has the closed form).
    """
    config, fe, mcfg, samples, stages = _parts(preset)
    frames, k = config.model.frames, config.model.n_prototypes
    prototypes = np.random.default_rng(config.seed).normal(size=(k, mcfg.prototype_dim)).astype(np.float32)

    def batch_spec(batch: int):
        return {"audio": ((batch, samples), jnp.float32), "gamma": ((batch, frames, k), jnp.float32)}

    note = ("Besides the gradients, every step all-gathers the fused frames (global batch x "
            f"{frames} x {config.model.decoder_dim} floats) for the random donor frames of the masking, and "
            "all-reduces their gradient: the AG and part of the AR in the DP rows. FSDP shards only the "
            "parameters of at least 2**14 elements (here the patch embedding and the last CNN kernel); "
            "tests/scaling/test_pmam_study.py derives every figure in closed form.")
    return Case(f"pmam/{preset}", lambda: build_model(config),
                lambda _batch: system.pretrain_loss_fn(config, fe, prototypes), batch_spec,
                stage_optimizer(stages[system.pretrain_name(1)])[0], per_device_batch=2, note=note)


def pmam_finetune_case(preset: str = "tiny") -> Case:
    """PMAM fine-tuning stage 2 (all parameters, mean teacher): rows split 1/2 strong, 1/4 weak,
    1/4 unlabeled as in the crnn case; mixup permutes rows inside each part."""
    config, fe, _, samples, stages = _parts(preset)
    stage = stages["finetune2"]
    return Case(f"pmam_finetune/{preset}", lambda: build_model(config),
                lambda batch: system.finetune_loss_fn(config, fe, "finetune2",
                                                      quarter_segments("pmam_finetune", batch)),
                finetune_batch_spec(samples, config.model.frames), stage_optimizer(stage)[0],
                per_device_batch=4, with_teacher=True, ema_decay=stage.ema)
