"""Small file helpers for a workdir that is a local folder or an object-store URL (``gs://``).

TPU pod runs share one GCS workdir, so everything a run writes besides checkpoints (orbax
handles those) goes through here. Local paths keep plain ``os`` calls, so local behaviour is
exactly what it was: atomic writes are a temporary file in the same folder and an
``os.replace``. URLs (``gs://``, ``s3://``, ``az://``, ``hf://``) go through ``etils.epath``;
object stores have no directories, no rename and no append, but one object upload is atomic
by itself (readers see the old object or the new one, never a torn one), so an atomic write is
a plain write of the whole object.

Backends: ``epath`` reads ``gs://`` with ``tf.io.gfile`` when TensorFlow is installed, else with
fsspec, which needs ``gcsfs`` (the ``tpu`` extra).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import posixpath
from typing import IO, Iterator

REMOTE_SCHEMES = ("gs", "s3", "az", "hf")


def is_remote(path: os.PathLike | str) -> bool:
    """True for an object-store URL such as ``gs://bucket/run``."""
    scheme, sep, _ = str(os.fspath(path)).partition("://")
    return bool(sep) and scheme in REMOTE_SCHEMES


def _epath(path):
    from etils import epath  # imported on first remote use only

    return epath.Path(path)


def join(base: os.PathLike | str, *parts: str) -> str:
    """``os.path.join`` for local paths, ``/``-joining for URLs (never backslashes)."""
    base = os.fspath(base)
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def makedirs(path: os.PathLike | str) -> None:
    """Create a local folder and its parents; a no-op on object stores (no folders there)."""
    if not is_remote(path):
        os.makedirs(os.fspath(path), exist_ok=True)


def exists(path: os.PathLike | str) -> bool:
    if is_remote(path):
        return _epath(path).exists()
    return os.path.exists(os.fspath(path))


def remove(path: os.PathLike | str) -> None:
    """Delete a file if it is there."""
    if is_remote(path):
        _epath(path).unlink(missing_ok=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.fspath(path))


def is_empty_or_missing(path: os.PathLike | str) -> bool:
    """True when nothing is at ``path`` or it is a folder with nothing in it."""
    if is_remote(path):
        p = _epath(path)
        return not p.exists() or (p.is_dir() and not any(p.iterdir()))
    path = os.fspath(path)
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def remove_tree(path: os.PathLike | str) -> None:
    """Delete a folder and everything in it, if it is there."""
    if is_remote(path):
        p = _epath(path)
        if p.exists():
            p.rmtree()
    else:
        shutil.rmtree(os.fspath(path), ignore_errors=True)


@contextlib.contextmanager
def open_read(path: os.PathLike | str, binary: bool = False) -> Iterator[IO]:
    mode = "rb" if binary else "r"
    if is_remote(path):
        with _epath(path).open(mode) as f:
            yield f
    else:   # text is UTF-8 everywhere, whatever the machine's locale
        with open(os.fspath(path), mode, encoding=None if binary else "utf-8") as f:
            yield f


def read_text(path: os.PathLike | str) -> str:
    with open_read(path) as f:
        return f.read()


@contextlib.contextmanager
def open_atomic(path: os.PathLike | str, binary: bool = False) -> Iterator[IO]:
    """A file to write whose content appears at ``path`` all at once, only if the block succeeds.

    Local: a temporary file beside ``path`` renamed over it (``os.replace``). Object store: the
    object is uploaded when the block ends (one upload is atomic), and an error in the block
    leaves the old object untouched.
    """
    mode = "wb" if binary else "w"
    if is_remote(path):
        import io

        buffer = io.BytesIO() if binary else io.StringIO()
        yield buffer
        data = buffer.getvalue()
        target = _epath(path)
        if binary:
            target.write_bytes(data)
        else:
            target.write_text(data)
        return
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, mode, encoding=None if binary else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_text_atomic(path: os.PathLike | str, text: str) -> None:
    with open_atomic(path) as f:
        f.write(text)


def write_bytes_atomic(path: os.PathLike | str, data: bytes) -> None:
    with open_atomic(path, binary=True) as f:
        f.write(data)
