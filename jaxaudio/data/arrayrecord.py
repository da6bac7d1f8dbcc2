"""Random-access clips from prepared ArrayRecord shards, item for item what ClipSource yields.

`PreparedClipSource` is a `ClipSource` whose audio and labels come from the records that
`jaxaudio.data.prepare` wrote instead of from wav files, so `mixed_batches`/`eval_batches`
take it unchanged and give the same batches for the same seed. Frame targets are encoded when
an item is read, with the caller's encoder, from the raw events in the record (any frame rate
works; the labels were checked against the classes when the set was prepared).

Reading needs `tensorflow-datasets` (its numpy-only parser and `array_record`), not TensorFlow.
Every process opens every shard and reads only the records that `mixed_batches` assigns to its
shard_index, so hosts read disjoint records without per-host files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxaudio.data.desed import DEFAULT_LAYOUT, ClipRecord
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.data.pipeline import ClipSource
from jaxaudio.data.tfds_desed import FORMAT_VERSION, config_name
from jaxaudio.errors import ConfigError, DataFormatError

BUILDER_NAME = "desed_array_record"
_INT16_SCALE = np.float32(32768.0)


def prepared_path(out_dir: os.PathLike | str, sample_rate: int, clip_samples: int) -> Path:
    """Where `prepare(out_dir, ...)` puts the set for this sample rate and clip length."""
    from jaxaudio.data.tfds_desed import DesedArrayRecord

    version = str(DesedArrayRecord.VERSION)
    return Path(out_dir) / BUILDER_NAME / config_name(sample_rate, clip_samples) / version


def read_metadata(prepared_dir: os.PathLike | str) -> dict[str, Any]:
    """The prepared set's metadata (rate, clip length, dtype, classes, source), checked."""
    prepared_dir = Path(prepared_dir)
    info_file = prepared_dir / "dataset_info.json"
    meta_file = prepared_dir / "metadata.json"
    if not info_file.is_file() or not meta_file.is_file():
        raise DataFormatError(
            prepared_dir,
            "not a prepared set (no dataset_info.json/metadata.json); prepare one with "
            "`python -m jaxaudio.data.prepare --data_dir DIR --out OUT`",
        )
    try:
        metadata = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise DataFormatError(meta_file, f"invalid JSON ({err})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(
            meta_file,
            f"format_version {metadata.get('format_version')!r} is not {FORMAT_VERSION}; "
            "prepare the set again with this version of jaxaudio",
        )
    return metadata


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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
        self._length = int(sizes[split])
        self._audio_dir = Path(self.metadata["source_dir"]) / DEFAULT_LAYOUT[split].audio_dir \
            if split in DEFAULT_LAYOUT else Path(self.metadata["source_dir"])
        self._data_source = None
        self.records = _LazyRecords(self)

    # -- reading -----------------------------------------------------------------------------
    def _open(self):
        if self._data_source is None:
            import tensorflow_datasets as tfds

            builder = tfds.builder_from_directory(self.prepared_dir)
            source = builder.as_data_source(split=self.split)
            if len(source) != self._length:
                raise DataFormatError(
                    self.prepared_dir,
                    f"split {self.split!r} has {len(source)} records, metadata says {self._length}",
                )
            self._data_source = source
        return self._data_source

    def _read(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(f"record {index} out of range for split {self.split!r} ({self._length})")
        try:
            return self._open()[index]
        except (OSError, RuntimeError, ValueError) as err:
            raise DataFormatError(
                self.prepared_dir, f"split {self.split!r}, record {index}: cannot read ({err})"
            ) from err

    def _record(self, raw: dict[str, Any]) -> ClipRecord:
        times = np.asarray(raw["event_times"], np.float64).reshape(-1, 2)
        labels = [_text(label) for label in raw["event_labels"]]
        events = tuple((float(a), float(b), lab) for (a, b), lab in zip(times, labels))
        duration = float(raw["duration"])
        filename = _text(raw["filename"])
        return ClipRecord(
            path=str(self._audio_dir / filename),
            clip_id=_text(raw["clip_id"]),
            events=events if bool(raw["strong_annotated"]) else None,
            weak=tuple(_text(w) for w in raw["weak_labels"]) if bool(raw["weak_annotated"]) else None,
            duration=None if duration < 0 else duration,
        )

    def _samples(self, raw: dict[str, Any]) -> np.ndarray:
        audio = np.asarray(raw["audio"])
        if audio.dtype == np.int16:
            return audio.astype(np.float32) / _INT16_SCALE  # exact: soundfile's PCM16 scale
        return np.array(audio, np.float32)  # a writable copy, as read_audio gives

    # -- ClipSource interface ----------------------------------------------------------------
    def __len__(self) -> int:
        return self._length

    def _audio(self, index: int) -> np.ndarray:
        return self._samples(self._read(int(index)))

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        raw = self._read(index)
        strong, weak, has_strong, has_weak = self._encode(self._record(raw))
        return {
            "audio": self._samples(raw),
            "strong": strong,
            "weak": weak,
            "has_strong": np.bool_(has_strong),
            "has_weak": np.bool_(has_weak),
            "index": np.int32(index),
        }

    def __getstate__(self):
        # The open reader stays behind; a grain worker process reopens the shards itself.
        state = dict(self.__dict__)
        state["_data_source"] = None
        return state


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
        return self._source._record(self._source._read(index))
