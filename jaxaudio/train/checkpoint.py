"""Checkpoints: an orbax ``CheckpointManager`` that saves a ``TrainState`` and the data position.

Why a wrapper: a run must resume *exactly* (same parameters, optimizer moments, RNG, EMA
teacher and the same next batch), on whatever mesh it is restarted on, and a run killed in
the middle of a write must fall back to the previous checkpoint rather than die on a
half-written one.

On-disk layout of one step ``<directory>/<step>/``:
  state/   the train state as a nested dict of arrays, named by its pytree path
           (``params/conv/kernel/value``...). Typed PRNG keys are stored as their raw
           ``key_data`` (uint32) and re-wrapped on restore.
  extra/   JSON: the data iterator state, the metrics given to ``save`` and the PRNG
           implementation of every typed key.

Atomicity: orbax writes a step into ``<step>.orbax-checkpoint-tmp-<n>/`` and renames it to
``<step>/`` only once every item is complete (on object stores it writes a
``commit_success.txt`` instead). Step listing ignores those tmp folders, so a write cut
short by SIGKILL is invisible; the next ``Checkpointer`` on the directory deletes them
(``cleanup_tmp_directories``). tests/train/test_resume.py kills a writer mid-save and
checks this.

Retention: the latest ``keep`` steps are kept, plus (when ``best_metric`` is set) the one
step whose saved metrics are best. Steps saved without that metric take no part in the
best-of ranking and are only kept while among the latest ``keep``. This is orbax's
``AnyPreservationPolicy(LatestN(keep), BestN(n=1, keep_checkpoints_without_metrics=False))``.
"""
from __future__ import annotations

import base64
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec
from orbax.checkpoint import checkpoint_managers as policies

from jaxaudio.errors import CheckpointError
from jaxaudio.train.sharding import path_parts
from jaxaudio.train.state import FIELDS, TrainState

_STATE = "state"
_EXTRA = "extra"


def _path_names(path) -> tuple[str, ...]:
    """Turn a jax key path into plain string names usable as nested dict keys."""
    return tuple(path_parts(path))


def _is_typed_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _nest(flat: dict[tuple[str, ...], Any]) -> dict:
    nested: dict = {}
    for names, leaf in flat.items():
        node = nested
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = leaf
    return nested


def _lookup(nested: dict, names: tuple[str, ...]):
    node = nested
    for name in names:
        node = node[name]
    return node


def _flatten_metadata(tree, prefix=()) -> dict[tuple[str, ...], Any]:
    """Flatten the saved tree's metadata (nested dicts) into {names: array metadata}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten_metadata(value, prefix + (str(key),)))
        else:
            flat[prefix + (str(key),)] = value
    return flat


def _key_data_abstract(abstract):
    """ShapeDtypeStruct of ``key_data`` for an abstract typed key, keeping its placement."""
    shape = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(abstract.shape, abstract.dtype))
    sharding = abstract.sharding
    if isinstance(sharding, NamedSharding):
        sharding = NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec))
    return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)


def _encode_data_state(data_state):
    """grain iterators give a dict or JSON bytes; both are stored in the JSON item."""
    if isinstance(data_state, bytes):
        return {"kind": "bytes", "value": base64.b64encode(data_state).decode("ascii")}
    return {"kind": "json", "value": data_state}


def _decode_data_state(stored):
    if stored is None:
        return None
    if stored.get("kind") == "bytes":
        return base64.b64decode(stored["value"])
    return stored.get("value")


def _with_other_fields(saved: dict, wanted: dict, only: Optional[tuple[str, ...]]) -> dict:
    """``wanted`` plus, when restoring ``only`` some fields, the checkpoint's other arrays as
    saved (on one device): orbax's standard restore reads whole trees; they are dropped after."""
    if only is None:
        return wanted
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    full = dict(wanted)
    for key, meta in saved.items():
        if key[0] not in only:
            full[key] = jax.ShapeDtypeStruct(tuple(meta.shape), meta.dtype, sharding=device)
    return full


# The fields a later stage or an exporter needs: no optimizer state, no RNG.
WEIGHTS = ("step", "params", "model_state", "teacher", "masks")


def abstract_like(state: TrainState) -> TrainState:
    """A TrainState of ShapeDtypeStructs (with shardings) matching a concrete one."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state
    )


class Checkpointer:
    """Save/restore ``TrainState`` + data iterator state; keep latest ``keep`` plus the best.

    ``async_save``: ``save`` returns once arrays are copied off the device; files are written
    in a background thread (call ``wait`` before relying on them). Saving a step that is
    already on disk is skipped (returns False) so a final or preemption save can be
    requested unconditionally.
    """

    def __init__(
        self,
        directory: os.PathLike | str,
        *,
        keep: int = 3,
        best_metric: Optional[str] = None,
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if keep < 1:
            raise CheckpointError(f"{directory}: keep must be >= 1, got {keep}")
        if best_mode not in ("min", "max"):
            raise CheckpointError(f"{directory}: best_mode must be 'min' or 'max', got {best_mode!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.best_metric = best_metric
        preserve = [policies.LatestN(n=keep)]
        best_fn = None
        if best_metric is not None:
            best_fn = lambda metrics: float(metrics[best_metric])  # noqa: E731
            preserve.append(
                policies.BestN(
                    get_metric_fn=best_fn,
                    reverse=(best_mode == "min"),
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={_STATE: ocp.StandardCheckpointHandler(), _EXTRA: ocp.JsonCheckpointHandler()},
            options=options,
        )

    # ------------------------------------------------------------------ save
    def save(
        self,
        step: int,
        state: TrainState,
        *,
        data_state: Any = None,
        metrics: Optional[dict] = None,
        force: bool = False,
    ) -> bool:
        """Save ``state`` as ``step``; returns whether a save was started."""
        step = int(step)
        if step in self.all_steps():
            return False
        flat, key_impls = {}, {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            names = _path_names(path)
            if _is_typed_key(leaf):
                key_impls["/".join(names)] = str(jax.random.key_impl(leaf))
                leaf = jax.random.key_data(leaf)
            flat[names] = leaf
        scalars = {k: float(v) for k, v in (metrics or {}).items()}
        extra = {
            "data_state": None if data_state is None else _encode_data_state(data_state),
            "metrics": scalars,
            "key_impls": key_impls,
        }
        ranked = scalars if self.best_metric is not None and self.best_metric in scalars else None
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardSave(_nest(flat)), _EXTRA: ocp.args.JsonSave(extra)}
            ),
            metrics=ranked,
            force=True if force else None,
        )

    # --------------------------------------------------------------- queries
    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def best_step(self) -> Optional[int]:
        """Step with the best ``best_metric`` among saved steps (latest when none tracked)."""
        return self._manager.best_step()

    def metrics(self, step: int) -> dict:
        """The metrics stored with ``step``."""
        extra = self._manager.restore(step, args=ocp.args.Composite(**{_EXTRA: ocp.args.JsonRestore()}))
        return dict(extra[_EXTRA].get("metrics") or {})

    # --------------------------------------------------------------- restore
    def read_saved(self, step: int, prefix: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
        """The arrays of ``step`` whose names start with ``prefix``, as saved (on one device), with
        no model to restore into: for taking one part of another run's weights. Names are the
        saved pytree paths (``('params', 'encoder', 'blocks', '0', ..., 'value')``)."""
        if step not in self.all_steps():
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step} (have {self.all_steps()})")
        metadata = self._manager.item_metadata(step)[_STATE]
        saved = _flatten_metadata(dict(getattr(metadata, "tree", metadata)))
        # numpy leaves restore as numpy: no jax arrays, so this works inside a jit trace (a model
        # being built for its shapes) too
        wanted = {k: np.empty(tuple(m.shape), m.dtype) for k, m in saved.items()}
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(_nest(wanted))}))[_STATE]
        return {k: _lookup(restored, k) for k in saved if k[:len(prefix)] == prefix}

    def restore(self, abstract_state: TrainState, step: Optional[int] = None,
                only: Optional[tuple[str, ...]] = None) -> tuple[TrainState, Any]:
        """Restore ``step`` (default latest) into the layout of ``abstract_state``.

        ``abstract_state``: the TrainState tree of ``jax.ShapeDtypeStruct`` whose ``sharding``
        says where each array goes, so a run saved on 8 devices restores on 1 and back.
        ``only``: restore just these TrainState fields (e.g. ``WEIGHTS``) and set the others to
        None; the checkpoint's other fields are read as saved and dropped, so weights restore
        even when the optimizer that wrote them has changed. Returns ``(state, data_state)``.
        """
        if only is not None:
            abstract_state = abstract_state.replace(
                **{f: None for f in FIELDS if f not in only})
        self._manager.reload()
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step} (have {steps})")

        leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
        wanted: dict[tuple[str, ...], Any] = {}
        for path, leaf in leaves:
            if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
                raise CheckpointError(
                    f"{self.directory}: abstract_state leaf {'/'.join(_path_names(path))} is "
                    f"{type(leaf).__name__}, expected jax.ShapeDtypeStruct or array"
                )
            sharding = getattr(leaf, "sharding", None)
            if sharding is None:
                sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            sds = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
            wanted[_path_names(path)] = _key_data_abstract(sds) if _is_typed_key(sds) else sds

        metadata = self._manager.item_metadata(step)[_STATE]
        saved = _flatten_metadata(dict(getattr(metadata, "tree", metadata)))
        self._check_tree(step, saved, wanted, only)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(_nest(_with_other_fields(saved, wanted, only))),
                   _EXTRA: ocp.args.JsonRestore()}
            ),
        )
        tree, extra = restored[_STATE], restored[_EXTRA] or {}
        key_impls = extra.get("key_impls", {})
        out = []
        for path, leaf in leaves:
            names = _path_names(path)
            value = _lookup(tree, names)
            if _is_typed_key(leaf):
                impl = key_impls.get("/".join(names))
                if impl is None:
                    raise CheckpointError(
                        f"{self.directory}/{step}: {'/'.join(names)} is a typed PRNG key in the "
                        "model but was saved as a raw array"
                    )
                value = jax.random.wrap_key_data(value, impl=impl)
            out.append(value)
        return jax.tree_util.tree_unflatten(treedef, out), _decode_data_state(extra.get("data_state"))

    def _check_tree(self, step: int, saved: dict, wanted: dict, only: Optional[tuple[str, ...]] = None) -> None:
        """Name the keys and shapes that differ, instead of a deep orbax error."""
        if only is not None:
            saved = {k: v for k, v in saved.items() if k[0] in only}
        missing = sorted("/".join(k) for k in wanted.keys() - saved.keys())
        unexpected = sorted("/".join(k) for k in saved.keys() - wanted.keys())
        shapes = sorted(
            f"{'/'.join(k)}: saved {tuple(saved[k].shape)}, expected {tuple(wanted[k].shape)}"
            for k in wanted.keys() & saved.keys()
            if tuple(saved[k].shape) != tuple(wanted[k].shape)
        )
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing in checkpoint: {missing}")
            if unexpected:
                parts.append(f"not in the model: {unexpected}")
            if shapes:
                parts.append(f"shape mismatch: {shapes}")
            raise CheckpointError(
                f"{self.directory}/{step}: checkpoint does not match the train state; " + "; ".join(parts)
            )

    # ------------------------------------------------------------ lifecycle
    def wait(self) -> None:
        """Block until background writes have committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
