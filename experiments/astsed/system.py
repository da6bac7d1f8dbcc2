"""AST-SED end to end: two-stage mean-teacher fine-tuning -> PSDS evaluation.

Stages (the trainer runs them in order, each in its own folder, skipping finished ones)::

    finetune1    everything after the AST encoder (out_norm, FTE, GRU, classifier), AST frozen
    finetune2    all parameters (the blocks after ``feature_layer`` and the final norm are unused, frozen)
    evaluation   PSDS1/PSDS2/F1 per split (the trainer's own); sliding-window inference when
                 ``model.global_local.window`` is set

Built from PMAM's parts (``experiments/pmam/system.py``): the fine-tuning stages and their loss
(``finetune_stage`` with this network's input), the inference pass (``detect``: temperature,
weak soft mask, sliding windows), the SED task's evaluators, export outputs and predictor. What
is AST-SED's own: the network (``jaxaudio/models/astsed.py``), its input (the AudioSet-normalised
fbank, padded inside the network) and its AST weights (``jaxaudio/convert/ast.py``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.astsed import config as astsed_config
from experiments.pmam import system as pmam
from experiments.pmam.model import frontend_config
from experiments.sed import data as sed_data
from experiments.sed import task
from jaxaudio.audio import features
from jaxaudio.errors import ConfigError
from jaxaudio.models.astsed import ASTSED, ASTSEDConfig
from jaxaudio.nn.ast import ASTConfig
from jaxaudio.train.log import get_logger
from jaxaudio.train.system import Stage, System

LOG = get_logger("jaxaudio.astsed")
FINAL_STAGE = "finetune2"


# ----------------------------------------------------------------------------- the network
def model_config(config) -> ASTSEDConfig:
    m, fe = config.model, frontend_config(config)
    ast = ASTConfig(n_mels=m.n_mels, max_frames=m.ast_frames, dim=m.ast_dim, depth=m.ast_depth,
                    num_heads=m.ast_heads, mlp_ratio=m.ast_mlp_ratio, norm_eps=m.get("ast_norm_eps", 1e-12),
                    out_layer=m.feature_layer)
    # a padded frame of the raw fbank is 0, normalised like the rest (audio/ast_frontend.py)
    pad_value = (0.0 - fe.norm_mean) / (fe.norm_std or 1.0)
    return ASTSEDConfig(ast=ast, freq_pool=m.freq_pool, decoder=m.decoder, fte_depth=m.fte_depth,
                        fte_heads=m.fte_heads, fte_mlp_ratio=m.fte_mlp_ratio, gru_hidden=m.gru_hidden,
                        gru_layers=m.gru_layers, upsample=m.upsample, n_classes=len(sed_data.classes(config.data)),
                        pred_len=m.frames, pad_value=pad_value)


def build_model(config) -> ASTSED:
    """A fresh AST-SED network; its encoder from ``model.ast_checkpoint`` (Hugging Face AST) when given."""
    model = ASTSED(model_config(config), rngs=nnx.Rngs(config.seed))
    path = config.model.ast_checkpoint
    if path:
        from jaxaudio.convert.ast import load_ast  # torch / safetensors only here (extra "convert")

        LOG.info("AST encoder from %s", path)
        model.encoder = load_ast(path, model.cfg.ast)
    return model


def inputs(config):
    """``(audio, key) -> fbank (batch, <= ast_frames, n_mels)``: the AudioSet-normalised fbank, cut to
    the AST input; the network pads it (``ASTSED.pad``). ``key``: the front end's mel-bank jitter."""
    fe, frames = frontend_config(config), int(config.model.ast_frames)

    def run(audio, key=None):
        return features.log_mel(audio, fe, key)[:, :frames].astype(jnp.float32)

    return run


# ----------------------------------------------------------------------------- stages
def stages(config, workdir: str) -> list[Stage]:
    """finetune1 (heads), finetune2 (all but the unused encoder blocks)."""
    data = task.SEDData(config, config.model.frames)
    m = config.model
    unused = [{"name": "encoder_unused", "pattern": astsed_config.unused_encoder_pattern(m.feature_layer, m.ast_depth),
               "lr": 0.0}]
    out, previous = [], None
    for index in (1, 2):
        out.append(pmam.finetune_stage(config, data, index, previous, inputs=inputs(config), frozen_groups=unused))
        previous = f"finetune{index}"
    return out


# ----------------------------------------------------------------------------- outputs
def predict(config):
    fbank, run = inputs(config), pmam.detect(config)
    return lambda model, batch: run(model, fbank(batch["audio"]))


def inference_model(config, workdir: str, *, export: bool = True):
    """The teacher of the last fine-tuning stage as waveform -> {strong, weak}. The export form
    builds the DFT matrix in the graph, runs the GRU in its export loop (``nn/gru.py``) and traces
    the exact GELU with few ops, as PMAM's export does."""
    from jaxaudio.export import frontend as export_frontend
    from jaxaudio.nn.activations import EXACT_GELU_SCOPE, few_op_gelu
    from jaxaudio.nn.pooling import POOLING_SCOPE
    from jaxaudio.train.trainer import restore_final

    _, state, _ = restore_final(SYSTEM, config, workdir)
    trained = model_config(config)
    mcfg = dataclasses.replace(trained, export_rnn=True) if export else trained
    graphdef = nnx.split(nnx.eval_shape(lambda: ASTSED(mcfg, rngs=nnx.Rngs(0))), nnx.Param, ...)[0]
    fe, frames, run = frontend_config(config), int(config.model.ast_frames), pmam.detect(config)

    def fn(variables, waveform):
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        if not export:
            return predict(config)(model, {"audio": waveform})
        fbank = export_frontend.log_mel(waveform, fe)
        with jax.named_scope(features.FRONTEND_SCOPE):  # the crop stays float in the integer variants
            fbank = fbank[:, :frames].astype(jnp.float32)
        with few_op_gelu():
            return run(model, fbank)

    teacher = state.teacher
    return task.inference_model(config, task.SEDData(config, config.model.frames), name="astsed", fn=fn,
                                variables={"params": teacher["params"], "model_state": teacher["model_state"]},
                                source=task.describe(workdir, FINAL_STAGE, int(np.asarray(state.step))),
                                float_scopes=(EXACT_GELU_SCOPE, POOLING_SCOPE), per_channel_dense=False)


def predictor(config, workdir: str):
    return pmam.predictor(config, workdir, system=SYSTEM)


def finalize_config(config) -> None:
    """The run's classes from its data; an AST-sized run without AST weights is refused."""
    sed_data.resolve_data(config)
    m = config.model
    if not m.ast_checkpoint and not m.allow_random_init:
        raise ConfigError(
            "model.ast_checkpoint is not set: this preset starts AST from AudioSet weights and freezes it in "
            "finetune1, which from random weights would freeze noise. Pass "
            "--config.model.ast_checkpoint=/path/to/ast-finetuned-audioset-10-10-0.4593 (a Hugging Face folder, "
            ".safetensors or .bin file; pip install -e '.[convert]'; nothing is downloaded), or "
            "--config.model.allow_random_init=True to train from random weights on purpose")


SYSTEM = System(
    name="astsed",
    description="AST-SED: AST + frequency-wise Transformer encoder + local GRU decoder, mean-teacher fine-tuning, PSDS",
    get_config=astsed_config.get_config,
    presets=astsed_config.PRESETS,
    build_model=build_model,
    stages=stages,
    evaluators=lambda config: task.evaluators(config, task.SEDData(config, config.model.frames)),
    predict=predict,
    final_stage=lambda config: FINAL_STAGE,
    eval_keys=task.EVAL_KEYS,
    finalize_config=finalize_config,
    inference_model=inference_model,
    predictor=predictor,
    start_weights=("ast_checkpoint",),
)
