"""Teacher-student scene classification as a System: teachers of their own architectures trained in
their own stages, evaluated, then frozen for the student's distillation stage.

Wiring only: the networks are ``jaxaudio/models/cnn_zoo``, the weights import ``jaxaudio/convert/timm.py``,
the loss ``jaxaudio/objectives/distill.py``, the data ``experiments/rsic_kd/data.py``, the metrics
``jaxaudio/evaluators/classification.py``. Teachers are explicit (DESIGN: a frozen ``(graphdef,
state)`` passed to the student's step under ``stop_gradient``, never checkpointed with it): each
teacher stage trains its own model (``Stage.model``), and the student stage loads their selected
weights, batch statistics included (``warm_start.load_model``).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments.rsic_kd import config as kd_config
from experiments.rsic_kd import data as scene_data
from jaxaudio.convert.timm import load_timm
from jaxaudio.data import image_augment
from jaxaudio.errors import ConfigError
from jaxaudio.evaluators.classification import LOGITS, ClassificationEvaluator
from jaxaudio.models import cnn_zoo
from jaxaudio.objectives.distill import distillation_loss
from jaxaudio.train import stages as stage_files
from jaxaudio.train import warm_start
from jaxaudio.train.log import get_logger
from jaxaudio.train.stage_config import stage_fields
from jaxaudio.train.system import Stage, StageContext, System
from jaxaudio.train.teachers import FrozenModel

LOG = get_logger("jaxaudio.rsic_kd")
KEYS = ("image", "label")
EVAL_KEYS = ("image",)


def n_classes(config) -> int:
    return len(tuple(config.data.classes) or scene_data.SceneData(config).classes)


def teacher_names(config) -> tuple[str, ...]:
    names = tuple(config.model.teachers)
    if len(set(names)) != len(names):
        raise ConfigError(f"model.teachers={names}: a teacher is named twice")
    return names


def distills(config) -> bool:
    """Does the student learn from teachers? (alpha 1 or no teachers: the from-scratch control)"""
    return bool(teacher_names(config)) and float(config.kd.alpha) < 1.0


def member(config, name: str, preset: str, checkpoint: str, seed_offset: int) -> nnx.Module:
    """A zoo network for this data, with timm weights from ``checkpoint`` when one is given."""
    model = cnn_zoo.build(name, preset, rngs=nnx.Rngs(int(config.seed) + seed_offset), num_classes=n_classes(config),
                          in_channels=int(config.data.channels), drop_rate=float(config.model.drop_rate))
    if checkpoint:
        load_timm(checkpoint, name, model)
    return model


def finalize_config(config) -> None:
    """The run's classes from its data; a paper-size network without ImageNet weights is refused
    (checked when training starts, not when a trained run is restored)."""
    scene_data.finalize(config)
    m = config.model
    wanted = [("student_checkpoint", m.student, m.student_preset, m.student_checkpoint)]
    if distills(config):
        wanted += [(f"teacher_checkpoints.{t}", t, m.teacher_preset, m.teacher_checkpoints.get(t, ""))
                   for t in teacher_names(config)]
    for key, name, preset, checkpoint in wanted:
        if preset != "tiny" and not checkpoint and not m.allow_random_init:
            raise ConfigError(f"{name} at preset {preset!r} has no ImageNet checkpoint: pass timm weights with "
                              f"--config.model.{key}=/path/to/model.safetensors (or .pth; nothing is downloaded), "
                              "or train it from scratch on purpose with --config.model.allow_random_init=True")


def build_model(config) -> nnx.Module:
    """The student: the System's model, the one evaluation, predict and export read."""
    return member(config, config.model.student, config.model.student_preset, config.model.student_checkpoint, 0)


def build_teacher(config, name: str) -> nnx.Module:
    index = teacher_names(config).index(name)
    checkpoint = config.model.teacher_checkpoints.get(name, "")
    return member(config, name, config.model.teacher_preset, checkpoint, 1 + index)


def augmented(config, rng, batch):
    """The training view of a batch: crops, flips, quarter turns, then mixup's soft labels."""
    a = config.augment
    crop_key, mix_key, drop_key = jax.random.split(rng, 3)
    images = image_augment.augment_scenes(crop_key, batch["image"], flips=bool(a.flips), rot90=bool(a.rot90),
                                          crop=bool(a.crop), scale=tuple(a.crop_scale))
    n = n_classes(config)
    targets = jax.nn.one_hot(batch["label"], n)
    if float(a.mixup_alpha) > 0:
        images, targets = image_augment.mixup(mix_key, images, targets, alpha=float(a.mixup_alpha))
    return images, targets, drop_key


def teacher_loss_fn(config):
    def loss(model, batch, rng, teacher, step):
        images, targets, key = augmented(config, rng, batch)
        logits = model(images, train=True, rngs=key)
        ce = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        return ce, {"ce": ce, "train_acc": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

    return loss


def student_loss_fn(config):
    names = teacher_names(config) if distills(config) else ()

    def loss(model, batch, rng, teacher, step, frozen=None):
        images, targets, key = augmented(config, rng, batch)
        logits = model(images, train=True, rngs=key)
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        if not names:
            ce = jnp.mean(optax.softmax_cross_entropy(logits, targets))
            return ce, {"ce": ce, "train_acc": acc}
        teacher_logits = [frozen[name](images, train=False) for name in names]
        total, parts = distillation_loss(logits, targets, teacher_logits, alpha=float(config.kd.alpha),
                                         temperature=float(config.kd.temperature))
        return total, {**parts, "train_acc": acc}

    return loss


def frozen_teacher(config, name: str, workdir: str):
    stage_path = os.path.join(workdir, kd_config.TEACHER_STAGE.format(name))

    def build():
        LOG.info("student: teacher %s from %s", name, stage_path)
        return FrozenModel.of(warm_start.load_model(build_teacher(config, name), stage_path))

    return build


def teachers_eval_stage(config, data: scene_data.SceneData) -> Stage:
    """Each teacher's test accuracy, per-class table and confusion matrix (``teachers/``)."""

    def run(ctx: StageContext) -> dict:
        evaluator = ClassificationEvaluator(lambda: data.source("test"), int(config.batch.eval), data.classes)
        forward = predict(config)
        summary = {}
        for name in teacher_names(config):
            graphdef, state, shardings = ctx.model_of(kd_config.TEACHER_STAGE.format(name))
            metrics = evaluator.run(
                ctx.host_predictor(graphdef, shardings, forward, EVAL_KEYS, state.params, state.model_state),
                plot_dir=ctx.path, plot_prefix=f"test_{name}", title=f"teacher {name}")
            LOG.info("teacher %s: test accuracy %.4f", name, metrics["accuracy"])
            summary.update({f"{name}/test/{k}": v for k, v in metrics.items()})
        stage_files.write_json(os.path.join(ctx.path, "teachers.json"), summary)
        return summary

    return Stage(kd_config.TEACHERS_EVAL, run=run)


def stages(config, workdir: str) -> list[Stage]:
    data = scene_data.SceneData(config)
    batch = int(config.batch.train)
    out = []
    teachers = teacher_names(config) if distills(config) else ()
    for i, name in enumerate(teachers):
        out.append(Stage(kd_config.TEACHER_STAGE.format(name), loss=teacher_loss_fn(config), batch_keys=KEYS,
                         batches=lambda i=i: data.train_batches(batch, int(config.seed) + 1 + i),
                         model=lambda name=name: build_teacher(config, name),
                         **stage_fields(config.stages.teacher, "stages.teacher")))
    if teachers:
        out.append(teachers_eval_stage(config, data))
    out.append(Stage(kd_config.STUDENT, loss=student_loss_fn(config), batch_keys=KEYS,
                     batches=lambda: data.train_batches(batch, int(config.seed)),
                     frozen={name: frozen_teacher(config, name, workdir) for name in teachers},
                     **stage_fields(config.stages.student, "stages.student")))
    return out


def predict(config):
    def fn(model, batch):
        return {LOGITS: model(batch["image"], train=False)}

    return fn


def predictor(config, workdir: str):
    """(ImagePredictor, description) of a trained workdir: the student through the run's own
    compiled forward pass, reading images as the run's data did."""
    from jaxaudio.data.images import default_normalisation
    from jaxaudio.predict.images import ImagePredictor
    from jaxaudio.train.trainer import batch_predictor

    predict_batch, source = batch_predictor(SYSTEM, config, workdir, who="student")
    channels = int(config.data.channels)
    mean, std = default_normalisation(channels)
    return ImagePredictor(logits_batch=lambda images: predict_batch(images)[LOGITS],
                          batch_size=int(config.batch.eval), size=int(config.data.image_size), channels=channels,
                          mean=mean, std=std, class_names=scene_data.SceneData(config).classes), source


def inference_model(config, workdir: str, *, export: bool = True):
    """The finished student as [0, 1] image -> class probabilities (experiments/rsic_kd/export.py),
    with each teacher of a distilled run as a reference the deployment report compares it against."""
    from experiments.rsic_kd import export as kd_export
    from jaxaudio.train.trainer import restore_final

    data = scene_data.SceneData(config)
    graphdef, state, _ = restore_final(SYSTEM, config, workdir)
    student = nnx.merge(graphdef, state.params, state.model_state)
    references = []
    for index, name in enumerate(teacher_names(config) if distills(config) else ()):
        path = os.path.join(workdir, kd_config.TEACHER_STAGE.format(name))
        teacher = warm_start.load_model(member(config, name, config.model.teacher_preset, "", 1 + index), path)
        references.append(kd_export.inference_model(config, data, teacher, name=f"teacher_{name}",
                                                    source=f"{os.path.abspath(path)} (selected)"))
    source = f"{os.path.abspath(workdir)} ({kd_config.STUDENT}, step {int(state.step)})"
    return kd_export.inference_model(config, data, student, name=f"student_{config.model.student}", source=source,
                                     references=tuple(references))


def teacher_accuracies(workdir: str) -> dict:
    """``{teacher: test accuracy}`` of a finished run (for benchmarks and the deployment report)."""
    path = os.path.join(workdir, kd_config.TEACHERS_EVAL, "teachers.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        values = json.load(f)
    return {k.split("/")[0]: v for k, v in values.items() if k.endswith("/test/accuracy")}


SYSTEM = System(
    name="rsic_kd",
    description="Remote-sensing scene classification: CNN-zoo teachers distilled into a compact student",
    get_config=kd_config.get_config,
    presets=kd_config.PRESETS,
    build_model=build_model,
    stages=stages,
    evaluators=scene_data.evaluators,
    predict=predict,
    final_stage=lambda config: kd_config.STUDENT,
    eval_keys=EVAL_KEYS,
    finalize_config=finalize_config,
    predictor=predictor,
    inference_model=inference_model,
    start_weights=("student_checkpoint",),
    task="classification",
)
