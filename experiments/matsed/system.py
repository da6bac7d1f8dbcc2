"""MAT-SED end to end: masked-reconstruction pre-training -> two-stage mean-teacher fine-tuning
-> PSDS evaluation.

Stages (the trainer runs them in order, each in its own folder, skipping finished ones)::

    pretrain     encoder frozen; 10-frame blocks of the context network's input hidden at rate 0.75
                 (mask token / random frame / unchanged 80/10/10), MSE on the hidden frames against
                 the pre-mask features
    finetune1    heads only (everything else frozen), mean teacher
    finetune2    all parameters, mean teacher; the teacher sees global-local fused features
    evaluation   PSDS1/PSDS2/F1 per split (the trainer's own), global-local fusion at inference

Built from PMAM's parts (``experiments/pmam/system.py``): the fine-tuning stages and their loss,
the inference pass (``detect``: global-local fusion, temperature, weak soft mask), predict and
export hooks, and the refusal to start the paper preset without PaSST weights. What is MAT-SED's
own: the network (``jaxaudio/models/matsed.py``) and the pre-training stage here.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from experiments.matsed import config as matsed_config
from experiments.pmam import system as pmam
from experiments.pmam.model import frontend_config, mel_frames, vit_config, with_passt_weights
from experiments.sed import augment as sed_augment
from experiments.sed import data as sed_data
from experiments.sed import task
from jaxaudio.errors import ConfigError
from jaxaudio.models.matsed import MATSED, matsed_config as network_config, reconstruction_loss
from jaxaudio.models.pmam import PMAMConfig
from jaxaudio.nn.masking import block_mask, replacement_plan
from jaxaudio.train.stage_config import stage_fields
from jaxaudio.train.system import Stage, System
from jaxaudio.train.warm_start import load_submodule

PRETRAIN = "pretrain"
FINAL_STAGE = pmam.FINAL_STAGE   # "finetune2"
# Pre-training trains the context network, out_norm, the mask token and the reconstruction head; the
# encoder is frozen (MAT-SED; the reference sets requires_grad False on PaSST, ref recipes/desed/mlm/
# mlm_passt/passt_mlm_setting.py), and the SED / AT heads are never read (PyTorch skips parameters
# without gradients; here AdamW's decoupled weight decay would otherwise shrink them every step).
FROZEN_IN_PRETRAINING = [
    {"name": "encoder_frozen", "pattern": r"^encoder/", "lr": 0.0},
    {"name": "unused", "pattern": r"^(classifier|at_pool|at_class_head)/", "lr": 0.0},
]


# ----------------------------------------------------------------------------- the network
def model_config(config) -> PMAMConfig:
    m = config.model
    vit = vit_config(config)
    return network_config(vit, feature_layer=m.feature_layer, at_heads=m.at_heads, upsample=vit.step,
                          context_layers=m.context_layers, context_heads=m.context_heads,
                          n_classes=len(sed_data.classes(config.data)),
                          pred_len=m.frames)


def build_model(config) -> MATSED:
    """A fresh MAT-SED network; its encoder from ``model.passt_checkpoint`` (PyTorch PaSST) or
    ``model.encoder_from`` (a finished stage of another jaxaudio run) when one is given."""
    model = with_passt_weights(MATSED(model_config(config), rngs=nnx.Rngs(config.seed)), config, "matsed")
    source = config.model.get("encoder_from", "")
    if source:
        if config.model.passt_checkpoint:
            raise ConfigError("model.passt_checkpoint and model.encoder_from both name an encoder; pass one")
        load_submodule(model.encoder, source, ("encoder",))
    return model


# ----------------------------------------------------------------------------- pre-training
def pretrain_loss_fn(config, fe):
    """Block-masked reconstruction: MSE over the hidden frames against the pre-mask features."""
    p, s, frames = config.pretrain, config.stages.pretrain, config.model.frames
    augment = sed_augment.stage_augment(s, fe)   # no mixup key: no mixup (ref recipes/mlm/train.py)
    reference_count = bool(p.get("mask_reference_count", False))
    stop_target = bool(p.get("stop_target_gradient", False))

    def loss_fn(model, batch, rng, teacher, step):
        k_aug, k_mask, k_plan, k_model = jax.random.split(rng, 4)
        mel = mel_frames(batch["audio"], fe, frames, key=jax.random.fold_in(k_aug, 3))
        rows = mel.shape[0]
        mel, _, _ = augment(k_aug, mel, jnp.zeros((rows, frames, 1), jnp.float32), jnp.zeros((rows, 1), jnp.float32))
        mask = block_mask(k_mask, rows, frames, p.mask_block, p.mask_rate, reference_count=reference_count)
        plan = replacement_plan(k_plan, mask, p.p_mask_token, p.p_random)
        out = model.mae_forward(mel, mask, plan, train=True, rngs=k_model)
        target = jax.lax.stop_gradient(out["target"]) if stop_target else out["target"]
        loss = reconstruction_loss(out["recon"], target, mask)
        visible = ~mask
        aux = {"loss": loss,
               "masked_fraction": jnp.mean(mask.astype(jnp.float32)),
               # the same error on the frames the context network saw unchanged (a sanity figure)
               "visible_mse": reconstruction_loss(out["recon"], out["target"], visible),
               "target_power": jnp.mean(jnp.square(out["target"]))}
        return loss, aux

    return loss_fn


def pretrain_stage(config, data: task.SEDData) -> Stage:
    """Masked reconstruction on audio of every training subset, labels unused."""
    return Stage(PRETRAIN, loss=pretrain_loss_fn(config, frontend_config(config)),
                 batches=lambda: data.mixed_batches(data.pretrain_counts(), config.seed + 100), batch_keys=("audio",),
                 **stage_fields(config.stages.pretrain, "stages.pretrain", extra_groups=FROZEN_IN_PRETRAINING,
                                loop_defaults=pmam._loop_defaults(config)))


def stages(config, workdir: str) -> list[Stage]:
    """pretrain (unless ``pretrain.enabled`` is False: the ablation's baseline), finetune1, finetune2."""
    data = task.SEDData(config, config.model.frames)
    out, previous = [], None
    if config.pretrain.get("enabled", True):
        out.append(pretrain_stage(config, data))
        previous = PRETRAIN
    for index in (1, 2):
        out.append(pmam.finetune_stage(config, data, index, previous))
        previous = f"finetune{index}"
    return out


# ----------------------------------------------------------------------------- outputs
def inference_model(config, workdir: str, *, export: bool = True):
    return pmam.inference_model(config, workdir, export=export, system=SYSTEM, name="matsed")


def predictor(config, workdir: str):
    return pmam.predictor(config, workdir, system=SYSTEM)


SYSTEM = System(
    name="matsed",
    description="MAT-SED: PaSST + Transformer-XL, masked-reconstruction pre-training, mean-teacher fine-tuning, PSDS",
    get_config=matsed_config.get_config,
    presets=matsed_config.PRESETS,
    build_model=build_model,
    stages=stages,
    evaluators=lambda config: task.evaluators(config, task.SEDData(config, config.model.frames)),
    predict=pmam.predict,
    final_stage=lambda config: FINAL_STAGE,
    eval_keys=task.EVAL_KEYS,
    finalize_config=pmam.finalize_config,
    inference_model=inference_model,
    predictor=predictor,
    start_weights=("passt_checkpoint", "encoder_from"),
)
