"""Random-access clips from prepared ArrayRecord shards, item for item what ClipSource yields.

`PreparedClipSource` is a `ClipSource` whose audio and labels come from the records that
`jaxaudio.data.prepare` wrote instead of from wav files, so `mixed_batches`/`eval_batches`
take it unchanged and give the same batches for the same seed. Frame targets are encoded when
an item is read, with the caller's encoder, from the raw events in the record (any frame rate
works; the labels were checked against the classes when the set was prepared).

Reading is `jaxaudio.data.records.PreparedSource` (needs `array_record`, not TensorFlow):
every process reads only the records that the batchers assign to its shard_index.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxaudio.data.records.codec import INFO_FILE
from jaxaudio.data.records.reader import PreparedSource, read_info
from jaxaudio.data.sed.clips import ClipSource
from jaxaudio.data.sed.desed import ClipRecord
from jaxaudio.data.sed.labels import FrameLabelEncoder
from jaxaudio.data.sed.raw import FORMAT_VERSION, clip_record, config_name
from jaxaudio.errors import ConfigError, DataFormatError

BUILDER_NAME = "desed_array_record"
VERSION = "2.0.0"  # the folder level under the config; 1.0.0 held the TFDS-written layout
_INT16_SCALE = np.float32(32768.0)


def prepared_path(out_dir: os.PathLike | str, sample_rate: int, clip_samples: int) -> Path:
    """Where `prepare(out_dir, ...)` puts the set for this sample rate and clip length."""
    return Path(out_dir) / BUILDER_NAME / config_name(sample_rate, clip_samples) / VERSION


def read_metadata(prepared_dir: os.PathLike | str) -> dict[str, Any]:
    """The prepared set's metadata (rate, clip length, dtype, classes, source), checked."""
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / INFO_FILE).is_file():
        raise DataFormatError(
            prepared_dir,
            f"not a prepared set (no {INFO_FILE}); prepare one with "
            "`python -m jaxaudio.data.prepare --data_dir DIR --out OUT`",
        )
    metadata = read_info(prepared_dir)["metadata"]
    if metadata.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(
            prepared_dir / INFO_FILE,
            f"DESED format_version {metadata.get('format_version')!r} is not {FORMAT_VERSION}; "
            "prepare the set again with this version of jaxaudio",
        )
    return metadata


class PreparedClipSource(ClipSource):
    """ClipSource over one split (subset) of a prepared set.

    `records` is a lazy sequence of ClipRecord rebuilt from the stored labels (each access
    reads one record), for callers that need clip ids, events or durations (evaluation).
    """

    def __init__(self, prepared_dir: os.PathLike | str, split: str, encoder: FrameLabelEncoder):
        self.prepared_dir = Path(prepared_dir)
        self.split = split
        self.metadata = read_metadata(self.prepared_dir)
        sizes = self.metadata["subsets"]
        if split not in sizes:
            raise ConfigError(
                f"split {split!r} is not in the prepared set {str(self.prepared_dir)!r}; "
                f"it holds {sorted(sizes)}"
            )
        super().__init__([], self.metadata["sample_rate"], self.metadata["clip_samples"],
                         encoder, cache=False)
        unknown = sorted(set(self.metadata["classes"]) - set(encoder.classes))
        if unknown:
            raise ConfigError(
                f"{str(self.prepared_dir)!r} was prepared with classes {unknown} that the label "
                f"encoder does not know (encoder classes: {list(encoder.classes)})"
            )
        self._raw = PreparedSource(self.prepared_dir, split)
        if len(self._raw) != int(sizes[split]):
            raise DataFormatError(
                self.prepared_dir,
                f"split {split!r} has {len(self._raw)} records, metadata says {sizes[split]}",
            )
        self._audio_dir = Path(self.metadata["source_dir"]) / self.metadata["audio_dirs"][split]
        self.records = _LazyRecords(self)

    def _record(self, raw: dict[str, Any]) -> ClipRecord:
        return clip_record(raw, self._audio_dir)

    def _samples(self, raw: dict[str, Any]) -> np.ndarray:
        audio = raw["audio"]
        if audio.dtype == np.int16:
            return audio.astype(np.float32) / _INT16_SCALE  # exact: soundfile's PCM16 scale
        return audio  # the reader's own writable float32 copy, as read_audio gives

    # -- ClipSource interface ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._raw)

    def _audio(self, index: int) -> np.ndarray:
        return self._samples(self._raw[int(index)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        raw = self._raw[index]
        strong, weak, has_strong, has_weak = self._encode(self._record(raw))
        return {
            "audio": self._samples(raw),
            "strong": strong,
            "weak": weak,
            "has_strong": np.bool_(has_strong),
            "has_weak": np.bool_(has_weak),
            "index": np.int32(index),
        }


class _LazyRecords(Sequence[ClipRecord]):
    def __init__(self, source: PreparedClipSource):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        return self._source._record(self._source._raw[index])
