"""The SED Source: fixed-length clips read from audio files, with their frame and clip targets."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxaudio.audio.io import pad_or_crop, read_audio
from jaxaudio.data.sed.desed import ClipRecord
from jaxaudio.data.sed.labels import FrameLabelEncoder
from jaxaudio.data.source import BatchSpec, padding_from_spec
from jaxaudio.errors import ConfigError


class ClipSource:
    """Random-access source of fixed-length clips with their frame and clip targets.

    Item: {"audio": (clip_samples,) float32, "strong": (n_frames, classes) float32,
    "weak": (classes,) float32, "has_strong": bool, "has_weak": bool, "index": int32}.
    A strongly labelled clip also gets a weak target (the union of its event classes).
    Labels are encoded up front so a bad label fails at construction, not mid-training.
    With `cache`, decoded audio stays in memory (per process/worker) after the first read.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        sample_rate: int,
        clip_samples: int,
        encoder: FrameLabelEncoder,
        cache: bool = True,
    ):
        if abs(clip_samples / sample_rate - encoder.clip_seconds) > 1.0 / sample_rate:
            raise ConfigError(
                f"clip_samples/sample_rate = {clip_samples}/{sample_rate} s does not match the "
                f"label encoder's clip_seconds = {encoder.clip_seconds}; frame targets would "
                "not line up with the audio"
            )
        self.records = list(records)
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(clip_samples)
        self.encoder = encoder
        self.cache = cache
        self._audio_cache: dict[int, np.ndarray] = {}
        self._labels = [self._encode(record) for record in self.records]

    def _encode(self, record: ClipRecord):
        enc = self.encoder
        has_strong = record.events is not None
        has_weak = has_strong or record.weak is not None
        strong = enc.encode_strong(record.events or ())
        weak_names = {label for _, _, label in record.events or ()} | set(record.weak or ())
        weak = enc.encode_weak(sorted(weak_names))
        if not has_strong:
            strong[:] = 0.0
        return strong, weak, has_strong, has_weak

    def __len__(self) -> int:
        return len(self.records)

    def _audio(self, index: int) -> np.ndarray:
        audio = self._audio_cache.get(index)
        if audio is None:
            audio = read_audio(self.records[index].path, self.sample_rate, mono=True)
            audio = pad_or_crop(audio, self.clip_samples)
            if self.cache:
                self._audio_cache[index] = audio
        return audio

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        strong, weak, has_strong, has_weak = self._labels[index]
        return {
            "audio": self._audio(index),
            "strong": strong,
            "weak": weak,
            "has_strong": np.bool_(has_strong),
            "has_weak": np.bool_(has_weak),
            "index": np.int32(index),
        }

    def batch_spec(self) -> BatchSpec:
        """Per-item shape and dtype of each key (the Source protocol)."""
        enc = self.encoder
        return {
            "audio": ((self.clip_samples,), np.dtype(np.float32)),
            "strong": ((enc.n_frames, enc.n_classes), np.dtype(np.float32)),
            "weak": ((enc.n_classes,), np.dtype(np.float32)),
            "has_strong": ((), np.dtype(np.bool_)),
            "has_weak": ((), np.dtype(np.bool_)),
            "index": ((), np.dtype(np.int32)),
        }

    def padding_item(self) -> dict[str, Any]:
        """An all-zero item with index -1, used to fill the last eval batch."""
        return padding_from_spec(self.batch_spec())
