"""The CRNN's inference hook for export: waveform -> log-mel -> CRNN (teacher weights).

``inference_model(config, workdir)`` rebuilds the model from the run's config, restores the
latest checkpoint of ``workdir`` and returns a ``jaxaudio.export.InferenceModel``. The GRU is
unrolled (``CRNNConfig(unroll_rnn=True)``): same numbers, but no while-loop in the exported
graph, which full-integer calibration cannot handle.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from flax import nnx

from experiments.systems import sed_data, sed_eval
from experiments.systems.crnn import frontend_config, make_tx, model_config
from jaxaudio.export import frontend as export_frontend
from jaxaudio.data.desed import DESED_CLASSES
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.errors import CheckpointError
from jaxaudio.export.model import HeldOut, InferenceModel
from jaxaudio.models.crnn import CRNN
from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.state import create_train_state, split_model


def restore_teacher(config, workdir: str):
    """(teacher params, teacher model_state, step) of the latest checkpoint in ``workdir``."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no checkpoint folder; train first with experiments/run.py "
                              f"--workdir={workdir}")
    mcfg = model_config(config)

    def init():
        model = CRNN(mcfg, rngs=nnx.Rngs(config.seed))
        return create_train_state(model, make_tx(config), jax.random.key(config.seed), with_teacher=True)[1]

    abstract = jax.eval_shape(init)
    checkpointer = Checkpointer(directory, async_save=False)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise CheckpointError(f"{directory}: holds no checkpoint; train first with experiments/run.py "
                                  f"--workdir={workdir}")
        state, _ = checkpointer.restore(abstract, step)
    finally:
        checkpointer.close()
    teacher = state.teacher if state.teacher is not None else {"params": state.params,
                                                               "model_state": state.model_state}
    return teacher, int(step)


def inference_model(config, workdir: str) -> InferenceModel:
    fe = frontend_config(config)
    mcfg = dataclasses.replace(model_config(config), unroll_rnn=True)
    teacher, step = restore_teacher(config, workdir)
    graphdef, _, _ = split_model(nnx.eval_shape(lambda: CRNN(mcfg, rngs=nnx.Rngs(0))))

    def fn(variables, waveform):
        """waveform (batch, samples) -> strong (batch, frames, classes), weak (batch, classes)."""
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        return model(export_frontend.log_mel(waveform, fe), train=False)

    clip_samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    n_out = mcfg.cnn.output_frames(fe.num_frames(clip_samples))
    encoder = FrameLabelEncoder(DESED_CLASSES, config.data.clip_seconds, n_out)

    def calibration(n: int) -> np.ndarray:
        source = sed_data.clip_source(sed_data.data_root(config.data), config.data, config.data.train_strong,
                                      encoder)
        picks = np.linspace(0, len(source) - 1, num=min(n, len(source))).round().astype(int)
        return np.stack([source[int(i)]["audio"] for i in picks]).astype(np.float32)

    def held_out(max_clips: int) -> HeldOut:
        source = sed_data.clip_source(sed_data.data_root(config.data), config.data, config.data.validation,
                                      encoder)
        count = len(source) if max_clips <= 0 else min(max_clips, len(source))
        waves = np.stack([source[i]["audio"] for i in range(count)]).astype(np.float32)
        ids = tuple(source.records[i].clip_id for i in range(count))

        def score(scores: dict[str, np.ndarray]) -> dict[str, float]:
            return sed_eval.sed_metrics(scores, source, config.eval.median_window)

        return HeldOut(waves, ids, score)

    return InferenceModel(
        name="crnn",
        fn=fn,
        variables={"params": teacher["params"], "model_state": teacher["model_state"]},
        sample_rate=int(config.data.sample_rate),
        clip_samples=clip_samples,
        class_names=tuple(DESED_CLASSES),
        frame_timestamps=encoder.timestamps(),
        calibration=calibration,
        held_out=held_out,
        frontend_scope="frontend",
        metric="psds1",
        source=f"{os.path.abspath(workdir)} (teacher, step {step})",
    )
