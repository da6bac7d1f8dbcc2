"""The CRNN's inference hook for export: waveform -> log-mel -> CRNN (teacher weights).

``inference_model(config, workdir)`` rebuilds the model from the run's config, restores the
latest checkpoint of ``workdir`` and returns a ``jaxaudio.export.InferenceModel``.

Export-only choices, same numbers as the trained model (``tests/export/test_tflite.py``):
- the GRU runs its export loop (``CRNNConfig(export_rnn=True)``): one builtin WHILE per layer.
  Unrolled, its ~22 ops per frame (3,500 in all) cost more file than the int8 weights; the
  converter calibrates and quantizes the loop body like any other subgraph.
- the per-example min-max scaling runs in the front end's name scope, so the int8 variant
  keeps it in float with the log-mel (quantizing dB values before scaling rounds them twice).
"""
from __future__ import annotations

import dataclasses
import os

import jax
from flax import nnx

from experiments.systems import sed_export, stages
from experiments.systems.crnn import frontend_config, make_tx, model_config
from jaxaudio.audio.features import FRONTEND_SCOPE
from jaxaudio.export import frontend as export_frontend
from jaxaudio.data.desed import DESED_CLASSES
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.errors import CheckpointError
from jaxaudio.export.model import InferenceModel
from jaxaudio.models.crnn import CRNN, instance_scale
from jaxaudio.train.state import create_train_state, split_model


def restore_teacher(config, workdir: str):
    """(teacher {params, model_state}, step) of the latest checkpoint in ``workdir``."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no checkpoint folder; train first with experiments/run.py "
                              f"--workdir={workdir}")
    mcfg = model_config(config)

    def init():
        model = CRNN(mcfg, rngs=nnx.Rngs(config.seed))
        return create_train_state(model, make_tx(config), jax.random.key(config.seed), with_teacher=True)[1]

    state = stages.restore_last(workdir, jax.eval_shape(init), only=None,
                                missing_hint=f"train first with experiments/run.py --workdir={workdir}")
    teacher = state.teacher if state.teacher is not None else {"params": state.params,
                                                               "model_state": state.model_state}
    return teacher, int(state.step)


def inference_model(config, workdir: str) -> InferenceModel:
    fe = frontend_config(config)
    trained = model_config(config)
    # The model's per-example scaling runs here, inside the front end's scope, so that the int8
    # variant keeps it in float: quantizing the dB log-mel before min-max scaling rounds it twice.
    mcfg = dataclasses.replace(trained, input_norm="none", export_rnn=True)
    teacher, step = restore_teacher(config, workdir)
    graphdef, _, _ = split_model(nnx.eval_shape(lambda: CRNN(mcfg, rngs=nnx.Rngs(0))))

    def fn(variables, waveform):
        """waveform (batch, samples) -> strong (batch, frames, classes), weak (batch, classes)."""
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        feats = export_frontend.log_mel(waveform, fe)
        with jax.named_scope(FRONTEND_SCOPE):
            feats = instance_scale(feats, trained.input_norm, trained.norm_eps)
        return model(feats, train=False)

    clip_samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    n_out = mcfg.cnn.output_frames(fe.num_frames(clip_samples))
    encoder = FrameLabelEncoder(DESED_CLASSES, config.data.clip_seconds, n_out)

    return InferenceModel(
        name="crnn",
        fn=fn,
        variables={"params": teacher["params"], "model_state": teacher["model_state"]},
        sample_rate=int(config.data.sample_rate),
        clip_samples=clip_samples,
        class_names=tuple(DESED_CLASSES),
        frame_timestamps=encoder.timestamps(),
        calibration=sed_export.calibration_fn(config, encoder),
        held_out=sed_export.held_out_fn(config, encoder),
        frontend_scope=FRONTEND_SCOPE,
        metric="psds1",
        source=f"{os.path.abspath(workdir)} (teacher, step {step})",
    )
