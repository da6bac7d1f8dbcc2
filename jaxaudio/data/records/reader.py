"""Reads back, by random access, the items that `write_records` stored: a Source over one split.

Every process opens the split's shards lazily and reads only the indices it is asked for (with
`mixed_batches`/`eval_batches`, those of its shard_index), so hosts read disjoint records
without per-host files. The open reader is not pickled: a grain worker reopens the shards.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxaudio.data.records.codec import FORMAT_VERSION, INFO_FILE, TEXT, decode, features_from_json
from jaxaudio.data.source import BatchSpec, padding_from_spec
from jaxaudio.errors import ConfigError, DataFormatError


def read_info(folder: os.PathLike | str) -> dict[str, Any]:
    """The folder's records.json (format version, features, splits, metadata), checked."""
    folder = Path(folder)
    info_file = folder / INFO_FILE
    if not info_file.is_file():
        raise DataFormatError(folder, f"not a prepared set (no {INFO_FILE})")
    try:
        info = json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(info_file, f"invalid JSON ({err})") from None
    if info.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(
            info_file,
            f"records format_version {info.get('format_version')!r} is not {FORMAT_VERSION}; "
            "write the set again with this version of jaxaudio",
        )
    for key in ("features", "splits", "metadata"):
        if key not in info:
            raise DataFormatError(info_file, f"has no {key!r} entry")
    return info


class PreparedSource:
    """Item i of split `split` of a folder that `write_records` wrote, exactly as written."""

    def __init__(self, folder: os.PathLike | str, split: str):
        self.folder = Path(folder)
        self.split = split
        info = read_info(self.folder)
        if split not in info["splits"]:
            raise ConfigError(
                f"split {split!r} is not in the prepared set {str(self.folder)!r}; "
                f"it holds {sorted(info['splits'])}"
            )
        try:
            self.features = features_from_json(info["features"])
        except (ValueError, KeyError, TypeError) as err:
            raise DataFormatError(self.folder / INFO_FILE, f"bad features ({err})") from None
        self.metadata = info["metadata"]
        self._length = int(info["splits"][split]["num_records"])
        self._paths = [os.fspath(self.folder / name) for name in info["splits"][split]["shards"]]
        self._reader = None

    def _open(self):
        if self._reader is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            missing = [p for p in self._paths if not os.path.isfile(p)]
            if missing:
                raise DataFormatError(self.folder, f"split {self.split!r}: shard {missing[0]} is missing")
            reader = ArrayRecordDataSource(self._paths)
            if len(reader) != self._length:
                raise DataFormatError(
                    self.folder,
                    f"split {self.split!r} has {len(reader)} records, {INFO_FILE} says {self._length}",
                )
            self._reader = reader
        return self._reader

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self._length:
            raise IndexError(f"record {index} out of range for split {self.split!r} ({self._length})")
        reader = self._open()
        try:
            return decode(reader[index], self.features)
        except (OSError, RuntimeError, ValueError) as err:
            raise DataFormatError(
                self.folder, f"split {self.split!r}, record {index}: cannot read ({err})"
            ) from err

    def batch_spec(self) -> BatchSpec:
        """The stored features; only a split of fixed-shape numeric features can be batched."""
        loose = [k for k, (shape, dtype) in self.features.items() if dtype == TEXT or None in shape]
        if loose:
            raise ConfigError(
                f"split {self.split!r} of {str(self.folder)!r} has text or varying-shape "
                f"features {loose}; wrap it in a Source that turns them into fixed-shape arrays"
            )
        return {k: (shape, np.dtype(dtype)) for k, (shape, dtype) in self.features.items()}

    def padding_item(self) -> dict[str, Any]:
        return padding_from_spec(self.batch_spec())

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"] = None
        return state
