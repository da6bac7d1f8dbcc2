"""The few exception types jaxaudio raises.

Every message names the file (and row) or the config key involved and what was expected,
so that a user can fix the input without reading our code.
"""
from __future__ import annotations

import os
from typing import Optional


class JaxAudioError(Exception):
    """Base class: catch this to handle any error that jaxaudio raises on purpose."""


class AudioFileError(JaxAudioError):
    """An audio file is missing, unreadable, empty, or cannot be brought to the wanted rate."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataFormatError(JaxAudioError):
    """A data file or folder is not what it should be: a metadata file (tsv/csv/txt) with the wrong
    columns or an invalid row, an unreadable image, a class folder with no images."""

    def __init__(self, path: os.PathLike | str, problem: str, row: Optional[int] = None):
        self.path = str(path)
        self.row = row
        self.problem = problem
        where = f"{self.path}, row {row}" if row is not None else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(JaxAudioError):
    """A config key is unknown or holds a value that cannot be used."""


class ShapeError(JaxAudioError, ValueError):
    """An array given to a function has the wrong shape (the message gives expected and got).

    Also a ValueError, which numpy users catch for the same mistake."""


class NonFiniteLossError(JaxAudioError):
    """Training produced a NaN/Inf loss; carries the step so the run can be inspected."""

    def __init__(self, step: int, value: float):
        self.step = step
        self.value = value
        super().__init__(f"loss became non-finite ({value}) at step {step}")


class CheckpointError(JaxAudioError):
    """A workdir holds no checkpoint, or one that does not fit the model."""


class ExportError(JaxAudioError):
    """A model cannot be exported in the requested format."""
