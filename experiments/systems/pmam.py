"""PMAM end to end: prototypes -> masked audio model (``pretrain.rounds`` times) -> two-stage
mean-teacher fine-tuning -> PSDS evaluation.

Workdir layout (each stage folder resumes by itself; ``done.json`` marks a finished one)::

    round1/prototypes/   GMM, pseudo labels per subset, pseudo_labels.png, done.json
    round1/pretrain/     MAM checkpoints, metrics.jsonl, TensorBoard, done.json
    round2/...           the same, with features of the round-1 model
    finetune1/           heads only (everything else frozen), mean teacher
    finetune2/           all parameters, mean teacher
    evaluation/          PSDS1/PSDS2/F1 per split, PSD-ROC plots, done.json
    metrics.json         every stage's summary and the final metrics
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.systems import pmam_prototypes as protos
from experiments.systems import sed_augment, sed_data, sed_eval, stages
from experiments.systems.pmam_model import build_model, frontend_config, mel_frames, model_config
from jaxaudio.data.desed import DESED_CLASSES
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.errors import ConfigError
from jaxaudio.io import paths
from jaxaudio.nn.masking import block_mask, replacement_plan
from jaxaudio.objectives.sed import mean_teacher_at_loss
from jaxaudio.objectives.ssl import pmam_loss
from jaxaudio.train import distributed
from jaxaudio.train.checkpoint import abstract_like
from jaxaudio.train.log import get_logger
from jaxaudio.train.loop import LoopConfig, train_loop
from jaxaudio.train.mesh import batch_sharding, global_batch, make_mesh, replicated
from jaxaudio.train.optim import make_lr_schedule, make_optimizer
from jaxaudio.train.schedules import linear_rampup, sigmoid_rampup
from jaxaudio.train.sharding import abstract_sharded_state, create_sharded_state
from jaxaudio.train.state import split_model
from jaxaudio.train.step import make_eval_step, make_train_step

LOG = get_logger("jaxaudio.pmam")
TRAIN_KEYS = ("audio", "strong", "weak", "has_strong", "has_weak")
EVAL_KEYS = ("audio", "index")
FINETUNE_HEADS = r"^(classifier|at_pool|at_class_head)/"
# Parameters a stage never reads: frozen, so AdamW's decoupled weight decay leaves them alone
# (PyTorch skips parameters without gradients; here they would otherwise shrink every step).
UNUSED_IN_PRETRAINING = r"^(classifier|at_class_head)/"
UNUSED_IN_FINETUNING = r"^(mlm_hidden|mlm_out|at_prototype_head|mask_token)"


# ----------------------------------------------------------------------------- optimizers
def _schedule(cfg, steps: int) -> dict:
    return {"kind": "warmup_exp_down", "warmup_steps": cfg.warmup_steps,
            "decay_start_step": min(cfg.decay_start_step, steps - 1), "exponent": cfg.exponent}


def _groups(entries, schedule: dict) -> list[dict]:
    return [{"name": name, "pattern": pattern, "lr": lr, "weight_decay": wd, "schedule": schedule}
            for name, pattern, lr, wd in entries]


def stage_plan(config, name: str) -> dict:
    """Optimizer, length and teacher use of a training stage, by name (``round<r>/pretrain``,
    ``finetune1``, ``finetune2``): the one place that says how each stage trains."""
    p, f, clip = config.pretrain, config.finetune, config.train.clip_norm
    if name.endswith("pretrain"):
        steps, schedule = p.steps, _schedule(p, p.steps)
        default = {"lr": p.lr, "weight_decay": p.weight_decay, "schedule": schedule}
        groups = [{"name": "unused", "pattern": UNUSED_IN_PRETRAINING, "lr": 0.0}] + _groups(p.groups, schedule)
        teacher = False
    elif name == "finetune1":
        steps, schedule = f.stage1_steps, _schedule(f, f.stage1_steps)
        default = {"lr": 0.0}  # heads only: everything else frozen
        groups = [{"name": "heads", "pattern": FINETUNE_HEADS, "lr": f.stage1_lr, "weight_decay": f.weight_decay,
                   "schedule": schedule}]
        teacher = True
    elif name == "finetune2":
        steps, schedule = f.stage2_steps, _schedule(f, f.stage2_steps)
        default = {"lr": f.stage2_lr, "weight_decay": f.weight_decay, "schedule": schedule}
        # the fusion weight trains only during pre-training (Transformer4SED)
        groups = [{"name": "fusion", "pattern": r"^fusion_weight", "lr": 0.0},
                  {"name": "unused", "pattern": UNUSED_IN_FINETUNING, "lr": 0.0}] + _groups(f.stage2_groups, schedule)
        teacher = True
    else:
        raise ValueError(name)
    tx = make_optimizer(groups, default, clip, steps)
    main_lr = groups[0]["lr"] if name == "finetune1" else default["lr"]  # the lr logged per step
    return {"tx": tx, "steps": steps, "teacher": teacher, "lr_schedule": make_lr_schedule(main_lr, schedule, steps)}


def abstract_state(config, plan: dict, mesh):
    """The layout of a stage's train state (no arrays made), to restore its checkpoints into."""
    return abstract_sharded_state(lambda: build_model(config), plan["tx"], jax.random.key(config.seed), mesh,
                                  with_teacher=plan["teacher"])


def restore_finished(config, workdir: str, name: str, mesh):
    """(graphdef, final state, shardings) of the finished training stage ``name``."""
    graphdef = split_model(nnx.eval_shape(lambda: build_model(config)))[0]
    abstract = abstract_state(config, stage_plan(config, name), mesh)
    state = stages.restore_last(os.path.join(workdir, name), abstract)
    return graphdef, state, jax.tree.map(lambda a: a.sharding, abstract)


# ----------------------------------------------------------------------------- losses
def pretrain_loss_fn(config, fe, prototypes: np.ndarray):
    """Block-masked prototype BCE on hidden frames + the clip-level AT term (``ssl.pmam_loss``)."""
    p, frames = config.pretrain, config.model.frames
    shift = sed_augment.make_augment([], frame_shift_sigma=p.frame_shift_sigma, mixup_prob=0.0,
                                     filter_augment=p.filter_augment,
                                     units_per_db=sed_augment.filter_units_per_db(fe))
    means = jnp.asarray(prototypes, jnp.float32)

    def loss_fn(model, batch, rng, teacher, step):
        k_aug, k_mask, k_plan, k_model = jax.random.split(rng, 4)
        mel = mel_frames(batch["audio"], fe, frames)
        gamma = batch["gamma"].astype(jnp.float32)
        clip_dummy = jnp.zeros((mel.shape[0], 1), jnp.float32)
        mel, gamma, _ = shift(k_aug, mel, gamma, clip_dummy)
        mask = block_mask(k_mask, mel.shape[0], frames, p.mask_block, p.mask_rate)
        plan = replacement_plan(k_plan, mask, p.p_mask_token, p.p_random)
        out = model.mam_forward(mel, mask, plan, prototypes=means, train=True, rngs=k_model)
        loss, aux = pmam_loss(out, gamma, mask, p.aux_weight)
        hit = jnp.argmax(out["prototype_probs"], -1) == jnp.argmax(gamma, -1)
        aux["masked_top1"] = jnp.sum(jnp.where(mask, hit, False)) / jnp.maximum(jnp.sum(mask), 1)
        return loss, aux

    return loss_fn


def finetune_loss_fn(config, fe, segments, stage: int):
    """MAT-SED/PMAM mean-teacher loss; consistency ramps linearly (stage 1) or sigmoid (stage 2)."""
    f = config.finetune
    augment_batch = sed_augment.make_augment(segments, frame_shift_sigma=f.frame_shift_sigma,
                                             mixup_prob=f.mixup_prob, filter_augment=f.filter_augment,
                                             units_per_db=sed_augment.filter_units_per_db(fe))
    w_max = f.stage1_consistency_max if stage == 1 else f.stage2_consistency_max
    rampup, ramp = ((f.stage1_rampup_steps, linear_rampup) if stage == 1
                    else (f.stage2_rampup_steps, sigmoid_rampup))

    def loss_fn(model, batch, rng, teacher, step):
        k_aug, k_student, k_teacher = jax.random.split(rng, 3)
        mel = mel_frames(batch["audio"], fe, config.model.frames)
        mel, strong, weak = augment_batch(k_aug, mel, batch["strong"], batch["weak"])
        student = model.sed_forward(mel, train=True, rngs=k_student)
        teacher_out = teacher.sed_forward(mel, train=True, rngs=k_teacher)
        targets = {"strong": strong, "weak": weak, "has_strong": batch["has_strong"], "has_weak": batch["has_weak"]}
        return mean_teacher_at_loss(student, teacher_out, targets, w_max * ramp(step, rampup),
                                    weak_weight=f.weak_weight, at_weight=f.at_weight)

    return loss_fn


# ----------------------------------------------------------------------------- the run
class PMAMRun:
    """Shared pieces of one run: data sources, mesh, model layout, jit helpers."""

    def __init__(self, config, workdir: str):
        self.config, self.workdir = config, workdir
        self.fe = frontend_config(config)
        self.mcfg = model_config(config)
        self.frames = config.model.frames
        self.encoder = FrameLabelEncoder(DESED_CLASSES, config.data.clip_seconds, self.frames)
        self.root = sed_data.data_root(config.data)
        d = config.data
        self.train_sources = {name: sed_data.clip_source(self.root, d, name, self.encoder)
                              for name in (d.train_strong, d.train_weak, d.train_unlabeled)}
        self.mesh = make_mesh(**config.mesh)
        self.bsharding = batch_sharding(self.mesh)

    # -- state -------------------------------------------------------------------------
    def fresh_state(self, plan: dict):
        key = jax.random.key(self.config.seed)
        return create_sharded_state(lambda: build_model(self.config), plan["tx"], key, self.mesh,
                                    with_teacher=plan["teacher"])

    def abstract_state(self, plan: dict):
        return abstract_state(self.config, plan, self.mesh)

    def stage_state(self, name: str, previous: str | None):
        """(graphdef, state, shardings) of stage ``name``, holding ``previous``'s final weights."""
        plan = stage_plan(self.config, name)
        graphdef, state, shardings = self.fresh_state(plan)
        if previous is not None:
            prev_plan = stage_plan(self.config, previous)
            prev = stages.restore_last(os.path.join(self.workdir, previous), self.abstract_state(prev_plan))
            state = stages.carry_weights(state, prev, teacher_from_student=plan["teacher"] and not prev_plan["teacher"])
        return plan, graphdef, state, shardings

    def finished(self, name: str):
        return restore_finished(self.config, self.workdir, name, self.mesh)

    def to_device(self, keys):
        return lambda b: global_batch({k: b[k] for k in keys}, self.mesh)  # noqa: E731

    def eval_fn(self, graphdef, shardings, fn):
        return make_eval_step(graphdef, fn, params_sharding=shardings.params,
                              model_state_sharding=shardings.model_state, batch_sharding=self.bsharding,
                              out_sharding=replicated(self.mesh))

    def train(self, name: str, previous: str | None, loss_fn, batches, to_device) -> dict:
        path = stages.stage_dir(self.workdir, name)
        plan, graphdef, state, shardings = self.stage_state(name, previous)
        step = make_train_step(graphdef, loss_fn, plan["tx"], state_shardings=shardings,
                               batch_sharding=self.bsharding, ema_decay=self.config.finetune.ema_decay,
                               learning_rate=plan["lr_schedule"])
        t = self.config.train
        loop_cfg = LoopConfig(total_steps=plan["steps"], log_every=t.log_every,
                              checkpoint_every=t.checkpoint_every, keep=t.keep)
        LOG.info("stage %s: %d steps", name, plan["steps"])
        started = time.time()
        _, summary = train_loop(workdir=path, state=state, train_step=step, batches=batches, to_device=to_device,
                                config=loop_cfg, abstract_state=abstract_like(state), progress_desc=name)
        return {**_plain(summary), "stage_seconds": time.time() - started}

    # -- stages ------------------------------------------------------------------------
    def prototypes(self, round_index: int, previous: str | None) -> dict:
        """Fit the prototypes on features of the model ``previous`` left (or a fresh one)."""
        p = self.config.pretrain
        path = stages.stage_dir(self.workdir, f"round{round_index}/prototypes")
        if previous is None:
            plan = stage_plan(self.config, "round1/pretrain")
            graphdef, state, shardings = self.fresh_state(plan)
        else:
            graphdef, state, shardings = self.finished(previous)
        layer = p.feature_layer
        feature_step = self.eval_fn(graphdef, shardings, lambda model, batch: (
            model.gmm_features(mel_frames(batch["audio"], self.fe, self.frames), layer), batch["index"]))

        def feature_fn(batch):
            return feature_step(state.params, state.model_state, batch)

        to_eval = self.to_device(EVAL_KEYS)
        seed = self.config.seed + round_index
        started = time.time()
        x = protos.sample_frames(self.train_sources, feature_fn, p, self.config.batch.eval, to_eval, seed)
        if x.shape[1] != self.mcfg.prototype_dim:
            raise ConfigError(f"pretrain.feature_layer={layer!r} gives {x.shape[1]}-d features but the MLM head "
                              f"predicts {self.mcfg.prototype_dim}-d; use 'after_interpolate' or set "
                              "model.decoder_dim = model.vit_dim")
        LOG.info("round %d: fitting %s with %d prototypes on %d frames of %s features (%d-d)", round_index,
                 p.gmm_kind, self.mcfg.n_prototypes, len(x), layer, x.shape[1])
        fitted, summary = protos.fit_prototypes(x, p, self.mcfg.n_prototypes, seed, mesh=None)
        fitted.save(os.path.join(path, "prototypes.npz"))
        summary.update(protos.label_subsets(fitted, self.train_sources, feature_fn, self.config.batch.eval,
                                            to_eval, path))
        summary["seconds"] = time.time() - started
        strong_name = self.config.data.train_strong
        labels = protos.load_labels(path, [strong_name])[strong_name]
        protos.plot_clip(labels, self.train_sources[strong_name], 0, os.path.join(path, "pseudo_labels.png"),
                         f"round {round_index}: GMM posteriors of {self.train_sources[strong_name].records[0].clip_id}")
        LOG.info("round %d prototypes: %s", round_index, {k: v for k, v in summary.items() if k != "weights"})
        return summary

    def pretrain(self, round_index: int, previous: str | None) -> dict:
        name = f"round{round_index}/pretrain"
        proto_dir = os.path.join(self.workdir, f"round{round_index}/prototypes")
        fitted = protos.Prototypes.load(os.path.join(proto_dir, "prototypes.npz"))
        labels = protos.load_labels(proto_dir, self.train_sources)
        b, d = self.config.batch, self.config.data
        counts = {d.train_strong: b.pretrain_strong, d.train_weak: b.pretrain_weak,
                  d.train_unlabeled: b.pretrain_unlabeled}
        parts = [(src, counts[n]) for n, src in self.train_sources.items() if counts[n] > 0]
        order = [n for n in self.train_sources if counts[n] > 0]
        batches = sed_data.mixed(parts, self.config.seed + 100 * round_index)
        local = [counts[n] // jax.process_count() for n in order]

        def to_device(batch):
            rows, start = [], 0
            for n, count in zip(order, local):
                rows.append(np.asarray(labels[n][batch["index"][start:start + count]], np.float32))
                start += count
            return global_batch({"audio": batch["audio"], "gamma": np.concatenate(rows)}, self.mesh)

        loss_fn = pretrain_loss_fn(self.config, self.fe, fitted.prototypes)
        return self.train(name, previous, loss_fn, batches, to_device)

    def finetune(self, stage: int, previous: str | None) -> dict:
        b = self.config.batch
        batches = sed_data.train_batches(self.root, self.config.data, b, self.encoder, self.config.seed + stage)
        segments = sed_augment.batch_segments((b.strong, b.weak, b.unlabeled))
        loss_fn = finetune_loss_fn(self.config, self.fe, segments, stage)
        return self.train(f"finetune{stage}", previous, loss_fn, batches, self.to_device(TRAIN_KEYS))

    def evaluate(self, previous: str) -> dict:
        path = stages.stage_dir(self.workdir, "evaluation")
        graphdef, state, shardings = self.finished(previous)
        frames = self.frames
        step = self.eval_fn(graphdef, shardings, lambda model, batch: (
            model.sed_forward(mel_frames(batch["audio"], self.fe, frames))["strong"], batch["index"]))
        results = {}
        d = self.config.data
        for split in (d.validation, d.test):
            source = sed_data.clip_source(self.root, d, split, self.encoder)
            LOG.info("evaluating on %s (%d clips)", split, len(source))
            for who, weights in (("student", (state.params, state.model_state)),
                                 ("teacher", (state.teacher["params"], state.teacher["model_state"]))):
                scores = sed_eval.predict_subset(source, lambda batch: step(*weights, batch), self.config.batch.eval,
                                                 self.to_device(EVAL_KEYS))
                metrics = sed_eval.sed_metrics(scores, source, self.config.eval.median_window,
                                               plot_path=os.path.join(path, f"{split}_{who}_psd_roc.png"),
                                               title=f"PMAM {who}")
                results.update({f"{split}/{who}/{k}": v for k, v in metrics.items()})
        return results


def _plain(summary: dict) -> dict:
    return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in summary.items()}


def run(config, workdir: str) -> dict:
    distributed.maybe_initialize()
    paths.makedirs(workdir)
    started = time.time()
    pm = PMAMRun(config, workdir)
    LOG.info("PMAM: %d pre-training round(s), %d + %d fine-tuning steps; data %s", config.pretrain.rounds,
             config.finetune.stage1_steps, config.finetune.stage2_steps, pm.root)
    summary, previous = {}, None
    for r in range(1, config.pretrain.rounds + 1):
        summary[f"round{r}/prototypes"] = stages.run_once(
            os.path.join(workdir, f"round{r}/prototypes"), lambda r=r, prev=previous: pm.prototypes(r, prev))
        summary[f"round{r}/pretrain"] = stages.run_once(
            os.path.join(workdir, f"round{r}/pretrain"), lambda r=r, prev=previous: pm.pretrain(r, prev))
        previous = f"round{r}/pretrain"
    for stage in (1, 2):
        summary[f"finetune{stage}"] = stages.run_once(
            os.path.join(workdir, f"finetune{stage}"), lambda s=stage, prev=previous: pm.finetune(s, prev))
        previous = f"finetune{stage}"
    final = stages.run_once(os.path.join(workdir, "evaluation"), lambda: pm.evaluate("finetune2"))
    summary["final_eval"] = final
    summary["total_wall_seconds"] = time.time() - started
    sed_eval.write_json(os.path.join(workdir, "metrics.json"), summary)
    for key in sorted(final):
        if key.endswith(("psds1", "psds2")):
            LOG.info("%s: %.4f", key, final[key])
    return final
