"""Reuse a generated set when it is complete and was made with the same config.

Generation goes to a temporary sibling folder that is renamed into place only after its
manifest is written, so an interrupted run never leaves a set that looks complete.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from jaxaudio.data.synth import manifest
from jaxaudio.data.synth.desed import DEFAULT, SynthConfig, generate, identity
from jaxaudio.errors import ConfigError


def check_replaceable(root: Path) -> None:
    """Only an empty folder or one of our own sets may be swapped out (and deleted)."""
    if not root.exists():
        return
    if not (root.is_dir() and (not any(root.iterdir()) or (root / manifest.MANIFEST_NAME).is_file())):
        raise ConfigError(
            f"data_dir {str(root)!r}: exists and holds no {manifest.MANIFEST_NAME}, so it is not a "
            "synthetic set this generator may replace; remove it or choose another folder")


def ensure_dataset(data_dir, config: SynthConfig = DEFAULT, progress: bool = True,
                   workers: int | None = None, verify_hashes: bool = False, force: bool = False) -> Path:
    """Return data_dir holding a complete DESED-layout set for `config`, generating it if needed
    (``ensure_generated``)."""
    return ensure_generated(data_dir, identity(config),
                            lambda out: generate(out, config, progress=progress, workers=workers),
                            verify_hashes=verify_hashes, force=force)


def ensure_generated(data_dir, wanted: dict, generate_into: Callable[[Path], object], *,
                     verify_hashes: bool = False, force: bool = False) -> Path:
    """Return data_dir holding a complete set whose manifest identity is `wanted`, calling
    ``generate_into(folder)`` if needed (any of the built-in generators).

    A set is reused (unless `force`) when its manifest matches the config and generator
    version and every listed file has its recorded size (and sha256, with verify_hashes).
    Otherwise a fresh set is generated next to it and swapped in; the old folder is removed
    only after the swap, and only if it is empty or was made by this generator.
    """
    root = Path(data_dir)
    if not force and manifest.is_complete(root, wanted, verify_hashes):
        return root
    check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        generate_into(tmp)
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
        try:
            os.replace(tmp, root)
        except OSError:
            # Another process put a set in place meanwhile; keep it if it is the one we want.
            if manifest.is_complete(root, wanted):
                return root
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
