"""The scene-distillation System: teachers trained in their own stages and evaluated, then frozen
for the student (their selected weights and batch statistics, never in the student's checkpoint);
the from-scratch control without teacher stages; predict on image files reproducing the run's own
evaluation; the paper preset's stated values and its refusals."""
from __future__ import annotations

import csv
import os

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import registry, run
from experiments.rsic_kd import system as kd_system
from jaxaudio.data.images import scan_image_folder
from jaxaudio.errors import ConfigError
from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.trainer import Trainer


def test_teachers_are_evaluated_frozen_as_trained_and_kept_out_of_the_students_checkpoint(trained):
    system, config, workdir, final = trained("rsic_kd")
    (teacher,) = config.model.teachers
    accuracies = kd_system.teacher_accuracies(workdir)
    assert set(accuracies) == {teacher} and 0.0 <= accuracies[teacher] <= 1.0
    assert os.path.exists(os.path.join(workdir, "teachers", f"test_{teacher}_confusion.png"))
    assert os.path.exists(os.path.join(workdir, "evaluation", "test_student_confusion.png"))

    # the frozen teacher the student stage builds = the teacher stage's final model, outputs alike
    trainer = Trainer(system, config, workdir)
    graphdef, state, _ = trainer.model_of(f"teacher_{teacher}")
    ours = nnx.merge(graphdef, state.params, state.model_state)
    frozen = kd_system.frozen_teacher(config, teacher, workdir)()
    loaded = nnx.merge(frozen.graphdef, frozen.variables["params"], frozen.variables["model_state"])
    images = jax.random.normal(jax.random.key(0), (4, config.data.image_size, config.data.image_size, 3))
    np.testing.assert_allclose(np.asarray(loaded(images, train=False)), np.asarray(ours(images, train=False)),
                               atol=1e-6)

    # the student's checkpoint holds the student's parameters only
    student_dir = os.path.join(workdir, "student", "checkpoints")
    with Checkpointer(student_dir, async_save=False) as ckpt:
        saved = ckpt.read_saved(max(ckpt.all_steps()), ("params",))
    student_names = {tuple(str(p) for p in path) for path, _ in nnx.to_flat_state(
        nnx.state(kd_system.build_model(config), nnx.Param))}
    assert {k[1:-1] for k in saved} == student_names


def test_the_control_trains_the_same_student_without_teachers():
    config = registry.load_config("rsic_kd", "smoke")
    config.data.classes = ("a", "b", "c", "d")
    config.kd.alpha = 1.0
    names = [s.name for s in registry.load("rsic_kd").stages(config, "/nonexistent")]
    assert names == ["student"]
    config.kd.alpha = 0.5
    assert [s.name for s in registry.load("rsic_kd").stages(config, "/nonexistent")] == [
        "teacher_mobilenet_v1", "teachers", "student"]


def test_predict_on_the_test_images_reproduces_the_evaluation(trained, tmp_path):
    system, config, workdir, final = trained("rsic_kd")
    data = kd_system.scene_data.SceneData(config)
    source = data.source("test")
    out = tmp_path / "pred"
    assert run.main(["--exp=rsic_kd", "--mode=predict", f"--workdir={workdir}", "--input",
                     *source.files, str(tmp_path / "missing.png"), f"--out={out}"]) == 1   # one input is missing
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["path"] for r in rows] == list(source.files)
    truth = [data.classes[label] for label in source.labels]
    accuracy = np.mean([r["predicted"] == t for r, t in zip(rows, truth)])
    assert accuracy == pytest.approx(final["test/student/accuracy"])


def test_paper_preset_holds_the_stated_values_and_refuses_what_it_cannot_do(tmp_path):
    config = registry.load_config("rsic_kd", "paper")
    # NWPU-RESISC45 at its own 256 x 256, the 20 % / 80 % protocol (spec/papers.md §5)
    assert (config.data.image_size, config.data.channels, config.data.train_fraction) == (256, 3, 0.2)
    assert config.model.teacher_preset == config.model.student_preset == "published"
    family = {"mobilenet_v1", "mobilenet_v2", "resnet50", "resnetv2", "inception_v3", "efficientnet_b0",
              "densenet121", "convnext_tiny"}
    assert set(config.model.teachers) <= family and config.model.student in family
    assert 0.0 < config.kd.alpha < 1.0 and config.kd.temperature > 1.0      # Hinton's loss, both terms on
    with pytest.raises(ConfigError, match="data_dir"):
        kd_system.scene_data.SceneData(config).classes
    # a folder of two classes; no ImageNet checkpoints: refused, naming the flag
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        from PIL import Image
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 90, 10, 10)).save(tmp_path / name / f"{i}.png")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(ConfigError, match="student_checkpoint"):
        kd_system.finalize_config(config)
    assert config.data.classes == scan_image_folder(tmp_path).classes
    config.model.allow_random_init = True
    kd_system.finalize_config(config)
