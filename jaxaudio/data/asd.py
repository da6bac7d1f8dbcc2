"""The DCASE2020 task 2 (anomalous sound detection) layout: MIMII + ToyADMOS clips, and their Source.

Layout (the baseline's README, ``y-kawagu/dcase2020_task2_baseline``)::

    <root>/dev_data/<machine_type>/{train,test}/*.wav
    <root>/eval_data/<machine_type>/{train,test}/*.wav            (optional)
    <root>/additional_train_data/<machine_type>/train/*.wav       (optional)

Training folders hold normal clips only (``normal_id_00_00000000.wav``); dev test folders hold
normal and anomalous ones (``anomaly_id_02_00000123.wav``); the released eval test clips are
unlabelled (``id_05_00000000.wav``). Scores are per machine type and ID (AUC, pAUC), so every
labelled test split must hold both normal and anomalous clips of each ID, or its AUC is undefined:
`scan` refuses such a layout rather than let the evaluator fail hours later.

The ID-classifier systems (GeCo, STgram-MFN-like baselines) train on the machine IDs of the
training clips as classes ("fan/id_00"): `machine_id_classes`. `ASDClipSource` gives fixed-length
waveforms with their class index and label, for the batchers of `jaxaudio.data.source`.
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import soundfile as sf

from jaxaudio.audio.io import audio_sample_rate, pad_or_crop, read_audio
from jaxaudio.data.source import BatchSpec, padding_from_spec
from jaxaudio.errors import AudioFileError, ConfigError, DataFormatError

_logger = logging.getLogger(__name__)

MACHINE_TYPES = ("ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve")
# subset name -> folder under the root; also the order `scan` returns them in.
SUBSET_DIRS = {"dev": "dev_data", "eval": "eval_data", "additional": "additional_train_data"}
SPLITS = ("train", "test")
# Which split folders each subset must have: dev always has both; eval_data may hold only the
# additional training clips (unzipped into eval_data/<type>/train, as the baseline's README does)
# or only the evaluation clips; additional_train_data has training clips only.
_REQUIRED_SPLITS = {"dev": ("train", "test"), "eval": (), "additional": ("train",)}
_SEARCHED_SPLITS = {"dev": SPLITS, "eval": SPLITS, "additional": ("train",)}

SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0  # MIMII clips are 10 s; ToyADMOS ones ~10-11 s and are cropped to this
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)
# A clip whose peak is below this is treated as silent: a dead channel or a zeroed file. PCM16's
# smallest non-zero sample is 1/32768 ~ 3e-5, so any recorded sound is above it.
SILENCE_PEAK = 1e-6

_LABELLED_NAME = re.compile(r"^(normal|anomaly)_(id_\d{2})_\d+\.wav$", re.IGNORECASE)
_UNLABELLED_NAME = re.compile(r"^(id_\d{2})_\d+\.wav$", re.IGNORECASE)
NAME_PATTERNS = ("normal_id_XX_NNNNNNNN.wav", "anomaly_id_XX_NNNNNNNN.wav", "id_XX_NNNNNNNN.wav (eval test only)")


@dataclass(frozen=True)
class ASDFile:
    """One clip: where it is and what the layout says about it.

    label: 0 normal, 1 anomaly, None for an unlabelled (eval test) clip.
    """

    path: str
    machine_type: str
    machine_id: str  # "id_00"
    split: str  # "train" | "test"
    subset: str  # "dev" | "eval" | "additional"
    label: Optional[int]

    @property
    def class_name(self) -> str:
        """The ID-classification target, "<machine_type>/<machine_id>"."""
        return f"{self.machine_type}/{self.machine_id}"


def parse_name(path: os.PathLike | str) -> tuple[Optional[int], str]:
    """(label, machine_id) from a DCASE2020 file name: label 0/1, or None for ``id_XX_*.wav``."""
    name = Path(path).name
    match = _LABELLED_NAME.match(name)
    if match:
        return (0 if match.group(1).lower() == "normal" else 1), match.group(2).lower()
    match = _UNLABELLED_NAME.match(name)
    if match:
        return None, match.group(1).lower()
    raise DataFormatError(path, f"file name {name!r} does not match the DCASE2020 task 2 patterns "
                                f"{', '.join(NAME_PATTERNS)} (XX: two-digit machine ID)")


def _wav_files(folder: Path) -> list[Path]:
    """The .wav files directly inside `folder`, sorted; a folder without any is an error."""
    if not folder.is_dir():
        raise DataFormatError(folder, "folder does not exist")
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    wavs = sorted(entry for entry in entries if entry.is_file() and entry.suffix.lower() == ".wav")
    if not wavs:
        raise DataFormatError(folder, "folder holds no .wav files" + (f" (it holds {len(entries)} other entries)"
                                                                      if entries else " (it is empty)"))
    others = len(entries) - len(wavs)
    if others:
        _logger.warning("%s: %d entries that are not .wav files are ignored", folder, others)
    return wavs


def _split_files(folder: Path, subset: str, machine_type: str, split: str) -> list[ASDFile]:
    files = []
    for path in _wav_files(folder):
        label, machine_id = parse_name(path)
        if split == "train" and label != 0:
            kind = "an anomalous" if label == 1 else "an unlabelled"
            raise DataFormatError(path, f"{kind} clip in a training folder; training folders hold normal clips "
                                        "only (normal_id_XX_NNNNNNNN.wav)")
        if split == "test" and subset == "dev" and label is None:
            raise DataFormatError(path, "an unlabelled clip in dev_data; dev test clips are named "
                                        "normal_id_XX_*.wav or anomaly_id_XX_*.wav")
        files.append(ASDFile(str(path), machine_type, machine_id, split, subset, label))
    return files


def _check_test_split(folder: Path, files: list[ASDFile]) -> None:
    """A labelled test split needs normal and anomalous clips of every ID (AUC is per ID)."""
    labelled = [f for f in files if f.label is not None]
    if not labelled:
        return  # unlabelled eval clips: scored elsewhere, from the evaluator's label lists
    if len(labelled) != len(files):
        unlabelled = next(f for f in files if f.label is None)
        raise DataFormatError(unlabelled.path, f"unlabelled clip among {len(labelled)} labelled ones in {folder}; "
                                               "a test folder must be all labelled or all unlabelled")
    counts: dict[str, Counter] = defaultdict(Counter)
    for f in files:
        counts[f.machine_id][f.label] += 1
    lacking = [f"{machine_id} ({c[0]} normal, {c[1]} anomalous)"
               for machine_id, c in sorted(counts.items()) if not c[0] or not c[1]]
    if lacking:
        machine_type = files[0].machine_type
        raise DataFormatError(folder, f"AUC is undefined for {machine_type} {', '.join(lacking)}: each machine ID of "
                                      "a labelled test split needs both normal and anomalous clips")


def _machine_type_dirs(subset_dir: Path, machine_types: Optional[Sequence[str]]) -> list[Path]:
    if not subset_dir.is_dir():
        raise DataFormatError(subset_dir, "subset folder does not exist")
    if machine_types is not None:
        dirs = [subset_dir / name for name in machine_types]
        for folder in dirs:
            if not folder.is_dir():
                raise DataFormatError(folder, "machine-type folder does not exist")
        return dirs
    dirs = sorted(entry for entry in subset_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not dirs:
        raise DataFormatError(subset_dir, f"holds no machine-type folders; expected some of {', '.join(MACHINE_TYPES)}"
                                          ", each with train/ and test/ folders")
    return dirs


def scan(
    root: os.PathLike | str,
    subsets: Sequence[str] = ("dev",),
    machine_types: Optional[Sequence[str]] = None,
) -> list[ASDFile]:
    """Every clip of the chosen subsets ("dev", "eval", "additional") and machine types.

    `machine_types` None takes every machine-type folder found (a name other than the six
    DCASE2020 ones is read, with a warning). Sorted by (subset in the order dev, eval,
    additional; machine type; split train then test; machine ID; file name). Raises
    DataFormatError naming the path for a missing root, subset or split folder, an empty
    folder, a file name that does not fit, a non-normal training clip, a labelled test split
    lacking normal or anomalous clips of some ID, and a training clip present in two subsets
    (eval_data/<type>/train and additional_train_data/<type>/train holding the same download).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "DCASE2020 task 2 data root does not exist")
    for key, value in (("subsets", subsets), ("machine_types", machine_types)):
        if isinstance(value, str) or (value is not None and not list(value)):
            raise ConfigError(f"ASD {key} {value!r}: expected a non-empty list of names, e.g. [{value!r}]")
    unknown = [name for name in subsets if name not in SUBSET_DIRS]
    if unknown:
        raise ConfigError(f"ASD subsets {list(subsets)}: expected a non-empty list of {list(SUBSET_DIRS)}")
    if len(set(subsets)) != len(subsets):
        raise ConfigError(f"ASD subsets {list(subsets)} name a subset twice")
    files: list[ASDFile] = []
    warned: set[str] = set()
    for subset in sorted(subsets, key=list(SUBSET_DIRS).index):
        for type_dir in _machine_type_dirs(root / SUBSET_DIRS[subset], machine_types):
            machine_type = type_dir.name
            if machine_type not in MACHINE_TYPES and machine_type not in warned:
                warned.add(machine_type)
                _logger.warning("%s: %r is not a DCASE2020 task 2 machine type (%s); reading it anyway",
                                type_dir, machine_type, ", ".join(MACHINE_TYPES))
            present = [split for split in _SEARCHED_SPLITS[subset] if (type_dir / split).is_dir()]
            for split in _REQUIRED_SPLITS[subset]:
                if split not in present:
                    raise DataFormatError(type_dir / split, f"{SUBSET_DIRS[subset]} needs a {split}/ folder "
                                                            "for every machine type")
            if not present:
                raise DataFormatError(type_dir, f"holds neither train/ nor test/ (expected {type_dir / 'train'} "
                                                f"and/or {type_dir / 'test'})")
            for split in present:
                split_files = _split_files(type_dir / split, subset, machine_type, split)
                if split == "test":
                    _check_test_split(type_dir / split, split_files)
                files.extend(split_files)
    _check_no_duplicate_training_clips(files)
    order = list(SUBSET_DIRS)
    return sorted(files, key=lambda f: (order.index(f.subset), f.machine_type, SPLITS.index(f.split),
                                        f.machine_id, Path(f.path).name))


def _check_no_duplicate_training_clips(files: Iterable[ASDFile]) -> None:
    seen: dict[tuple[str, str], ASDFile] = {}
    for f in files:
        if f.split != "train":
            continue
        key = (f.machine_type, Path(f.path).name.lower())
        first = seen.setdefault(key, f)
        if first is not f:
            raise DataFormatError(f.path, f"the same training clip is also in subset {first.subset!r} "
                                          f"({first.path}); scan only one of the subsets {first.subset!r} and "
                                          f"{f.subset!r}, or each clip counts twice")


def machine_id_classes(files: Iterable[ASDFile]) -> list[str]:
    """Sorted "<machine_type>/<machine_id>" of the training clips: the ID classifier's classes."""
    classes = sorted({f.class_name for f in files if f.split == "train"})
    if not classes:
        raise ConfigError("machine_id_classes: none of the files given is a training clip; the classes are the "
                          "machine IDs of the training split (scan a subset with train/ folders)")
    return classes


def summary(files: Iterable[ASDFile]) -> list[dict[str, Any]]:
    """Clip counts per (subset, split, machine type, machine ID), sorted, for logs and reports."""
    counts: dict[tuple[str, str, str, str], Counter] = defaultdict(Counter)
    for f in files:
        label = {0: "normal", 1: "anomaly", None: "unknown"}[f.label]
        counts[(f.subset, f.split, f.machine_type, f.machine_id)][label] += 1
    order = list(SUBSET_DIRS)
    rows = []
    for key in sorted(counts, key=lambda k: (order.index(k[0]), SPLITS.index(k[1]), k[2], k[3])):
        c = counts[key]
        rows.append({"subset": key[0], "split": key[1], "machine_type": key[2], "machine_id": key[3],
                     "normal": c["normal"], "anomaly": c["anomaly"], "unknown": c["unknown"],
                     "total": sum(c.values())})
    return rows


def format_summary(files: Iterable[ASDFile]) -> str:
    """`summary` as a fixed-width text table, one line per machine ID and a total line."""
    rows = summary(files)
    header = ("subset", "split", "machine_type", "machine_id", "normal", "anomaly", "unknown", "total")
    table = [header] + [tuple(str(row[key]) for key in header) for row in rows]
    totals = {key: sum(row[key] for row in rows) for key in header[4:]}
    table.append(("all", "", "", "", *(str(totals[key]) for key in header[4:])))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(line, widths))).rstrip() for line in table)


def _header(path: str) -> tuple[int, int]:
    """(sample rate, frames) from the file's header; unreadable files raise AudioFileError."""
    rate = audio_sample_rate(path)  # checks existence, extension and that the header decodes
    try:
        frames = int(sf.info(path).frames)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioFileError(path, f"cannot decode audio header ({err})") from err
    return rate, frames


class ASDClipSource:
    """Random-access source of fixed-length ASD clips (the Source protocol of data/source.py).

    Item: {"audio": (clip_samples,) float32, "class_id": int32 index into `classes` (-1 when the
    clip's "<type>/<id>" is not a class, e.g. an eval ID), "label": int32 (0 normal, 1 anomaly,
    -1 unknown), "index": int32}. Clips are zero-padded or cropped at the end to `clip_samples`.

    Every file's header is read at construction, so an unreadable or empty file, or one at
    another rate, is found before training starts: other rates are resampled on read with one
    warning per machine type (how many files, one example), or refused with `resample=False`.
    A silent clip (peak below SILENCE_PEAK) raises AudioFileError when read. With `cache`,
    decoded clips stay in memory (per process; not pickled): DCASE2020 dev is ~11 GB as float32.
    """

    def __init__(
        self,
        files: Sequence[ASDFile],
        classes: Sequence[str],
        sample_rate: int = SAMPLE_RATE,
        clip_samples: int = CLIP_SAMPLES,
        resample: bool = True,
        cache: bool = False,
    ):
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ConfigError(f"ASDClipSource: sample_rate must be a positive integer, got {sample_rate!r}")
        if int(clip_samples) != clip_samples or clip_samples <= 0:
            raise ConfigError(f"ASDClipSource: clip_samples must be a positive integer, got {clip_samples!r}")
        repeated = sorted(name for name, n in Counter(classes).items() if n > 1)
        if repeated:
            raise ConfigError(f"ASDClipSource: classes {repeated} are listed more than once")
        self.files = list(files)
        self.classes = list(classes)
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(clip_samples)
        self.resample = bool(resample)
        self.cache = bool(cache)
        index = {name: i for i, name in enumerate(self.classes)}
        self.class_ids = np.array([index.get(f.class_name, -1) for f in self.files], np.int32)
        self.labels = np.array([-1 if f.label is None else f.label for f in self.files], np.int32)
        self._check_headers()
        self._audio_cache: dict[int, np.ndarray] = {}

    def _check_headers(self) -> None:
        other_rate: dict[str, list[tuple[str, int]]] = defaultdict(list)
        per_type = Counter(f.machine_type for f in self.files)
        for f in self.files:
            rate, frames = _header(f.path)
            if frames == 0:
                raise AudioFileError(f.path, "audio is empty (0 samples)")
            if rate != self.sample_rate:
                if not self.resample:
                    raise AudioFileError(f.path, f"sample rate is {rate} Hz, expected {self.sample_rate} Hz, and "
                                                 "resampling is off (resample=False)")
                other_rate[f.machine_type].append((f.path, rate))
        for machine_type, found in sorted(other_rate.items()):
            rates = sorted({rate for _, rate in found})
            _logger.warning("%s: %d of %d clips are at %s Hz, not %d Hz, and are resampled on every read; e.g. %s",
                            machine_type, len(found), per_type[machine_type], "/".join(map(str, rates)),
                            self.sample_rate, found[0][0])

    def __len__(self) -> int:
        return len(self.files)

    def _audio(self, index: int) -> np.ndarray:
        audio = self._audio_cache.get(index)
        if audio is None:
            path = self.files[index].path
            audio = read_audio(path, self.sample_rate, mono=True)
            peak = float(np.max(np.abs(audio)))
            if peak < SILENCE_PEAK:
                raise AudioFileError(path, f"clip is silent (peak amplitude {peak:.3g} < {SILENCE_PEAK:g})")
            audio = np.ascontiguousarray(pad_or_crop(audio, self.clip_samples), dtype=np.float32)
            if self.cache:
                self._audio_cache[index] = audio
        return audio

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self.files):
            raise IndexError(f"ASDClipSource index {index} out of range [0, {len(self.files)})")
        return {
            "audio": self._audio(index),
            "class_id": self.class_ids[index],
            "label": self.labels[index],
            "index": np.int32(index),
        }

    def batch_spec(self) -> BatchSpec:
        """Per-item shape and dtype of each key (the Source protocol)."""
        return {
            "audio": ((self.clip_samples,), np.dtype(np.float32)),
            "class_id": ((), np.dtype(np.int32)),
            "label": ((), np.dtype(np.int32)),
            "index": ((), np.dtype(np.int32)),
        }

    def padding_item(self) -> dict[str, Any]:
        """An all-zero clip with index, class_id and label -1, used to fill the last eval batch
        (-1, not 0, so a padded row can never pass for a normal clip of class 0)."""
        item = padding_from_spec(self.batch_spec())
        item["class_id"] = np.int32(-1)
        item["label"] = np.int32(-1)
        return item

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_audio_cache"] = {}  # each worker decodes its own; do not ship gigabytes through pickle
        return state
