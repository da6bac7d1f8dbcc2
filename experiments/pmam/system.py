"""PMAM end to end: prototypes -> masked audio model (``pretrain.rounds`` times) -> two-stage
mean-teacher fine-tuning -> PSDS evaluation.

Stages (the trainer runs them in order, each in its own folder, skipping finished ones)::

    round1/prototypes   GMM, pseudo labels per subset, pseudo_labels.png       (a run stage)
    round1/pretrain     masked audio model on the round's pseudo labels
    round2/...          the same, with features of the round-1 model
    finetune1           heads only (everything else frozen), mean teacher
    finetune2           all parameters but the fusion weight, mean teacher
    evaluation          PSDS1/PSDS2/F1 per split, PSD-ROC plots (the trainer's own)
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.pmam import config as pmam_config
from experiments.pmam import prototypes as protos
from experiments.pmam import validation as pmam_validation
from experiments.pmam.model import build_model, frontend_config, mel_frames, model_config
from experiments.sed import augment as sed_augment
from experiments.sed import data as sed_data
from experiments.sed import task
from jaxaudio.audio import features
from jaxaudio.errors import ConfigError
from jaxaudio.nn.global_local import GlobalLocal
from jaxaudio.nn.lora import LORA_PATH_PATTERN, merge_adapters
from jaxaudio.nn.masking import block_mask, replacement_plan
from jaxaudio.objectives.sed import mean_teacher_at_loss
from jaxaudio.objectives.ssl import pmam_loss
from jaxaudio.train.log import get_logger
from jaxaudio.train.schedules import linear_rampup, logistic_rampup, sigmoid_rampup
from jaxaudio.train.stage_config import stage_fields
from jaxaudio.train.system import Stage, StageContext, StageValidation, System

LOG = get_logger("jaxaudio.pmam")
FINAL_STAGE = "finetune2"
# Parameters a stage never reads: frozen, so AdamW's decoupled weight decay leaves them alone
# (PyTorch skips parameters without gradients; here they would otherwise shrink every step).
UNUSED_IN_PRETRAINING = r"^(classifier|at_class_head)/"
UNUSED_IN_FINETUNING = r"^(mlm_hidden|mlm_out|at_prototype_head|mask_token)"
FROZEN_IN_STAGE = {
    "pretrain": [{"name": "unused", "pattern": UNUSED_IN_PRETRAINING, "lr": 0.0}],
    "finetune1": [],
    # the fusion weight trains only during pre-training (Transformer4SED)
    "finetune2": [{"name": "fusion", "pattern": r"^fusion_weight", "lr": 0.0},
                  {"name": "unused", "pattern": UNUSED_IN_FINETUNING, "lr": 0.0}],
}
VALIDATION_LABELS = "validation_for_pretraining"   # the labels file of the validation clips (row 14)
RAMPS = {"linear": linear_rampup, "sigmoid": sigmoid_rampup, "logistic": logistic_rampup}


def pretrain_name(round_index: int) -> str:
    return f"round{round_index}/pretrain"


def prototypes_dir(workdir: str, round_index: int) -> str:
    return os.path.join(workdir, f"round{round_index}/prototypes")


# ----------------------------------------------------------------------------- losses
def pretrain_loss_fn(config, fe, prototypes: np.ndarray):
    """Block-masked prototype BCE on hidden frames + the clip-level AT term (``ssl.pmam_loss``)."""
    p, s, frames = config.pretrain, config.stages.pretrain, config.model.frames
    shift = sed_augment.stage_augment(s, fe)
    means = jnp.asarray(prototypes, jnp.float32)

    def loss_fn(model, batch, rng, teacher, step):
        k_aug, k_mask, k_plan, k_model = jax.random.split(rng, 4)
        mel = mel_frames(batch["audio"], fe, frames, key=jax.random.fold_in(k_aug, 3))
        gamma = batch["gamma"].astype(jnp.float32)
        clip_dummy = jnp.zeros((mel.shape[0], 1), jnp.float32)
        mel, gamma, _ = shift(k_aug, mel, gamma, clip_dummy)
        mask = block_mask(k_mask, mel.shape[0], frames, p.mask_block, p.mask_rate,
                          reference_count=bool(p.get("mask_reference_count", False)))
        plan = replacement_plan(k_plan, mask, p.p_mask_token, p.p_random)
        out = model.mam_forward(mel, mask, plan, prototypes=means, train=True, rngs=k_model)
        loss, aux = pmam_loss(out, gamma, mask, p.aux_weight)
        hit = jnp.argmax(out["prototype_probs"], -1) == jnp.argmax(gamma, -1)
        aux["masked_top1"] = jnp.sum(jnp.where(mask, hit, False)) / jnp.maximum(jnp.sum(mask), 1)
        return loss, aux

    return loss_fn


def sliding(config, which: str) -> GlobalLocal | None:
    """The global-local setting for ``which`` ("teacher_step" or "eval_step"); None when off."""
    g = config.model.get("global_local")
    if not g or not g.window:
        return None
    return GlobalLocal(int(g.window), int(g[which]), float(g.local_weight))


def finetune_loss_fn(config, fe, name: str, segments=None, inputs=None):
    """MAT-SED/PMAM mean-teacher loss; the consistency weight ramps as the stage says.
    ``segments``: the rows of each source in a batch (default: the config's batch counts).
    ``inputs(audio, key) -> (batch, frames, n_mels)``: the network's input (default: the log-mel
    cut to ``model.frames``; AST-SED's is its normalised fbank)."""
    f, b = config.stages[name], config.batch
    inputs = inputs or (lambda audio, key: mel_frames(audio, fe, config.model.frames, key=key))
    segments = segments or sed_augment.batch_segments((b.strong, b.weak, b.unlabeled))
    augment = sed_augment.stage_augment(f, fe, segments, (b.strong, b.weak, b.unlabeled))
    if f.rampup not in RAMPS:
        raise ConfigError(f"stages.{name}.rampup={f.rampup!r}; expected one of {', '.join(RAMPS)}")
    ramp, rampup, w_max = RAMPS[f.rampup], f.rampup_steps, f.consistency_max
    teacher_sliding = sliding(config, "teacher_step") if f.get("teacher_global_local") else None

    def loss_fn(model, batch, rng, teacher, step):
        k_aug, k_student, k_teacher = jax.random.split(rng, 3)
        # one mel-bank jitter for both networks (the reference's student extractor feeds both)
        mel = inputs(batch["audio"], jax.random.fold_in(k_aug, 3))
        mel, teacher_mel, strong, weak = augment.pair(k_aug, mel, batch["strong"], batch["weak"])
        student = model.sed_forward(mel, train=True, rngs=k_student)
        teacher_out = teacher.sed_forward(teacher_mel, train=True, rngs=k_teacher, sliding=teacher_sliding)
        targets = {"strong": strong, "weak": weak, "has_strong": batch["has_strong"], "has_weak": batch["has_weak"]}
        return mean_teacher_at_loss(student, teacher_out, targets, w_max * ramp(step, rampup),
                                    weak_weight=f.weak_weight, at_weight=f.at_weight,
                                    weak_subset_only=bool(f.get("weak_subset_only", False)))

    return loss_fn


# ----------------------------------------------------------------------------- stages
def _train_sources(data: task.SEDData) -> dict:
    """Every training subset either phase reads: the prototypes label them all."""
    names = dict.fromkeys([*data.pretrain_counts(), *data.finetune_counts()])
    return {name: data.source(name) for name in names}


def prototypes_stage(config, data: task.SEDData, round_index: int, previous: str | None) -> Stage:
    """Fit the prototypes on features of the model ``previous`` left (or a fresh one)."""

    def run(ctx: StageContext) -> dict:
        p, mcfg = config.pretrain, model_config(config)
        fe, frames, layer = frontend_config(config), config.model.frames, config.pretrain.feature_layer
        graphdef, state, shardings = ctx.model_of(previous)
        feature_step = ctx.eval_step(graphdef, shardings, lambda model, batch: (
            model.gmm_features(mel_frames(batch["audio"], fe, frames), layer), batch["index"]))

        def feature_fn(batch):
            return feature_step(state.params, state.model_state, batch)

        sources = _train_sources(data)
        to_eval = ctx.to_device(("audio", "index"))
        seed = config.seed + round_index
        started = time.time()
        x = protos.sample_frames(sources, feature_fn, p, config.batch.eval, to_eval, seed)
        if x.shape[1] != mcfg.prototype_dim:
            raise ConfigError(f"pretrain.feature_layer={layer!r} gives {x.shape[1]}-d features but the MLM head "
                              f"predicts {mcfg.prototype_dim}-d; use 'after_interpolate' or set "
                              "model.decoder_dim = model.vit_dim")
        LOG.info("round %d: fitting %s with %d prototypes on %d frames of %s features (%d-d)", round_index,
                 p.gmm_kind, mcfg.n_prototypes, len(x), layer, x.shape[1])
        fitted, summary = protos.fit_prototypes(x, p, mcfg.n_prototypes, seed, mesh=None)
        fitted.save(os.path.join(ctx.path, "prototypes.npz"))
        summary.update(protos.label_subsets(fitted, sources, feature_fn, config.batch.eval, to_eval, ctx.path))
        if config.stages.pretrain.get("eval_every"):   # the pre-training stage validates on these
            protos.label_subsets(fitted, {VALIDATION_LABELS: data.split("validation")}, feature_fn,
                                 config.batch.eval, to_eval, ctx.path)
        summary["seconds"] = time.time() - started
        strong_name = config.data.train_strong
        labels = protos.load_labels(ctx.path, [strong_name])[strong_name]
        protos.plot_clip(labels, sources[strong_name], 0, os.path.join(ctx.path, "pseudo_labels.png"),
                         f"round {round_index}: GMM posteriors of {sources[strong_name].records[0].clip_id}")
        LOG.info("round %d prototypes: %s", round_index, {k: v for k, v in summary.items() if k != "weights"})
        return summary

    return Stage(f"round{round_index}/prototypes", run=run)


def pretrain_stage(config, workdir: str, data: task.SEDData, round_index: int, previous: str | None) -> Stage:
    """The masked audio model on round ``round_index``'s pseudo labels, from ``previous``'s weights."""
    fe, mcfg = frontend_config(config), model_config(config)
    counts = data.pretrain_counts()
    order = [n for n in counts if counts[n] > 0]
    local = [counts[n] // jax.process_count() for n in order]
    loaded = {}

    def prototypes_and_labels():
        """Read once, when the stage starts (the prototype stage has written them by then)."""
        if not loaded:
            directory = prototypes_dir(workdir, round_index)
            fitted = protos.Prototypes.load(os.path.join(directory, "prototypes.npz"),
                                            n_prototypes=mcfg.n_prototypes, dim=mcfg.prototype_dim)
            expected = {n: (len(data.source(n)), config.model.frames, mcfg.n_prototypes) for n in order}
            loaded.update(fitted=fitted, labels=protos.load_labels(directory, order, expected))
        return loaded

    def prepare(batch):
        labels = prototypes_and_labels()["labels"]
        rows, start = [], 0
        for n, count in zip(order, local):
            rows.append(np.asarray(labels[n][batch["index"][start:start + count]], np.float32))
            start += count
        return {"audio": batch["audio"], "gamma": np.concatenate(rows)}

    def validation() -> StageValidation | None:
        """The masked pseudo-label BCE on the validation clips (row 14); prototypes read when it starts."""
        if not config.stages.pretrain.get("eval_every"):
            return None

        def evaluator():
            directory = prototypes_dir(workdir, round_index)
            source = data.split("validation")
            labels = protos.load_labels(directory, [VALIDATION_LABELS], {
                VALIDATION_LABELS: (len(source), config.model.frames, mcfg.n_prototypes)})[VALIDATION_LABELS]
            return pmam_validation.PseudoLabelBCE(source, labels, config.batch.eval)

        forward = _built_on_first_call(
            lambda: pmam_validation.forward_fn(config, fe, prototypes_and_labels()["fitted"].prototypes))
        return StageValidation(evaluator=evaluator, forward=forward, keys=("audio", "gamma"), mode="min")

    name = pretrain_name(round_index)
    # pretrain.restart_rounds: every round trains a fresh network (PaSST from its checkpoint) on the
    # new prototypes, as the reference's iterations do (ref post_pretrain.yaml:3; row 13); else it
    # continues from the previous round's weights.
    start = None if config.pretrain.get("restart_rounds", False) else previous
    loss = _built_on_first_call(lambda: pretrain_loss_fn(config, fe, prototypes_and_labels()["fitted"].prototypes))
    return Stage(name, loss=loss, batches=lambda: data.mixed_batches(counts, config.seed + 100 * round_index),
                 batch_keys=("audio", "gamma"), prepare=prepare, init_from=start, validation=validation(),
                 **stage_fields(config.stages.pretrain, "stages.pretrain", extra_groups=FROZEN_IN_STAGE["pretrain"],
                                loop_defaults=_loop_defaults(config)))


def _built_on_first_call(build):
    """A function that is ``build()``'s result, built when first called: the pre-training stage's
    loss and validation pass read the round's prototypes only when the stage trains."""
    built = []

    def call(*args, **kwargs):
        if not built:
            built.append(build())
        return built[0](*args, **kwargs)

    return call


def finetune_stage(config, data: task.SEDData, index: int, previous: str | None, *, inputs=None,
                   frozen_groups=()) -> Stage:
    """Mean-teacher fine-tuning stage ``index`` from ``previous``'s weights. With
    ``model.finetune_lora='merge'`` the encoder's LoRA adapters are folded into its kernels when
    stage 1 starts and stay frozen, as the reference fine-tunes merged PaSST weights (row 21);
    'train' keeps training them. ``inputs``: see ``finetune_loss_fn``; ``frozen_groups``: more
    groups ahead of the stage's own (another network's unused parameters)."""
    name = f"finetune{index}"
    fe = frontend_config(config)
    mode = config.model.get("finetune_lora", "train")
    if mode not in ("merge", "train"):
        raise ConfigError(f"model.finetune_lora={mode!r}; expected 'merge' or 'train'")
    frozen = list(frozen_groups) + list(FROZEN_IN_STAGE[name])
    if mode == "merge":
        frozen.insert(0, {"name": "merged_lora", "pattern": LORA_PATH_PATTERN, "lr": 0.0})
    edit = merge_adapters if mode == "merge" and index == 1 and model_config(config).vit.lora_rank else None
    return Stage(name, loss=finetune_loss_fn(config, fe, name, inputs=inputs),
                 batches=lambda: data.mixed_batches(data.finetune_counts(), config.seed + index),
                 batch_keys=task.TRAIN_KEYS, init_from=previous, start_edit=edit,
                 **stage_fields(config.stages[name], f"stages.{name}", extra_groups=frozen,
                                loop_defaults=_loop_defaults(config)))


def _loop_defaults(config) -> dict:
    return dict(config.train)


def stages(config, workdir: str) -> list[Stage]:
    """The stage list; the pre-training stages read what their prototype stage wrote in ``workdir``."""
    data = task.SEDData(config, config.model.frames)
    out, previous = [], None
    for r in range(1, config.pretrain.rounds + 1):
        out.append(prototypes_stage(config, data, r, previous))
        out.append(pretrain_stage(config, workdir, data, r, previous))
        previous = pretrain_name(r)
    for index in (1, 2):
        out.append(finetune_stage(config, data, index, previous))
        previous = f"finetune{index}"
    return out


# ----------------------------------------------------------------------------- outputs
def detect(config):
    """``(model, mel) -> {strong, weak}`` as validation, evaluation, predict and export see it:
    global-local fusion at the inference step, sigmoid(logits / eval.temperature), and with
    eval.weak_mask the frame scores times the clip's pooled probability (the reference's soft
    mask, applied before the median filter). Training passes are plain ``sed_forward``."""
    fusion, e = sliding(config, "eval_step"), config.eval
    temperature, weak_mask = float(e.get("temperature", 1.0)), bool(e.get("weak_mask", False))

    def run(model, mel):
        out = model.sed_forward(mel, train=False, sliding=fusion, temperature=temperature)
        strong = out["strong"] * out["weak"][:, None, :] if weak_mask else out["strong"]
        return {"strong": strong, "weak": out["weak"]}

    return run


def predict(config):
    fe, frames, run = frontend_config(config), config.model.frames, detect(config)

    def forward(model, batch):
        return run(model, mel_frames(batch["audio"], fe, frames))

    return forward


def inference_model(config, workdir: str, *, export: bool = True, system: System | None = None,
                    name: str = "pmam"):
    """The teacher of the last fine-tuning stage as waveform -> {strong, weak}. The export form
    builds the DFT matrix in the graph (under the front end's scope) and traces the exact GELU
    as x * Phi(x) with few ops (~20 builtin ops each instead of ~65).
    system / name: another System with this network's fine-tuning stages (MAT-SED); default PMAM."""
    from jaxaudio.export import frontend as export_frontend
    from jaxaudio.nn.activations import EXACT_GELU_SCOPE, few_op_gelu
    from jaxaudio.nn.pooling import POOLING_SCOPE
    from jaxaudio.train.trainer import restore_final

    graphdef, state, _ = restore_final(system or SYSTEM, config, workdir)
    fe, frames = frontend_config(config), config.model.frames

    def fn(variables, waveform):
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        model.eval()
        if not export:
            return predict(config)(model, {"audio": waveform})
        mel = export_frontend.log_mel(waveform, fe)
        with jax.named_scope(features.FRONTEND_SCOPE):  # the crop stays float in the integer variants
            mel = mel[:, :frames].astype(jnp.float32)
        with few_op_gelu():
            return detect(config)(model, mel)

    options = {"float_scopes": (EXACT_GELU_SCOPE,  # LiteRT aborts on the int8 erf polynomial
                                POOLING_SCOPE),    # its 1e-7 clamp rounds to 0 in int8 (nn/pooling.py)
               "per_channel_dense": False}  # per-channel scales of the many small dense layers: 76 KB of 540
    return task.inference_model(config, task.SEDData(config, frames), name=name, fn=fn,
                                variables={"params": state.teacher["params"],
                                           "model_state": state.teacher["model_state"]},
                                source=task.describe(workdir, FINAL_STAGE, int(np.asarray(state.step))), **options)


def predictor(config, workdir: str, *, system: System | None = None):
    """What ``--mode=predict`` runs; system: another System with this predict pass (MAT-SED)."""
    from jaxaudio.train.trainer import batch_predictor

    predict_batch, source = batch_predictor(system or SYSTEM, config, workdir)
    return task.predictor(config, task.SEDData(config, config.model.frames), predict_batch), source


def scaling_cases(preset: str) -> dict:
    from experiments.pmam import scaling

    return {"pmam": lambda: scaling.pmam_case(preset), "pmam_finetune": lambda: scaling.pmam_finetune_case(preset)}


def finalize_config(config) -> None:
    """The run's classes from its data; a PaSST-sized run without PaSST weights is refused."""
    sed_data.resolve_data(config)
    m = config.model
    if not m.passt_checkpoint and not m.get("encoder_from", "") and not m.allow_random_init:
        raise ConfigError(
            "model.passt_checkpoint is not set: this preset starts PaSST from AudioSet weights and freezes its "
            "first blocks, which from random weights would freeze noise. Pass "
            "--config.model.passt_checkpoint=/path/to/passt-s-f128-p16-s10-ap.476-swa.pt (pip install -e "
            "'.[convert]'; nothing is downloaded), or --config.model.allow_random_init=True to train from random "
            "weights on purpose")


SYSTEM = System(
    name="pmam",
    description="PMAM: GMM prototypes + masked audio model pre-training, mean-teacher fine-tuning, PSDS",
    get_config=pmam_config.get_config,
    presets=pmam_config.PRESETS,
    build_model=build_model,
    stages=stages,
    evaluators=lambda config: task.evaluators(config, task.SEDData(config, config.model.frames)),
    predict=predict,
    final_stage=lambda config: FINAL_STAGE,
    eval_keys=task.EVAL_KEYS,
    finalize_config=finalize_config,
    inference_model=inference_model,
    predictor=predictor,
    scaling_cases=scaling_cases,
    start_weights=("passt_checkpoint",),
)
