"""The CRNN's scaling case: its training stage's network, loss and optimizer over meshes."""
from __future__ import annotations

from experiments.crnn import system
from experiments.sed.scaling import finetune_batch_spec, quarter_segments
from jaxaudio.scaling.study import Case
from jaxaudio.train.trainer import stage_optimizer


def crnn_case(preset: str = "tiny", mixup: bool = True) -> Case:
    """The DCASE CRNN with the experiment's mean-teacher loss and augmentations.

    Rows split 1/2 strong, 1/4 weak, 1/4 unlabeled (the experiment mixes within each part).
    ``mixup=False`` drops the one augmentation that couples rows (a batch permutation, which
    needs activations from other devices) to isolate the parameter traffic.
    """
    config = system.SYSTEM.get_config(preset)
    if not mixup:
        config.stages[system.STAGE].mixup_prob = 0.0
    samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    stage = system.stages(config, "")[0]
    return Case(f"crnn/{preset}", lambda: system.build_model(config),
                lambda batch: system.loss_fn(config, quarter_segments("crnn", batch)),
                finetune_batch_spec(samples, system.output_frames(config)), stage_optimizer(stage)[0],
                per_device_batch=4, with_teacher=True, ema_decay=stage.ema)
