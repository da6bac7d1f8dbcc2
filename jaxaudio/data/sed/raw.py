"""What one prepared DESED record holds, and the records of a DESED-layout folder to write.

Why raw: a record holds what `ClipSource` computes from the folder before label encoding, the
fixed-length clip at the configured rate and the raw labels (events with float64 times, weak
label names, which label kinds the clip has), so any frame rate can be encoded at read time
and the batches equal the folder reader's. Writing itself is `jaxaudio.data.records`.

Audio is stored as int16 when that is lossless (every file of the set is mono 16-bit PCM at
the target rate, so the decoded samples are exactly k / 32768), else as float32.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf

from jaxaudio.audio.io import pad_or_crop, read_audio
from jaxaudio.data.records.writer import WRITER_OPTIONS
from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, DESED_CLASSES, ClipRecord, SubsetSpec, load_subset
from jaxaudio.errors import AudioFileError, ConfigError, DataFormatError

# Bump when the record layout changes; part of the stored metadata. 1 was the TFDS layout.
# 3: validation/eval hold every clip of their durations tsv (event-free clips the strong tsv
# does not list included), so a set prepared by version 2 may lack clips.
FORMAT_VERSION = 3
AUDIO_DTYPES = ("auto", "int16", "float32")
_INT16_SCALE = 32768.0  # soundfile decodes PCM16 sample k as k / 32768


def config_name(sample_rate: int, clip_samples: int) -> str:
    """One prepared copy per (rate, clip length) can live in one output folder."""
    return f"sr{int(sample_rate)}_n{int(clip_samples)}"


def raw_features(clip_samples: int, audio_dtype: str) -> dict[str, tuple[tuple, str]]:
    """The records' features spec (see `jaxaudio.data.records.codec`)."""
    return {
        "audio": ((int(clip_samples),), audio_dtype),
        # float64 seconds: a float32 round trip would move a boundary sitting on a frame
        # edge to the neighbouring frame.
        "event_times": ((None, 2), "float64"),
        "event_labels": ((None,), "str"),
        "weak_labels": ((None,), "str"),
        "strong_annotated": ((), "bool"),  # listed in a strong tsv (possibly with no events)
        "weak_annotated": ((), "bool"),  # listed in a weak tsv
        "filename": ((), "str"),
        "clip_id": ((), "str"),
        "duration": ((), "float64"),  # from the durations tsv; -1 when there is none
    }


def raw_item(record: ClipRecord, audio: np.ndarray) -> dict[str, Any]:
    events = record.events or ()
    return {
        "audio": audio,
        "event_times": np.asarray([(a, b) for a, b, _ in events], np.float64).reshape(-1, 2),
        "event_labels": [label for _, _, label in events],
        "weak_labels": list(record.weak or ()),
        "strong_annotated": np.bool_(record.events is not None),
        "weak_annotated": np.bool_(record.weak is not None),
        "filename": Path(record.path).name,
        "clip_id": record.clip_id,
        "duration": np.float64(-1.0 if record.duration is None else record.duration),
    }


def clip_record(raw: dict[str, Any], audio_dir: Path) -> ClipRecord:
    """The ClipRecord that `raw_item` was made from (its path under `audio_dir`)."""
    events = tuple((float(a), float(b), label)
                   for (a, b), label in zip(raw["event_times"], raw["event_labels"]))
    duration = float(raw["duration"])
    return ClipRecord(
        path=str(audio_dir / raw["filename"]),
        clip_id=raw["clip_id"],
        events=events if bool(raw["strong_annotated"]) else None,
        weak=tuple(raw["weak_labels"]) if bool(raw["weak_annotated"]) else None,
        duration=None if duration < 0 else duration,
    )


def present_subsets(root: Path, layout: dict[str, SubsetSpec]) -> list[str]:
    """Subsets of the layout whose audio folder exists under `root` (their tsvs must, too)."""
    return [name for name, spec in layout.items() if (root / spec.audio_dir).is_dir()]


def _int16_is_lossless(records: Sequence[ClipRecord], sample_rate: int) -> bool:
    """True when every file decodes to exact k/32768 samples at `sample_rate` (header only)."""
    for record in records:
        try:
            info = sf.info(record.path)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioFileError(record.path, f"cannot decode audio header ({err})") from err
        if (info.subtype, info.channels, info.samplerate) != ("PCM_16", 1, sample_rate):
            return False
    return True


def source_fingerprint(root: Path, layout: dict[str, SubsetSpec], subsets: Sequence[str]) -> str:
    """sha256 over the metadata files' bytes and the audio files' names and sizes.

    Cheap enough to recompute on every `prepare` call, so a changed folder is noticed rather
    than silently served from a stale copy. (Audio content is not hashed: a same-size edit of
    a wav file goes unnoticed; use --force after editing audio in place.)
    """
    digest = hashlib.sha256()
    for name in subsets:
        spec = layout[name]
        digest.update(f"subset {name}\n".encode())
        for tsv in (spec.strong_tsv, spec.weak_tsv, spec.durations_tsv):
            if tsv and (root / tsv).is_file():
                digest.update(f"{tsv}\n".encode())
                digest.update(hashlib.sha256((root / tsv).read_bytes()).digest())
        audio_dir = root / spec.audio_dir
        for entry in sorted(os.scandir(audio_dir), key=lambda e: e.name):
            if entry.is_file():
                digest.update(f"{entry.name} {entry.stat().st_size}\n".encode())
    return digest.hexdigest()


class RawClips:
    """Item i: `raw_item` of clip i of a subset, its audio read as ClipSource reads it and
    stored in `audio_dtype` (what the writer asks for, in order)."""

    def __init__(self, records: Sequence[ClipRecord], sample_rate: int, clip_samples: int,
                 audio_dtype: str):
        self.records = list(records)
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.audio_dtype = audio_dtype

    def __len__(self) -> int:
        return len(self.records)

    def _audio(self, path: str) -> np.ndarray:
        audio = pad_or_crop(read_audio(path, self.sample_rate, mono=True), self.clip_samples)
        if self.audio_dtype == "float32":
            return np.ascontiguousarray(audio, np.float32)
        scaled = audio.astype(np.float64) * _INT16_SCALE
        stored = np.round(scaled)
        if not np.array_equal(stored, scaled) or stored.min() < -32768 or stored.max() > 32767:
            raise AudioFileError(path, "samples are not exact 16-bit values; prepare with "
                                       "audio_dtype='float32'")
        return stored.astype(np.int16)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[int(index)]
        return raw_item(record, self._audio(record.path))


class DesedSet:
    """A DESED-layout folder, checked and listed for preparation: one split per present
    subset that has clips (in filename order, so record indices equal ClipSource indices)."""

    def __init__(
        self,
        source_dir: os.PathLike | str,
        sample_rate: int,
        clip_samples: int,
        audio_dtype: str = "auto",
        subsets: Sequence[str] | None = None,
        classes: Sequence[str] = DESED_CLASSES,
        layout: dict[str, SubsetSpec] = DEFAULT_LAYOUT,
    ):
        self.source_dir = Path(source_dir).resolve()
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(clip_samples)
        self.classes = tuple(classes)
        self.layout = dict(layout)
        if not self.source_dir.is_dir():
            raise ConfigError(f"data_dir: {str(self.source_dir)!r} is not a folder")
        if self.sample_rate <= 0 or self.clip_samples <= 0:
            raise ConfigError(
                f"sample_rate {sample_rate} and clip_samples {clip_samples} must be positive"
            )
        if audio_dtype not in AUDIO_DTYPES:
            raise ConfigError(f"audio_dtype: {audio_dtype!r} is not one of {AUDIO_DTYPES}")
        if subsets is None:
            subsets = present_subsets(self.source_dir, self.layout)
        unknown = [name for name in subsets if name not in self.layout]
        if unknown:
            raise ConfigError(f"subsets: unknown {unknown}; the layout has {list(self.layout)}")
        # Subsets with no clips are left out: a split of nothing serves no reader.
        records = {name: load_subset(self.source_dir, self.layout[name], self.classes)
                   for name in subsets}
        self.records = {name: recs for name, recs in records.items() if recs}
        if not self.records:
            raise DataFormatError(
                self.source_dir,
                f"no clips found in any of the subsets {list(subsets)} "
                f"(audio folders: {[self.layout[n].audio_dir for n in subsets]})",
            )
        every = [r for recs in self.records.values() for r in recs]
        if audio_dtype == "auto":
            audio_dtype = "int16" if _int16_is_lossless(every, self.sample_rate) else "float32"
        self.audio_dtype = audio_dtype
        self.fingerprint = source_fingerprint(self.source_dir, self.layout, list(self.records))

    def describe(self) -> dict:
        """What the prepared set holds, as stored in its metadata (and compared by prepare)."""
        return dict(
            format_version=FORMAT_VERSION,
            sample_rate=self.sample_rate,
            clip_samples=self.clip_samples,
            audio_dtype=self.audio_dtype,
            classes=list(self.classes),
            source_dir=str(self.source_dir),
            source_fingerprint=self.fingerprint,
            subsets={name: len(recs) for name, recs in self.records.items()},
            audio_dirs={name: self.layout[name].audio_dir for name in self.records},
            writer_options=WRITER_OPTIONS,
        )

    @property
    def features(self) -> dict:
        return raw_features(self.clip_samples, self.audio_dtype)

    def splits(self) -> dict[str, RawClips]:
        return {name: RawClips(recs, self.sample_rate, self.clip_samples, self.audio_dtype)
                for name, recs in self.records.items()}
