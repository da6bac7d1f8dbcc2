"""Finding a user's recordings, naming them uniquely, and reading them at the model's rate."""
from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxaudio.audio.io import SUPPORTED_EXTENSIONS, audio_sample_rate, read_audio, resample
from jaxaudio.errors import AudioFileError

# What a directory is searched for: what the training reader (`jaxaudio.audio.io.read_audio`) reads.
AUDIO_EXTENSIONS = SUPPORTED_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One recording to predict on.

    clip_id: the name its outputs get (`scores/<clip_id>.tsv`): the file stem, or, where two
      inputs share a stem, their path relative to their common folder joined with `__`.
    filename: the `filename` column of events.tsv, `<clip_id><extension>` as in DESED metadata.
    """

    path: Path
    clip_id: str
    filename: str


def find_inputs(inputs: Sequence[os.PathLike | str]) -> tuple[list[Path], list[dict]]:
    """Audio files named by `inputs` (files, or folders searched recursively and sorted).

    Order: inputs as given, each folder's files sorted by path; a file reached twice is kept
    once. Returns (files, missing) where missing holds `{"path", "error"}` for inputs that do
    not exist. A file named explicitly is taken whatever its extension (soundfile decides).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, missing, seen = [], [], set()

    def add(path: Path):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [
                Path(root) / name
                for root, _, names in os.walk(path)
                for name in names
                if Path(name).suffix.lower() in AUDIO_EXTENSIONS
            ]
            for f in sorted(found):
                add(f)
        elif path.exists():
            add(path)
        else:
            missing.append({"path": str(path), "error": "input does not exist"})
    return files, missing


def gather_inputs(inputs, logger) -> tuple[list[Path], list[dict]]:
    """``find_inputs`` as the predict modes report it: each missing input logged as skipped, a
    warning when no audio file was found at all (the folder or the extension is probably wrong)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found, failed = find_inputs(inputs)
    for entry in failed:
        logger.error("skipping %s: %s", entry["path"], entry["error"])
    if not found:
        logger.warning("predict: no audio files (%s) found in %s", " ".join(AUDIO_EXTENSIONS),
                       [str(i) for i in inputs])
    return found, failed


def assign_clip_ids(paths: Sequence[Path]) -> list[InputFile]:
    """Unique output names: the stem, or for shared stems the relative path with `__`."""
    by_stem = defaultdict(list)
    for i, p in enumerate(paths):
        by_stem[p.stem].append(i)
    ids = [p.stem for p in paths]
    for stem, group in by_stem.items():
        if len(group) == 1:
            continue
        absolute = [paths[i].resolve() for i in group]
        common = Path(os.path.commonpath([str(a.parent) for a in absolute]))
        for i, a in zip(group, absolute):
            rel = a.relative_to(common).with_suffix("")
            ids[i] = "__".join(rel.parts)
        # Same folder, same stem, different extensions (x.wav, x.flac): name the extension too.
        names = [ids[i] for i in group]
        for i in group:
            if names.count(ids[i]) > 1:
                ids[i] = f"{ids[i]}_{paths[i].suffix.lstrip('.').lower()}"
    # A made-up name may still equal another file's stem (a real file called a__x.wav).
    taken, out = set(), []
    for p, clip_id in zip(paths, ids):
        unique, n = clip_id, 1
        while unique in taken:
            n += 1
            unique = f"{clip_id}__{n}"
        taken.add(unique)
        out.append(InputFile(path=p, clip_id=unique, filename=unique + p.suffix))
    return out


def read_for_model(path: Path, sample_rate: int) -> tuple[np.ndarray, float]:
    """Mono float32 audio at `sample_rate` and the file's duration in seconds.

    Channels are averaged, then the signal is resampled (polyphase), exactly as
    `read_audio(path, sample_rate, mono=True)` does; the duration comes from the native-rate
    sample count, so it is exact whatever the resampler's rounding. Raises AudioFileError.
    """
    audio = read_audio(path, None, mono=True)
    native_rate = audio_sample_rate(path)
    duration = audio.shape[0] / native_rate
    if native_rate != sample_rate:
        try:
            audio = resample(audio, native_rate, sample_rate)
        except ValueError as err:
            raise AudioFileError(path, str(err)) from err
    return audio, duration
