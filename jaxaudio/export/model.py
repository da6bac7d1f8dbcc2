"""What an experiment hands the exporter: a pure waveform -> probabilities function and its data.

Why a dataclass of plain callables: the exporter must not know how each system is trained or
where its data lives. An experiment provides ``inference_model(config, workdir) ->
InferenceModel`` (in its runner module or a sibling ``<runner>_inference`` module) and the
exporter only calls what is here. Nothing in this file imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxaudio.audio.features import FRONTEND_SCOPE


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out clips and how the experiment scores predictions on them.

    waveforms: (clips, samples) float32, the model's fixed input length.
    clip_ids: one id per row of ``waveforms``.
    score: ``{clip_id: strong probabilities (frames, classes)} -> {metric: value}``.
    """

    waveforms: np.ndarray
    clip_ids: tuple[str, ...]
    score: Callable[[dict[str, np.ndarray]], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class InferenceModel:
    """A trained model ready to export.

    fn: pure ``fn(variables, waveform (batch, samples)) -> {"strong": (batch, frames, classes),
      "weak": (batch, classes)}``, probabilities, front end included, no ``lax.scan``/``while``.
    variables: the pytree ``fn`` takes (the teacher's params and state for mean-teacher runs).
    frame_timestamps: (frames + 1,) frame boundaries in seconds.
    calibration: ``n -> (n, samples)`` float32 waveforms from the experiment's training data,
      for full-integer calibration; None if the experiment has none.
    held_out: ``max_clips (0 = all) -> HeldOut`` from the validation data; None if none.
    frontend_scope: the ``jax.named_scope`` of the front-end ops, kept in float by ``int8``
      together with every op upstream of them.
    float_scopes: further named scopes whose own ops ``int8`` keeps in float (their inputs are
      not pulled along), e.g. ``nn.activations.EXACT_GELU_SCOPE``.
    per_channel_dense: ``int8`` gives dense (fully connected) weights one scale per output
      channel; False: one per tensor. Convolutions stay per channel. Each per-channel scale and
      zero point costs 12 bytes, which for a Transformer of width 64 is an eighth of its int8 file.
    metric: the key of ``HeldOut.score`` that the report compares across variants.
    source: where the variables came from (workdir and step), for the report.
    """

    name: str
    fn: Callable[[Any, jax.Array], dict[str, jax.Array]]
    variables: Any
    sample_rate: int
    clip_samples: int
    class_names: tuple[str, ...]
    frame_timestamps: np.ndarray
    calibration: Optional[Callable[[int], np.ndarray]] = None
    held_out: Optional[Callable[[int], HeldOut]] = None
    frontend_scope: str = FRONTEND_SCOPE
    float_scopes: tuple[str, ...] = ()
    per_channel_dense: bool = True
    metric: str = "psds1"
    source: str = ""

    @property
    def n_params(self) -> int:
        return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(self.variables)))

    def predict(self, waveforms: np.ndarray) -> dict[str, np.ndarray]:
        """Reference outputs from JAX itself, one clip at a time (the exported batch size)."""
        call = jax.jit(self.fn)
        outs = [call(self.variables, np.asarray(w, np.float32)[None]) for w in waveforms]
        return {key: np.concatenate([np.asarray(o[key]) for o in outs]) for key in outs[0]}
