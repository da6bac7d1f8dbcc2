"""Readers for the DESED / DCASE task 4 layout: tab-separated metadata joined to audio folders.

Formats (DESED_task baseline): strong `filename onset offset event_label` (times in seconds;
a row with empty onset, offset and label is a clip without events), weak `filename
event_labels` (comma-separated), durations `filename duration`, all UTF-8. Every error is a
DataFormatError whose `row` is the 1-based line number in the file, counting the header as
row 1, so the first data row is row 2.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from jaxaudio.audio.io import SUPPORTED_EXTENSIONS
from jaxaudio.errors import ConfigError, DataFormatError

_logger = logging.getLogger(__name__)

DESED_CLASSES = (
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
)

# Our addition to the layout: the class names of a set that is not DESED's ten, one per line
# (``python -m jaxaudio.data.synth --foreground`` writes it). Without it a set has DESED's classes.
CLASSES_FILE = "metadata/classes.txt"

STRONG_COLUMNS = ("filename", "onset", "offset", "event_label")
WEAK_COLUMNS = ("filename", "event_labels")
DURATION_COLUMNS = ("filename", "duration")
MISSING_AUDIO = ("error", "skip")  # SubsetSpec.missing_audio


@dataclass(frozen=True)
class SubsetSpec:
    """Where one subset lives, as paths relative to the data root.

    scored: a subset that PSDS scores (validation, eval). Its clips are every clip of the
    durations tsv (or, without that file, of the audio folder), as DESED_task and
    sed_scores_eval count them: a clip that the strong tsv does not list has no events, and
    its detections are false positives.

    missing_audio: what a tsv row naming an audio file that is not in `audio_dir` means.
    "error" (the default) raises a DataFormatError naming the row. "skip" drops those clips
    and logs one warning per load (the tsv, how many, the first few names): for training
    subsets downloaded from YouTube, where some clips are always gone (DESED's AudioSet-strong
    set lists 3470 clips, 7 of which cannot be downloaded). A scored subset cannot skip: its
    clips are what PSDS counts.
    """

    name: str
    audio_dir: str
    strong_tsv: str | None = None
    weak_tsv: str | None = None
    durations_tsv: str | None = None
    scored: bool = False
    missing_audio: str = "error"

    def __post_init__(self):
        if self.missing_audio not in MISSING_AUDIO:
            raise ConfigError(f"SubsetSpec {self.name!r}: missing_audio {self.missing_audio!r} is not one of "
                              f"{MISSING_AUDIO}")
        if self.scored and self.missing_audio != "error":
            raise ConfigError(f"SubsetSpec {self.name!r}: a scored subset must have every listed clip "
                              "(missing_audio='error')")


DEFAULT_LAYOUT: dict[str, SubsetSpec] = {
    "synthetic_train": SubsetSpec(
        "synthetic_train",
        "audio/train/synthetic21_train/soundscapes",
        strong_tsv="metadata/train/synthetic21_train/soundscapes.tsv",
    ),
    # DESED's AudioSet-strong ("real strong") training clips; the built-in set writes a
    # synthetic stand-in with other recording conditions (jaxaudio.data.synth.desed).
    "strong_real": SubsetSpec(
        "strong_real",
        "audio/train/strong_label_real",
        strong_tsv="metadata/train/audioset_strong.tsv",
        missing_audio="skip",
    ),
    "weak": SubsetSpec("weak", "audio/train/weak", weak_tsv="metadata/train/weak.tsv"),
    "unlabeled": SubsetSpec("unlabeled", "audio/train/unlabel_in_domain"),
    "validation": SubsetSpec(
        "validation",
        "audio/validation/validation",
        strong_tsv="metadata/validation/validation.tsv",
        durations_tsv="metadata/validation/validation_durations.tsv",
        scored=True,
    ),
    "eval": SubsetSpec(
        "eval",
        "audio/eval/public",
        strong_tsv="metadata/eval/public.tsv",
        durations_tsv="metadata/eval/public_durations.tsv",
        scored=True,
    ),
}


@dataclass(frozen=True)
class ClipRecord:
    """One clip: `events` is None when the clip has no strong labels, `weak` likewise."""

    path: str
    clip_id: str
    events: tuple[tuple[float, float, str], ...] | None = None
    weak: tuple[str, ...] | None = None
    duration: float | None = None


def _utf8_text(path: Path) -> str:
    """The file's text; a DataFormatError naming the line and byte offset if not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            path,
            f"the file is not UTF-8: byte 0x{data[err.start]:02x} at byte offset {err.start} "
            "cannot be decoded (Latin-1 or another legacy encoding?); save it as UTF-8",
            row=line,
        ) from None


def _read_rows(path: os.PathLike | str, required: Sequence[str]):
    """Yields (row_number, {column: value}) after checking the header holds `required`."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "metadata file does not exist")
    reader = csv.reader(io.StringIO(_utf8_text(path), newline=""), delimiter="\t")
    header = next(reader, None)
    if header is None:
        raise DataFormatError(path, f"file is empty; expected header {list(required)}", row=1)
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        raise DataFormatError(
            path,
            f"wrong columns: expected {list(required)}, found {header} (missing {missing})",
            row=1,
        )
    positions = {name: header.index(name) for name in required}
    for row_number, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        values = {
            name: fields[i].strip() if i < len(fields) else ""
            for name, i in positions.items()
        }
        yield row_number, values


def _is_blank(value: str) -> bool:
    return value == "" or value.lower() == "nan"


def _time(path, row: int, column: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise DataFormatError(path, f"{column} {value!r} is not a number", row=row) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise DataFormatError(
            path, f"{column} {value!r} must be a finite, non-negative time in seconds", row=row
        )
    return seconds


def _check_class(path, row: int, label: str, classes: Sequence[str]) -> str:
    if label not in classes:
        raise DataFormatError(
            path, f"unknown class {label!r}; known classes: {list(classes)}", row=row
        )
    return label


def _check_filename(path, row: int, filename: str) -> str:
    if not filename:
        raise DataFormatError(path, "empty filename", row=row)
    return filename


def _strong_with_rows(path, classes):
    events: dict[str, list[tuple[float, float, str]]] = {}
    first_row: dict[str, int] = {}
    for row, values in _read_rows(path, STRONG_COLUMNS):
        filename = _check_filename(path, row, values["filename"])
        first_row.setdefault(filename, row)
        clip_events = events.setdefault(filename, [])
        onset, offset, label = values["onset"], values["offset"], values["event_label"]
        if _is_blank(onset) and _is_blank(offset) and _is_blank(label):
            continue  # a clip without events
        if _is_blank(onset) or _is_blank(offset) or _is_blank(label):
            raise DataFormatError(
                path,
                "onset, offset and event_label must all be set, or all be empty for a clip "
                f"without events; got onset={onset!r}, offset={offset!r}, label={label!r}",
                row=row,
            )
        start = _time(path, row, "onset", onset)
        end = _time(path, row, "offset", offset)
        if start >= end:
            raise DataFormatError(path, f"onset {start} must be before offset {end}", row=row)
        clip_events.append((start, end, _check_class(path, row, label, classes)))
    return events, first_row


def _first_listing(path, row: int, filename: str, first_row: dict[str, int]) -> None:
    """Records where ``filename`` is first listed; a second listing is a named error."""
    if filename in first_row:
        raise DataFormatError(path, f"{filename!r} already listed at row {first_row[filename]}", row=row)
    first_row[filename] = row


def _weak_with_rows(path, classes):
    labels: dict[str, list[str]] = {}
    first_row: dict[str, int] = {}
    for row, values in _read_rows(path, WEAK_COLUMNS):
        filename = _check_filename(path, row, values["filename"])
        _first_listing(path, row, filename, first_row)
        names = [n.strip() for n in values["event_labels"].split(",") if n.strip()]
        labels[filename] = [_check_class(path, row, n, classes) for n in dict.fromkeys(names)]
    return labels, first_row


def _durations_with_rows(path):
    durations: dict[str, float] = {}
    rows: dict[str, int] = {}
    for row, values in _read_rows(path, DURATION_COLUMNS):
        filename = _check_filename(path, row, values["filename"])
        _first_listing(path, row, filename, rows)
        seconds = _time(path, row, "duration", values["duration"])
        if seconds == 0:
            raise DataFormatError(path, "duration must be positive", row=row)
        durations[filename] = seconds
    return durations, rows


def read_strong_tsv(
    path: os.PathLike | str, classes: Sequence[str] = DESED_CLASSES
) -> dict[str, list[tuple[float, float, str]]]:
    """filename -> [(onset, offset, label), ...] in file order; [] for clips without events."""
    return _strong_with_rows(path, classes)[0]


def read_weak_tsv(
    path: os.PathLike | str, classes: Sequence[str] = DESED_CLASSES
) -> dict[str, list[str]]:
    """filename -> [label, ...] (duplicates within a row dropped, order kept)."""
    return _weak_with_rows(path, classes)[0]


def read_durations_tsv(path: os.PathLike | str) -> dict[str, float]:
    """filename -> duration in seconds (must be positive)."""
    return _durations_with_rows(path)[0]


def read_classes(root: os.PathLike | str) -> tuple[str, ...] | None:
    """The class names a set declares in ``CLASSES_FILE``; None when it declares none (DESED's)."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in _utf8_text(path).splitlines() if line.strip()]
    if not names:
        raise DataFormatError(path, "lists no class; one class name per line expected")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataFormatError(path, f"lists {repeated} more than once")
    bad = [n for n in names if "," in n or "\t" in n]
    if bad:
        raise DataFormatError(path, f"class names {bad} contain a comma or tab, which the tsv files cannot hold")
    return tuple(names)


def list_audio(folder: os.PathLike | str) -> list[str]:
    """Sorted names of the .wav/.flac files directly inside `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, "audio folder does not exist")
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_file() and entry.suffix.lower() in SUPPORTED_EXTENSIONS
    )


def _warn_missing(tsv: Path, audio_dir: Path, absent: list[str], listed: int, shown: int = 5) -> None:
    """One warning for the clips a training tsv lists whose audio is not there."""
    names = ", ".join(repr(name) for name in absent[:shown])
    more = f" and {len(absent) - shown} more" if len(absent) > shown else ""
    _logger.warning("%s: %d of its %d clips have no audio file in %s and are skipped: %s%s",
                    tsv, len(absent), listed, audio_dir, names, more)


def _scored_clips(root: Path, spec: SubsetSpec, on_disk: set[str], durations, rows) -> list[str]:
    """Every clip of a scored subset: the durations tsv's, each with its audio file, and no
    audio file without a duration; without a durations tsv, the audio folder's."""
    if durations is None:
        return sorted(on_disk)
    path = root / spec.durations_tsv
    unlisted = sorted(on_disk - set(durations))
    if unlisted:
        more = f" and {len(unlisted) - 1} more audio file(s)" if len(unlisted) > 1 else ""
        raise DataFormatError(path, f"no duration for clip {unlisted[0]!r}{more} of {str(root / spec.audio_dir)!r}; "
                                    "every clip of a scored subset needs one")
    for filename, row in rows.items():
        if filename not in on_disk:
            raise DataFormatError(path, f"lists clip {filename!r}, which has no audio file in "
                                        f"{str(root / spec.audio_dir)!r}", row=row)
    return sorted(durations)


def load_subset(
    root: os.PathLike | str, spec: SubsetSpec, classes: Sequence[str] = DESED_CLASSES
) -> list[ClipRecord]:
    """Joins a subset's metadata to its audio files, sorted by filename.

    A scored subset (``spec.scored``: validation, eval) is every clip of its durations tsv, or
    of its audio folder when it has none; clips its strong tsv does not list have no events.
    Otherwise, with a strong or weak tsv, the subset is exactly the clips that the tsv lists
    (extra audio files are ignored); without one, every audio file of the folder, unlabelled.
    Every clip a tsv lists must exist in the audio folder (with ``spec.missing_audio ==
    "skip"``, those that do not are left out, with one warning), and a durations tsv must
    cover every clip of the subset.
    """
    root = Path(root)
    audio_dir = root / spec.audio_dir
    on_disk = set(list_audio(audio_dir))
    strong, strong_rows, weak, weak_rows = {}, {}, {}, {}
    if spec.strong_tsv:
        strong, strong_rows = _strong_with_rows(root / spec.strong_tsv, classes)
    if spec.weak_tsv:
        weak, weak_rows = _weak_with_rows(root / spec.weak_tsv, classes)
    for tsv, rows, labels in ((spec.strong_tsv, strong_rows, strong), (spec.weak_tsv, weak_rows, weak)):
        absent = [filename for filename in rows if filename not in on_disk]
        if not absent:
            continue
        if spec.missing_audio == "skip":
            for filename in absent:
                del labels[filename]
            _warn_missing(root / tsv, audio_dir, absent, len(rows))
            continue
        filename = absent[0]
        raise DataFormatError(
            root / tsv,
            f"references audio file {str(audio_dir / filename)!r}, which does not exist",
            row=rows[filename],
        )
    durations, duration_rows = None, {}
    if spec.durations_tsv and (not spec.scored or (root / spec.durations_tsv).is_file()):
        durations, duration_rows = _durations_with_rows(root / spec.durations_tsv)
    if spec.scored:
        filenames = _scored_clips(root, spec, on_disk, durations, duration_rows)
        if spec.strong_tsv:
            strong = {name: strong.get(name, []) for name in filenames}
    elif spec.strong_tsv is not None or spec.weak_tsv is not None:
        filenames = sorted(set(strong) | set(weak))
    else:
        filenames = sorted(on_disk)
    records = []
    for filename in filenames:
        duration = None
        if durations is not None:
            if filename not in durations:
                raise DataFormatError(
                    root / spec.durations_tsv, f"no duration for clip {filename!r}"
                )
            duration = durations[filename]
        records.append(
            ClipRecord(
                path=str(audio_dir / filename),
                clip_id=Path(filename).stem,
                events=tuple(strong[filename]) if filename in strong else None,
                weak=tuple(weak[filename]) if filename in weak else None,
                duration=duration,
            )
        )
    return records
