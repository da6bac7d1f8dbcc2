"""The SED side of a System: data of one run, its evaluators, export outputs and predictor.

Every SED system (CRNN, PMAM, and the ones to come) has the same task facts: DESED classes,
frame probabilities ``strong`` with timestamps and clip probabilities ``weak``, PSDS on the
validation and eval subsets after a class-wise median filter. They are declared once here.
"""
from __future__ import annotations

import os

import numpy as np

from experiments.sed import data as sed_data
from jaxaudio.data.sed.labels import FrameLabelEncoder
from jaxaudio.evaluators.sed import SEDEvaluator
from jaxaudio.export.model import CLIP_PROBS, FRAME_PROBS, HeldOut, InferenceModel, Output

TRAIN_KEYS = ("audio", "strong", "weak", "has_strong", "has_weak")
EVAL_KEYS = ("audio",)


class SEDData:
    """Data of one run: the folder (the built-in set is generated on first use), the frame
    label encoder for the model's output frames, and the clip sources by subset name."""

    def __init__(self, config, n_frames: int):
        self.config = config
        self.classes = sed_data.classes(config.data)
        self.encoder = FrameLabelEncoder(self.classes, config.data.clip_seconds, n_frames)
        self._root = None
        self._sources = {}

    @property
    def root(self) -> str:
        if self._root is None:
            self._root = sed_data.data_root(self.config.data)
        return self._root

    @property
    def clip_samples(self) -> int:
        return int(round(self.config.data.clip_seconds * self.config.data.sample_rate))

    def source(self, name: str):
        if name not in self._sources:
            self._sources[name] = sed_data.clip_source(self.root, self.config.data, name, self.encoder)
        return self._sources[name]

    def split(self, split: str):
        """A source by evaluation split name ("validation" / "eval") or subset name."""
        d = self.config.data
        names = {"validation": d.validation, "eval": d.test, "test": d.test}
        return self.source(names.get(split, split))

    def mixed_batches(self, counts: dict[str, int], seed: int):
        """Sources mixed in fixed counts per batch (zero counts left out), this process's rows."""
        parts = [(self.source(name), count) for name, count in counts.items() if count > 0]
        return sed_data.mixed(parts, seed)

    def finetune_counts(self) -> dict[str, int]:
        d, b = self.config.data, self.config.batch
        return {d.train_strong: b.strong, d.train_weak: b.weak, d.train_unlabeled: b.unlabeled}


def evaluators(config, data: SEDData) -> dict[str, SEDEvaluator]:
    e = config.eval
    return {split: SEDEvaluator(lambda split=split: data.split(split), config.batch.eval, e.median_window,
                                primary_metric=e.primary_metric)
            for split in e.splits}


def inference_model(config, data: SEDData, *, name: str, fn, variables, source: str, **options) -> InferenceModel:
    """The export form of a SED model: waveform -> ``strong`` (frames) and ``weak`` (clip)."""
    evaluator = evaluators(config, data)[config.eval.validation_split]

    def calibration(n: int) -> np.ndarray:
        subset = data.source(config.data.train_strong)
        picks = np.linspace(0, len(subset) - 1, num=min(n, len(subset))).round().astype(int)
        return np.stack([subset[int(i)]["audio"] for i in picks]).astype(np.float32)

    def held_out(max_clips: int) -> HeldOut:
        subset = evaluator.source
        count = len(subset) if max_clips <= 0 else min(max_clips, len(subset))
        waves = np.stack([subset[i]["audio"] for i in range(count)]).astype(np.float32)
        ids = tuple(subset.records[i].clip_id for i in range(count))
        return HeldOut(waves, ids, lambda outputs: evaluator.score_arrays(outputs, ids))

    outputs = (Output("strong", FRAME_PROBS, data.classes, data.encoder.timestamps()),
               Output("weak", CLIP_PROBS, data.classes))
    return InferenceModel(name=name, fn=fn, variables=variables, input_shape=(data.clip_samples,), outputs=outputs,
                          primary_metric=config.eval.primary_metric, sample_rate=int(config.data.sample_rate),
                          calibration=calibration, held_out=held_out, source=source, **options)


def predictor(config, data: SEDData, predict_batch):
    """What ``--mode=predict`` runs: the trained model on clip windows, the systems' median filter."""
    from jaxaudio.predict.sed import SEDPredictor

    evaluator = evaluators(config, data)[config.eval.validation_split]
    return SEDPredictor(predict_batch=predict_batch, batch_size=int(config.batch.eval),
                        sample_rate=int(config.data.sample_rate), clip_samples=data.clip_samples,
                        frame_timestamps=data.encoder.timestamps(), class_names=data.classes,
                        postprocess=evaluator.postprocess)


def describe(workdir: str, stage: str, step: int, who: str = "teacher") -> str:
    return f"{os.path.abspath(workdir)} ({stage} {who}, step {step})"
