"""PMAM's inference hook for export: waveform -> log-mel -> PMAM ``sed_forward`` (teacher weights).

``inference_model(config, workdir)`` rebuilds the network from the run's config, restores the
teacher of the last fine-tuning stage and returns a ``jaxaudio.export.InferenceModel``. The
front end is the export form (DFT matrix built in the graph, under the ``frontend`` scope).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.systems import sed_export, stages
from experiments.systems.pmam import restore_finished
from experiments.systems.pmam_model import frontend_config
from jaxaudio.data.desed import DESED_CLASSES
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.errors import CheckpointError
from jaxaudio.audio.features import FRONTEND_SCOPE
from jaxaudio.export import frontend as export_frontend
from jaxaudio.export.model import InferenceModel
from jaxaudio.nn.activations import EXACT_GELU_SCOPE, few_op_gelu
from jaxaudio.train.mesh import make_mesh

FINAL_STAGE = "finetune2"


def inference_model(config, workdir: str) -> InferenceModel:
    path = os.path.join(workdir, FINAL_STAGE)
    if not stages.is_done(path):
        raise CheckpointError(f"{path}: fine-tuning has not finished, so there is no model to export; "
                              f"run experiments/run.py --exp=pmam --workdir={workdir} first")
    mesh = make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])
    graphdef, state, _ = restore_finished(config, workdir, FINAL_STAGE, mesh)
    fe = frontend_config(config)
    frames = config.model.frames

    def fn(variables, waveform):
        """waveform (batch, samples) -> strong (batch, frames, classes), weak (batch, classes)."""
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        model.eval()
        mel = export_frontend.log_mel(waveform, fe)
        with jax.named_scope(FRONTEND_SCOPE):  # the crop stays float in the integer variants
            mel = mel[:, :frames].astype(jnp.float32)
        with few_op_gelu():  # ~20 builtin ops per GELU instead of ~65 (nn/activations.py)
            out = model.sed_forward(mel)
        return {"strong": out["strong"], "weak": out["weak"]}

    clip_samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    encoder = FrameLabelEncoder(DESED_CLASSES, config.data.clip_seconds, frames)

    step = int(np.asarray(state.step))
    return InferenceModel(
        name="pmam",
        fn=fn,
        variables={"params": state.teacher["params"], "model_state": state.teacher["model_state"]},
        sample_rate=int(config.data.sample_rate),
        clip_samples=clip_samples,
        class_names=tuple(DESED_CLASSES),
        frame_timestamps=encoder.timestamps(),
        calibration=sed_export.calibration_fn(config, encoder),
        held_out=sed_export.held_out_fn(config, encoder),
        frontend_scope=FRONTEND_SCOPE,
        float_scopes=(EXACT_GELU_SCOPE,),  # LiteRT aborts on the int8 erf polynomial
        per_channel_dense=False,  # per-channel scales of the many small dense layers: 76 KB of 540
        source=f"{os.path.abspath(workdir)} ({FINAL_STAGE} teacher, step {step})",
    )
