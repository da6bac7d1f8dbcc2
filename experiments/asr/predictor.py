"""``--mode=predict`` for the speech-recognition systems: a trained run as an ``ASRPredictor``.

Shared by Paraformer and the autoregressive baseline: each passes its own ``decode(model, feats,
mask) -> {"tokens", "token_len"[, "fire_frames"]}`` (a decoder without CIF has no fire frames, and
its transcripts then have no token times); the front end (``training.eval_features``: fbank and
the run's global CMVN from config.json), the weights and the tokenizer are the same for both.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from experiments.asr import data as asr_data
from experiments.asr.training import EVAL_KEYS, eval_features
from jaxaudio.data.tokenizer import SPECIALS
from jaxaudio.nn.conformer import subsampled_length
from jaxaudio.predict.asr import ASRPredictor
from jaxaudio.train.system import System

def min_samples(config) -> int:
    """The shortest input the encoder gives one frame for: the fbank frames its conv subsampling
    needs (``subsampled_length``: 7) in samples (Kaldi's snip-edges framing: 1360 at 16 kHz)."""
    fe = asr_data.frontend_config(config)
    frames = 1
    while subsampled_length(frames) < 1:
        frames += 1
    return fe.win_length + (frames - 1) * fe.hop_length


def predictor(system: System, config, workdir: str, decode: Callable, *, frame_seconds: float,
              who: str = "teacher") -> tuple[ASRPredictor, str]:
    """(ASRPredictor, a description of the weights) of a trained workdir: the final stage's
    weights (``who``: "teacher" if the run has one, else the student, as ``batch_predictor``)
    through ``decode`` after the run's own front end, compiled once per padded length, in
    ``config.batch.eval`` batches; the run's tokenizer (config.json's token list) and its decoding
    (the evaluator's). ``frame_seconds``: the duration of one ``fire_frames`` frame."""
    from jaxaudio.train.trainer import Trainer, restore_final, without_start_weights

    config = without_start_weights(system, config)
    tokenizer = asr_data.ASRData(config).tokenizer   # config.data.tokens (saved by finalize)
    trainer = Trainer(system, config, workdir)
    graphdef, state, shardings = restore_final(system, config, workdir, mesh=trainer.mesh)
    if who == "teacher" and state.teacher is not None:
        params, model_state = state.teacher["params"], state.teacher["model_state"]
    else:
        who, params, model_state = "student", state.params, state.model_state

    def forward(model, batch):
        return decode(model, *eval_features(config, batch))

    step = trainer.predict_step(graphdef, shardings, forward=forward, keys=EVAL_KEYS)

    def transcribe(audio: np.ndarray, audio_len: np.ndarray) -> dict:
        batch = {"audio": np.asarray(audio, np.float32), "audio_len": np.asarray(audio_len, np.int32),
                 "index": np.arange(len(audio), dtype=np.int32)}
        return {k: v for k, v in step(params, model_state, batch).items() if k != "index"}

    rate = int(config.data.sample_rate)
    asr = ASRPredictor(transcribe=transcribe, batch_size=int(config.batch.eval), sample_rate=rate,
                       frame_seconds=float(frame_seconds), tokens=tokenizer.tokens,
                       special_ids=frozenset(range(len(SPECIALS))), decode=tokenizer.decode,
                       trained_seconds=float(max(config.data.buckets_s)), min_seconds=min_samples(config) / rate)
    step_no = int(np.asarray(state.step))
    return asr, f"{os.path.abspath(workdir)} ({system.final_stage(config)} {who}, step {step_no})"
