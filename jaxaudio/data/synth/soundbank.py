"""A user's sound banks: finding, reading, checking and splitting foreground and background files.

Foreground: ``FG_DIR/<class>/...`` (class = subfolder name, classes sorted by name); background:
any audio file under ``BG_DIR``. Every file is read once up front (resampled to the target rate,
mono; foregrounds trimmed of leading and trailing silence) so that an unusable one is reported
and skipped before any clip is planned, and so that a clip's plan knows each source's length.
"""
from __future__ import annotations

import functools
import hashlib
import sys
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from jaxaudio.audio.io import read_audio
from jaxaudio.data.synth import dsp
from jaxaudio.errors import AudioFileError, ConfigError
from jaxaudio.utils.progress import progress as progress_reporter

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SILENCE_DBFS = -80.0  # a file whose whole-file RMS is below this is unusable
_SPLIT_STREAM = 7919  # folded into the split's seed, apart from the clips' (seed, subset, index)


@dataclass(frozen=True)
class BankFile:
    """One usable file: its path relative to its bank's root, size in bytes, usable length in samples."""

    rel: str
    size: int
    samples: int


@dataclass(frozen=True)
class Banks:
    """Usable files per class and backgrounds; `skipped` lists (bank/rel, reason) of the others."""

    classes: tuple[str, ...]
    foreground: dict[str, tuple[BankFile, ...]]
    background: tuple[BankFile, ...]
    skipped: tuple[tuple[str, str], ...] = ()


def find_audio(folder: Path) -> list[Path]:
    """Audio files under `folder`, recursively, sorted by relative path (hidden ones left out)."""
    found = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def find_classes(fg_dir: Path) -> dict[str, list[Path]]:
    """class name -> its audio files; a missing folder or one without class folders is a ConfigError."""
    if not fg_dir.is_dir():
        raise ConfigError(f"foreground folder {str(fg_dir)!r} does not exist")
    names = sorted(d.name for d in fg_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise ConfigError(f"foreground folder {str(fg_dir)!r} has no class subfolders (FG_DIR/<class>/*.wav)")
    bad = [n for n in names if "," in n or "\t" in n]
    if bad:
        raise ConfigError(f"foreground class folders {bad} contain a comma or tab, which the tsv files cannot hold")
    loose = [p.name for p in fg_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if loose:
        print(f"warning: {len(loose)} audio file(s) directly in {fg_dir} (e.g. {loose[0]!r}) are in no class "
              "folder and are not used", file=sys.stderr)
    return {name: find_audio(fg_dir / name) for name in names}


def fingerprint(fg_dir: Path, bg_dir: Path) -> dict:
    """sha256 over the banks' relative paths and sizes (every audio file found, usable or not)."""
    h = hashlib.sha256()
    n = 0
    for bank, root in (("foreground", Path(fg_dir)), ("background", Path(bg_dir))):
        for path in find_audio(root) if root.is_dir() else []:
            h.update(f"{bank}/{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
            n += 1
    return {"sha256": h.hexdigest(), "files": n}


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, size: int, mtime_ns: int, sample_rate: int) -> np.ndarray:
    x = read_audio(path, sample_rate, mono=True).astype(np.float64)
    x.setflags(write=False)  # shared by every clip that uses the file
    return x


def read_mono(path, sample_rate: int) -> np.ndarray:
    """The file as float64 mono at `sample_rate`, read-only; cached while its size and mtime are unchanged."""
    try:
        st = Path(path).stat()
    except OSError as err:
        raise AudioFileError(path, f"cannot be read ({err.strerror or err})") from None
    return _read_cached(str(path), st.st_size, st.st_mtime_ns, int(sample_rate))


def read_foreground(path, sample_rate: int, trim_db: float) -> np.ndarray:
    """A foreground source as the mixer uses it: mono, resampled, leading/trailing silence trimmed."""
    return dsp.trim(read_mono(path, sample_rate), sample_rate, threshold_db=trim_db)


def _usable(path: Path, sample_rate: int, trim_db: float | None) -> tuple[int, str | None]:
    """(usable samples, None) or (0, why not)."""
    try:
        x = read_mono(path, sample_rate)
    except AudioFileError as err:
        return 0, err.problem
    level = 20 * np.log10(dsp.rms(x))
    if level < SILENCE_DBFS:
        return 0, f"silent (RMS {level:.0f} dBFS, below {SILENCE_DBFS:.0f} dBFS)"
    return (len(x) if trim_db is None else len(read_foreground(path, sample_rate, trim_db))), None


def load_banks(fg_dir, bg_dir, sample_rate: int, trim_db: float, progress: bool = True) -> Banks:
    """Find and check every file of both banks; unusable ones are reported on stderr and skipped.

    A class folder or a background folder left without a usable file is a ConfigError.
    """
    fg_dir, bg_dir = Path(fg_dir), Path(bg_dir)
    per_class = find_classes(fg_dir)
    if not bg_dir.is_dir():
        raise ConfigError(f"background folder {str(bg_dir)!r} does not exist")
    jobs = [("foreground", fg_dir, c, p) for c, paths in per_class.items() for p in paths]
    jobs += [("background", bg_dir, None, p) for p in find_audio(bg_dir)]
    usable: dict[str | None, list[BankFile]] = {c: [] for c in [*per_class, None]}
    skipped = []
    bar = progress_reporter(len(jobs), desc="reading sound banks", unit="file", force=None if progress else False)
    try:
        for bank, root, label, path in jobs:
            samples, problem = _usable(path, sample_rate, trim_db if label is not None else None)
            rel = path.relative_to(root).as_posix()
            if problem is None:
                usable[label].append(BankFile(rel, path.stat().st_size, samples))
            else:
                print(f"skipped {path}: {problem}", file=sys.stderr)
                skipped.append((f"{bank}/{rel}", problem.replace(str(path), rel)))  # no absolute paths kept
            bar.update()
    finally:
        bar.close()
    for label in per_class:
        if not usable[label]:
            why = f"its {len(per_class[label])} audio file(s) are all unusable (see above)" if per_class[label] \
                else f"it holds no {'/'.join(AUDIO_EXTENSIONS)} file"
            raise ConfigError(f"foreground class {label!r} ({fg_dir / label}) has no usable file: {why}")
    if not usable[None]:
        raise ConfigError(f"background folder {str(bg_dir)!r} has no usable {'/'.join(AUDIO_EXTENSIONS)} file")
    return Banks(tuple(per_class), {c: tuple(usable[c]) for c in per_class}, tuple(usable[None]), tuple(skipped))


def _split(files: tuple[BankFile, ...], fraction: float, seed: int, key: str) -> tuple[tuple, tuple]:
    """(train, held out): a seeded share of the files, at least one and never all where there are two or more."""
    if len(files) < 2:
        return files, files
    rng = np.random.default_rng([seed, _SPLIT_STREAM, zlib.crc32(key.encode())])
    k = min(len(files) - 1, max(1, int(round(fraction * len(files)))))
    held = set(rng.permutation(len(files))[:k].tolist())
    return (tuple(f for i, f in enumerate(files) if i not in held),
            tuple(f for i, f in enumerate(files) if i in held))


def split_banks(banks: Banks, fraction: float, seed: int) -> tuple[Banks, Banks]:
    """(train, held out) by file, per class and for the backgrounds, so no recording is in both.

    A class (or a background bank) of one file is used on both sides, with a warning naming it.
    """
    train, held = {}, {}
    for label, files in banks.foreground.items():
        train[label], held[label] = _split(files, fraction, seed, "foreground/" + label)
        if len(files) == 1:
            print(f"warning: class {label!r} has only one usable file ({files[0].rel}); it is used in the train "
                  "subsets and in validation/eval alike", file=sys.stderr)
    bg_train, bg_held = _split(banks.background, fraction, seed, "background")
    if len(banks.background) == 1:
        print(f"warning: the background bank has only one usable file ({banks.background[0].rel}); it is used in "
              "the train subsets and in validation/eval alike", file=sys.stderr)
    return replace(banks, foreground=train, background=bg_train), replace(banks, foreground=held, background=bg_held)
