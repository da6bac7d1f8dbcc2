"""Prepare a DESED-layout folder (or the built-in synthetic set) once into ArrayRecord shards.

    python -m jaxaudio.data.prepare --data_dir DIR --out OUT [--sample_rate 16000] [--clip_seconds 10]
    python -m jaxaudio.data.prepare --synth [default|small] --out OUT [--synth_dir data/desed_synth]

Idempotent: a set already prepared from the same folder contents with the same settings is
reused; one prepared from different contents is refused unless --force. The shards are
written into a temporary folder that is renamed into place, so an interrupted run leaves
nothing that looks complete. Prints the prepared folder, which
`PreparedClipSource(folder, subset, encoder)` reads.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from jaxaudio.data.records.writer import WRITER_OPTIONS, write_records
from jaxaudio.data.sed.desed import DESED_CLASSES, read_classes
from jaxaudio.data.sed.prepared import prepared_path, read_metadata
from jaxaudio.data.sed.raw import DesedSet
from jaxaudio.errors import ConfigError, JaxAudioError

_SAME_WHEN_EQUAL = ("source_fingerprint", "audio_dtype", "classes", "subsets", "sample_rate",
                    "clip_samples", "writer_options")


def prepare(
    data_dir: os.PathLike | str,
    out: os.PathLike | str,
    *,
    sample_rate: int = 16000,
    clip_seconds: float = 10.0,
    audio_dtype: str = "auto",
    subsets: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Writes (or reuses) the prepared set under `out` and returns its folder.

    classes: default, the set's own (``metadata/classes.txt``), else DESED's ten.
    """
    classes = classes or read_classes(data_dir) or DESED_CLASSES
    clip_samples = int(round(clip_seconds * sample_rate))
    desed = DesedSet(data_dir, sample_rate, clip_samples, audio_dtype=audio_dtype,
                     subsets=subsets, classes=classes)
    path = prepared_path(out, sample_rate, clip_samples)
    wanted = desed.describe()
    if path.exists() and not force:
        have = read_metadata(path)
        changed = [key for key in _SAME_WHEN_EQUAL if have.get(key) != wanted[key]]
        if not changed:
            return path
        raise ConfigError(
            f"--out: {str(path)!r} holds a set prepared from other data or settings "
            f"(differs in {changed}); pass --force to replace it or choose another --out"
        )
    if path.exists():
        shutil.rmtree(path)
    return write_records(desed.splits(), path, features=desed.features, metadata=wanted,
                         options=WRITER_OPTIONS, progress=progress)


def prepare_synth(out, preset: str = "default", synth_dir="data/desed_synth", *,
                  sample_rate: int = 16000, force: bool = False, progress: bool = True) -> Path:
    """The built-in synthetic set (generated into synth_dir if missing), then prepared."""
    from jaxaudio.data.synth.cache import ensure_dataset
    from jaxaudio.data.synth.desed import PRESETS

    if preset not in PRESETS:
        raise ConfigError(f"--synth: unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    config = dataclasses.replace(PRESETS[preset], sample_rate=sample_rate)
    root = ensure_dataset(synth_dir, config, progress=progress)
    return prepare(root, out, sample_rate=sample_rate, clip_seconds=config.clip_seconds,
                   force=force, progress=progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxaudio.data.prepare",
                                     description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="DESED-layout folder to prepare")
    source.add_argument("--synth", nargs="?", const="default", metavar="PRESET",
                        help="prepare the built-in synthetic set (preset: default or small)")
    parser.add_argument("--synth_dir", default="data/desed_synth",
                        help="where the built-in set is (generated there if missing)")
    parser.add_argument("--out", required=True, help="output folder for the ArrayRecord set")
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--clip_seconds", type=float, default=10.0)
    parser.add_argument("--audio_dtype", choices=["auto", "int16", "float32"], default="auto",
                        help="auto: int16 when lossless (mono PCM16 at the target rate)")
    parser.add_argument("--subsets", nargs="*", default=None,
                        help="subsets to prepare (default: every one present)")
    parser.add_argument("--force", action="store_true", help="replace an existing prepared set")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.synth is not None:
            path = prepare_synth(args.out, args.synth, args.synth_dir, sample_rate=args.sample_rate,
                                 force=args.force, progress=not args.quiet)
        else:
            path = prepare(args.data_dir, args.out, sample_rate=args.sample_rate,
                           clip_seconds=args.clip_seconds, audio_dtype=args.audio_dtype,
                           subsets=args.subsets, force=args.force, progress=not args.quiet)
    except JaxAudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
