"""``workdir/config.json``: what ran (experiment, preset, resolved config), so that predict,
export and evaluation rebuild the model from the workdir alone; and the mark of a workdir
whose run has not yet got as far as training.

Why the mark: a run that failed before training (a wrong ``--data_dir``, data that does not
parse) used to leave a config.json behind, a folder that predict and export took for a
trained run. ``begin`` marks a workdir it creates; the trainer clears the mark when the first
stage has its data and model (``mark_started``); a run that fails before that removes the
folder (``abandon``), and one killed before that is cleaned by the next ``begin``.

Why named errors here: a torn, hand-edited or foreign config.json used to surface as a raw
``JSONDecodeError``/``KeyError`` from deep inside export.
"""
from __future__ import annotations

import json

from jaxaudio.errors import CheckpointError
from jaxaudio.io import paths

RECORD = "config.json"
NOT_STARTED = "not_started.json"


def _marked(workdir: str) -> bool:
    return paths.exists(paths.join(workdir, NOT_STARTED))


def begin(workdir: str, name: str, preset: str, config) -> None:
    """Save config.json for a run; a workdir that is new (missing or empty), or that an earlier
    run left marked, is (re)made and marked as not started."""
    if _marked(workdir):
        paths.remove_tree(workdir)  # made by an earlier begin, which never reached training
    if paths.is_empty_or_missing(workdir):
        paths.makedirs(workdir)
        paths.write_text_atomic(paths.join(workdir, NOT_STARTED),
                                json.dumps({"what": "a run that has not reached training yet; the next run "
                                                    "started here deletes this folder and starts afresh"}))
    save(workdir, name, preset, config)


def mark_started(workdir: str) -> None:
    """The run has its data and model: from now on the workdir holds work worth keeping."""
    paths.remove(paths.join(workdir, NOT_STARTED))


def abandon(workdir: str) -> bool:
    """Remove the workdir if it is still marked as not started; True if it was removed."""
    if not _marked(workdir):
        return False
    paths.remove_tree(workdir)
    return True


def save(workdir: str, name: str, preset: str, config) -> None:
    paths.makedirs(workdir)
    record = {"exp": name, "preset": preset, "config": json.loads(config.to_json())}
    paths.write_text_atomic(paths.join(workdir, RECORD), json.dumps(record, indent=2))


def load(workdir: str) -> tuple[str, str, object]:
    """``(experiment, preset, ConfigDict)`` of a training workdir."""
    import ml_collections

    path = paths.join(workdir, RECORD)
    if _marked(workdir):
        raise CheckpointError(f"{workdir}: its run stopped before training started ({NOT_STARTED}), so there is "
                              "no trained model; run experiments/run.py again to train")
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
