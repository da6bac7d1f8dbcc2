"""The Source protocol and the grain batchers that turn any Source into fixed-shape numpy batches.

A Source is a random-access sequence of items (dicts of fixed-shape arrays and scalars); the
batchers know nothing about the task, so SED clips, ASD spectrograms or images batch alike.
Training mixes several labelled/unlabelled sources into each batch (as mean-teacher SED does:
so many strong, so many weak, so many unlabelled clips per step). The pipeline is built on grain
as a `MapDataset.range` over this process's example positions: each position maps to
(batch, source, slot) and on to an index of that source's per-epoch shuffle. The dataset is
batched *before* it becomes an iterator, so grain's elements are whole batches: its threads
(and worker processes, which take every n-th element) each build whole batches, which keeps the
per-source layout of a batch intact, and the iterator state (a batch counter) resumes exactly.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import grain
import numpy as np

from jaxaudio.errors import CheckpointError, ConfigError

_INFINITE = 2**62  # grain's "infinite" range; no run gets near it

Item = dict[str, Any]
BatchSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


@runtime_checkable
class Source(Protocol):
    """What the batchers need from a data set: random access to items of fixed shapes.

    Every item has the same keys, each with the shape and dtype that `batch_spec` gives, and
    an "index" (int32, its position), so batches can be traced back to their items.
    `padding_item` has the same shapes and index -1; eval batches are padded with it.
    Sources must pickle (grain worker processes get a copy).
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Item: ...

    def padding_item(self) -> Item: ...

    def batch_spec(self) -> BatchSpec: ...


def padding_from_spec(spec: BatchSpec) -> Item:
    """An all-zero item of `spec` (its "index" -1): the usual `padding_item`."""
    item = {key: np.zeros(shape, dtype) for key, (shape, dtype) in spec.items()}
    item = {key: value[()] if value.ndim == 0 else value for key, value in item.items()}
    if "index" in item:
        item["index"] = np.asarray(-1, item["index"].dtype)[()]
    return item


def _check_sources(sources: Sequence[Any]) -> None:
    """Every part is a Source and all share one batch_spec (they are stacked together)."""
    specs = []
    for i, source in enumerate(sources):
        if not isinstance(source, Source):
            raise ConfigError(
                f"source {i} ({type(source).__name__}) is not a Source: it needs __len__, "
                "__getitem__, padding_item and batch_spec"
            )
        specs.append({k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in source.batch_spec().items()})
    for i, spec in enumerate(specs[1:], start=1):
        if spec != specs[0]:
            raise ConfigError(
                f"source {i} has items {spec}, source 0 has {specs[0]}; sources mixed into "
                "one batch must give items of the same keys, shapes and dtypes"
            )


def _mark_absl_flags_parsed() -> None:
    """Grain's worker processes read absl flags; a library caller may never have parsed them,
    so accept the defaults rather than fail inside the first worker."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _source_seed(seed: int, source_index: int) -> int:
    """Independent 32-bit shuffle seed per source, derived from the run seed."""
    return int(np.random.SeedSequence([seed, source_index]).generate_state(1)[0])


# Batches built ahead by grain's threads (each thread builds one whole batch). Grain's defaults
# (16 threads, 500 elements ahead) would hold hundreds of decoded batches in memory; use
# `worker_count` for more decoding throughput.
PREFETCH_BATCHES = 4


def _read_options() -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=PREFETCH_BATCHES, prefetch_buffer_size=PREFETCH_BATCHES)


class _MixedExample:
    """Maps this process's n-th example to the right item of the right source (picklable)."""

    def __init__(self, shuffled, counts, shard_index, shard_count):
        self.shuffled = shuffled
        self.counts = counts
        self.local_counts = [c // shard_count for c in counts]
        self.shard_index = shard_index
        self.local_batch = sum(self.local_counts)

    def __call__(self, position: int):
        batch, slot = divmod(int(position), self.local_batch)
        for source_index, local in enumerate(self.local_counts):
            if slot < local:
                # Global batch `batch` takes stream positions [batch*count, (batch+1)*count)
                # of each source; shard k owns the k-th contiguous part of that range.
                stream = batch * self.counts[source_index] + self.shard_index * local + slot
                return self.shuffled[source_index][stream]
            slot -= local
        raise AssertionError("unreachable: slot beyond local batch")


class MixedBatchIterator:
    """Infinite iterator of mixed batches; `get_state`/`set_state` resume exactly."""

    def __init__(self, dataset: grain.IterDataset, config: dict[str, Any]):
        self._dataset = dataset
        self._config = config
        self._iterator = iter(dataset)

    def __iter__(self) -> "MixedBatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable state: grain's iterator state plus the pipeline's configuration."""
        return {"config": dict(self._config), "grain": self._iterator.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("config") != self._config:
            raise CheckpointError(
                f"data iterator state was saved for pipeline {state.get('config')}, "
                f"but this pipeline is {self._config}; it cannot resume from it"
            )
        self._iterator.set_state(state["grain"])

    def close(self) -> None:
        """Stops grain's prefetch threads and worker processes (idempotent)."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "MixedBatchIterator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def mixed_batches(
    parts: Sequence[tuple[Source, int]],
    *,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_count: int = 0,
) -> MixedBatchIterator:
    """Infinite batches, each the concatenation (in source order) of `count` items per source.

    Counts are global per-batch counts, each divisible by `shard_count`; this process yields
    its slice, `count // shard_count` items from each source, so all processes yield the same
    shapes in the same order and the shards of a global batch are disjoint. Each source is
    reshuffled every epoch from (seed, source position, epoch); nothing uses global randomness.
    `worker_count > 0` decodes in that many grain worker processes.
    """
    sources = list(parts)
    if not sources:
        raise ConfigError("mixed_batches needs at least one (source, count) pair")
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ConfigError(f"shard_index {shard_index} is not in [0, shard_count={shard_count})")
    counts = []
    for i, (source, count) in enumerate(sources):
        if count < 1 or count % shard_count:
            raise ConfigError(
                f"source {i}: per-batch count {count} must be positive and divisible by "
                f"shard_count {shard_count}"
            )
        if len(source) == 0:
            raise ConfigError(f"source {i} has no items")
        counts.append(int(count))
    _check_sources([source for source, _ in sources])
    shuffled = [
        grain.MapDataset.source(source).shuffle(seed=_source_seed(seed, i)).repeat()
        for i, (source, _) in enumerate(sources)
    ]
    example = _MixedExample(shuffled, counts, shard_index, shard_count)
    dataset = (
        grain.MapDataset.range(_INFINITE)
        .map(example)
        .batch(example.local_batch, drop_remainder=True)
        .to_iter_dataset(_read_options())
    )
    if worker_count > 0:
        _mark_absl_flags_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    config = {
        "seed": int(seed),
        "counts": counts,
        "source_sizes": [len(source) for source, _ in sources],
        "shard_index": int(shard_index),
        "shard_count": int(shard_count),
        "worker_count": int(worker_count),
    }
    return MixedBatchIterator(dataset, config)


class _EvalExample:
    """This process's n-th eval example, or a padding item past the end (picklable)."""

    def __init__(self, source: Source, batch_size: int, shard_index: int, shard_count: int):
        self.source = source
        self.batch_size = batch_size
        self.local = batch_size // shard_count
        self.shard_index = shard_index

    def __call__(self, position: int):
        batch, slot = divmod(int(position), self.local)
        index = batch * self.batch_size + self.shard_index * self.local + slot
        if index < len(self.source):
            item = self.source[index]
            item["valid"] = np.bool_(True)
        else:
            item = self.source.padding_item()
            item["valid"] = np.bool_(False)
        return item


def eval_batches(
    source: Source, batch_size: int, *, shard_index: int = 0, shard_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `source` in order, in fixed-shape batches with a "valid" mask.

    `batch_size` is the global batch (divisible by `shard_count`); this process yields
    `batch_size // shard_count` rows of every global batch, and every process yields the same
    number of batches. Rows past the end are `padding_item()`s (index -1) with valid False.
    """
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ConfigError(f"shard_index {shard_index} is not in [0, shard_count={shard_count})")
    if batch_size < 1 or batch_size % shard_count:
        raise ConfigError(
            f"eval batch_size {batch_size} must be positive and divisible by "
            f"shard_count {shard_count}"
        )
    _check_sources([source])
    example = _EvalExample(source, batch_size, shard_index, shard_count)
    n_batches = math.ceil(len(source) / batch_size)
    dataset = (
        grain.MapDataset.range(n_batches * example.local)
        .map(example)
        .batch(example.local, drop_remainder=True)
        .to_iter_dataset(_read_options())
    )
    return iter(dataset)
