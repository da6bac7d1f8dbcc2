"""Item <-> bytes for one record, driven by a features spec that is stored next to the shards.

A features spec maps each key to (shape, dtype), the form of `Source.batch_spec()`, where a
dimension may be None (its length varies per item) and the dtype may be "str" (text: shape ()
for one string, (None,) for a list of strings). A record is a small JSON header (the shape of
each array, the byte lengths of the strings) followed by the raw little-endian bytes of every
value in spec order: exact for any numeric dtype, with no per-item parsing beyond the header.
"""
from __future__ import annotations

import json
import math
import struct
from typing import Any, Mapping

import numpy as np

TEXT = "str"
Features = dict[str, tuple[tuple[int | None, ...], str]]
_HEADER_LENGTH = struct.Struct("<I")


def normalize_features(features: Mapping[str, tuple[Any, Any]]) -> Features:
    """Checks a features spec and brings it to (tuple shape, dtype name); raises ValueError."""
    normal: Features = {}
    for key, (shape, dtype) in features.items():
        shape = tuple(None if d is None else int(d) for d in shape)
        if any(d is not None and d < 0 for d in shape):
            raise ValueError(f"feature {key!r}: shape {shape} has a negative dimension")
        if dtype in (str, TEXT):
            if shape not in ((), (None,)):
                raise ValueError(f"feature {key!r}: text must have shape () or (None,), got {shape}")
            normal[key] = (shape, TEXT)
            continue
        dtype = np.dtype(dtype)
        if dtype.kind not in "biufc":
            raise ValueError(f"feature {key!r}: dtype {dtype} is not numeric, bool or 'str'")
        normal[key] = (shape, dtype.name)
    return normal


def features_to_json(features: Features) -> dict:
    return {key: {"shape": list(shape), "dtype": dtype} for key, (shape, dtype) in features.items()}


def features_from_json(data: Mapping[str, Mapping[str, Any]]) -> Features:
    return normalize_features({key: (spec["shape"], spec["dtype"]) for key, spec in data.items()})


def _array(key: str, value: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """`value` as an array of `dtype` with no loss, or a ValueError naming what is wrong."""
    array = np.asarray(value)
    if array.dtype != dtype:
        python_scalar = isinstance(value, (bool, int, float, complex))
        # A Python scalar may narrow within its kind (0.1 into float32); an array only widens.
        if np.can_cast(array.dtype, dtype, "same_kind" if python_scalar else "safe"):
            try:
                array = np.asarray(value, dtype) if python_scalar else array.astype(dtype)
            except OverflowError:
                raise ValueError(f"{key!r}: {value!r} does not fit {dtype}") from None
        else:
            raise ValueError(f"{key!r}: dtype {array.dtype}, features say {dtype}")
    if array.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape, array.shape)):
        raise ValueError(f"{key!r}: shape {array.shape}, features say {shape}")
    return array


def encode(item: Mapping[str, Any], features: Features) -> bytes:
    """One item as a record; raises ValueError when it does not match `features`."""
    if set(item) != set(features):
        raise ValueError(f"keys {sorted(item)}, features say {sorted(features)}")
    header, payload = [], []
    for key, (shape, dtype) in features.items():
        value = item[key]
        if dtype == TEXT:
            if shape == ():
                if not isinstance(value, str):
                    raise ValueError(f"{key!r}: {type(value).__name__}, features say str")
                strings = [value]
            else:
                if isinstance(value, str) or not all(isinstance(s, str) for s in value):
                    raise ValueError(f"{key!r}: features say a list of str, got {value!r}")
                strings = list(value)
            encoded = [s.encode("utf-8") for s in strings]
            header.append([len(b) for b in encoded] if shape else len(encoded[0]))
            payload.extend(encoded)
        else:
            array = _array(key, value, shape, np.dtype(dtype))
            header.append(list(array.shape))
            payload.append(np.ascontiguousarray(array, np.dtype(dtype).newbyteorder("<")).tobytes())
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER_LENGTH.pack(len(head)) + head + b"".join(payload)


def decode(record: bytes, features: Features) -> dict[str, Any]:
    """The item `encode` was given: numpy arrays (writable copies), numpy scalars for shape (),
    str and list[str] for text. Raises ValueError on a record that does not fit `features`."""
    (head_length,) = _HEADER_LENGTH.unpack_from(record, 0)
    offset = _HEADER_LENGTH.size + head_length
    header = json.loads(record[_HEADER_LENGTH.size:offset])
    if len(header) != len(features):
        raise ValueError(f"record has {len(header)} values, features say {len(features)}")
    item: dict[str, Any] = {}
    for (key, (shape, dtype)), entry in zip(features.items(), header):
        if dtype == TEXT:
            lengths = entry if shape else [entry]
            strings = []
            for length in lengths:
                strings.append(record[offset:offset + length].decode("utf-8"))
                offset += length
            item[key] = strings if shape else strings[0]
            continue
        stored = np.dtype(dtype).newbyteorder("<")
        count = math.prod(entry)
        if offset + count * stored.itemsize > len(record):
            raise ValueError(f"{key!r}: record ends before its {tuple(entry)} values")
        array = np.frombuffer(record, stored, count, offset).reshape(entry).astype(dtype)
        offset += count * stored.itemsize
        item[key] = array[()] if array.ndim == 0 else array
    if offset != len(record):
        raise ValueError(f"record has {len(record) - offset} bytes after its last value")
    return item


# The folder: one records.json (format version, features, splits and their shards, the
# writer's metadata) next to the ArrayRecord shards of every split.
INFO_FILE = "records.json"
FORMAT_VERSION = 1
