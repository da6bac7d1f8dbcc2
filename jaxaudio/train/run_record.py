"""``workdir/config.json``: what ran (experiment, preset, resolved config), so that predict,
export and evaluation rebuild the model from the workdir alone.

Why named errors here: a torn, hand-edited or foreign config.json used to surface as a raw
``JSONDecodeError``/``KeyError`` from deep inside export.
"""
from __future__ import annotations

import json

from jaxaudio.errors import CheckpointError
from jaxaudio.io import paths

RECORD = "config.json"


def save(workdir: str, name: str, preset: str, config) -> None:
    paths.makedirs(workdir)
    record = {"exp": name, "preset": preset, "config": json.loads(config.to_json())}
    paths.write_text_atomic(paths.join(workdir, RECORD), json.dumps(record, indent=2))


def load(workdir: str) -> tuple[str, str, object]:
    """``(experiment, preset, ConfigDict)`` of a training workdir."""
    import ml_collections

    path = paths.join(workdir, RECORD)
    if not paths.exists(path):
        raise CheckpointError(f"{path}: missing; {workdir} is not a training workdir (experiments/run.py writes "
                              "config.json when it starts a run)")
    try:
        record = json.loads(paths.read_text(path))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {err.start})") from None
    missing = [key for key in ("exp", "preset", "config") if not isinstance(record, dict) or key not in record]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}; expected {{'exp', 'preset', 'config'}} as "
                              "experiments/run.py writes it")
    if not isinstance(record["config"], dict):
        raise CheckpointError(f"{path}: 'config' is a {type(record['config']).__name__}, expected an object")
    return str(record["exp"]), str(record["preset"]), ml_collections.ConfigDict(record["config"])
