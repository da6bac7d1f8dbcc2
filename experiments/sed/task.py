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
from jaxaudio.errors import ConfigError
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
        """Rows per batch by subset in fine-tuning (``batch.strong`` / ``weak`` / ``unlabeled``)."""
        return self.train_counts("")

    def pretrain_counts(self) -> dict[str, int]:
        """Rows per batch by subset in pre-training (``batch.pretrain_strong`` / ...), labels unused."""
        return self.train_counts("pretrain_")

    def train_counts(self, prefix: str) -> dict[str, int]:
        """``batch.<prefix>strong`` strong rows, of which ``batch.<prefix>strong_real`` come from
        ``data.train_strong_real`` (the AudioSet-strong clips) and the rest from ``data.train_strong``
        (synthetic); then the weak and the unlabeled rows. The real rows come first and both kinds
        form the batch's one strong segment, as the reference stacks them (ref
        recipes/desed/finetune/train.py: ``strong_num += syn_num``)."""
        d, b = self.config.data, self.config.batch
        strong, real = int(b[f"{prefix}strong"]), int(b.get(f"{prefix}strong_real", 0))
        real_name = d.get("train_strong_real", "")
        if real and not real_name:
            raise ConfigError(f"batch.{prefix}strong_real={real} but data.train_strong_real is empty; name the "
                              "real strong subset (DESED: strong_real) or set the count to 0")
        if not 0 <= real <= strong:
            raise ConfigError(f"batch.{prefix}strong_real={real}: must lie in [0, batch.{prefix}strong={strong}] "
                              "(the real rows are part of the strong rows)")
        counts = {real_name: real} if real else {}
        counts[d.train_strong] = strong - real
        counts.update({d.train_weak: int(b[f"{prefix}weak"]), d.train_unlabeled: int(b[f"{prefix}unlabeled"])})
        return counts


def evaluators(config, data: SEDData) -> dict[str, SEDEvaluator]:
    e = config.eval
    return {split: SEDEvaluator(lambda split=split: data.split(split), config.batch.eval, e.median_window,
                                primary_metric=e.primary_metric,
                                max_filter_psds2=bool(e.get("max_filter_psds2", False)))
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
