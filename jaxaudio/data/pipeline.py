"""Grain input pipelines that yield fixed-shape numpy batches, sharded per process.

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
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from jaxaudio.audio.io import pad_or_crop, read_audio
from jaxaudio.data.desed import ClipRecord
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.errors import CheckpointError, ConfigError

_INFINITE = 2**62  # grain's "infinite" range; no run gets near it


class ClipSource:
    """Random-access source of fixed-length clips with their frame and clip targets.

    Item: {"audio": (clip_samples,) float32, "strong": (n_frames, classes) float32,
    "weak": (classes,) float32, "has_strong": bool, "has_weak": bool, "index": int32}.
    A strongly labelled clip also gets a weak target (the union of its event classes).
    Labels are encoded up front so a bad label fails at construction, not mid-training.
    With `cache`, decoded audio stays in memory (per process/worker) after the first read.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        sample_rate: int,
        clip_samples: int,
        encoder: FrameLabelEncoder,
        cache: bool = True,
    ):
        if abs(clip_samples / sample_rate - encoder.clip_seconds) > 1.0 / sample_rate:
            raise ConfigError(
                f"clip_samples/sample_rate = {clip_samples}/{sample_rate} s does not match the "
                f"label encoder's clip_seconds = {encoder.clip_seconds}; frame targets would "
                "not line up with the audio"
            )
        self.records = list(records)
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(clip_samples)
        self.encoder = encoder
        self.cache = cache
        self._audio_cache: dict[int, np.ndarray] = {}
        self._labels = [self._encode(record) for record in self.records]

    def _encode(self, record: ClipRecord):
        enc = self.encoder
        has_strong = record.events is not None
        has_weak = has_strong or record.weak is not None
        strong = enc.encode_strong(record.events or ())
        weak_names = {label for _, _, label in record.events or ()} | set(record.weak or ())
        weak = enc.encode_weak(sorted(weak_names))
        if not has_strong:
            strong[:] = 0.0
        return strong, weak, has_strong, has_weak

    def __len__(self) -> int:
        return len(self.records)

    def _audio(self, index: int) -> np.ndarray:
        audio = self._audio_cache.get(index)
        if audio is None:
            audio = read_audio(self.records[index].path, self.sample_rate, mono=True)
            audio = pad_or_crop(audio, self.clip_samples)
            if self.cache:
                self._audio_cache[index] = audio
        return audio

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        strong, weak, has_strong, has_weak = self._labels[index]
        return {
            "audio": self._audio(index),
            "strong": strong,
            "weak": weak,
            "has_strong": np.bool_(has_strong),
            "has_weak": np.bool_(has_weak),
            "index": np.int32(index),
        }

    def padding_item(self) -> dict[str, Any]:
        """An all-zero item with index -1, used to fill the last eval batch."""
        enc = self.encoder
        return {
            "audio": np.zeros((self.clip_samples,), np.float32),
            "strong": np.zeros((enc.n_frames, enc.n_classes), np.float32),
            "weak": np.zeros((enc.n_classes,), np.float32),
            "has_strong": np.bool_(False),
            "has_weak": np.bool_(False),
            "index": np.int32(-1),
        }


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
    sources: Sequence[tuple[ClipSource, int]],
    *,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_count: int = 0,
) -> MixedBatchIterator:
    """Infinite batches, each the concatenation (in source order) of `count` clips per source.

    Counts are global per-batch counts, each divisible by `shard_count`; this process yields
    its slice, `count // shard_count` clips from each source, so all processes yield the same
    shapes in the same order and the shards of a global batch are disjoint. Each source is
    reshuffled every epoch from (seed, source position, epoch); nothing uses global randomness.
    `worker_count > 0` decodes in that many grain worker processes.
    """
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
            raise ConfigError(f"source {i} has no clips")
        counts.append(int(count))
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

    def __init__(self, source: ClipSource, batch_size: int, shard_index: int, shard_count: int):
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
    source: ClipSource, batch_size: int, *, shard_index: int = 0, shard_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `source` in order, in fixed-shape batches with a "valid" mask.

    `batch_size` is the global batch (divisible by `shard_count`); this process yields
    `batch_size // shard_count` rows of every global batch, and every process yields the same
    number of batches. Rows past the end are zero items with index -1 and valid False.
    """
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ConfigError(f"shard_index {shard_index} is not in [0, shard_count={shard_count})")
    if batch_size < 1 or batch_size % shard_count:
        raise ConfigError(
            f"eval batch_size {batch_size} must be positive and divisible by "
            f"shard_count {shard_count}"
        )
    example = _EvalExample(source, batch_size, shard_index, shard_count)
    n_batches = math.ceil(len(source) / batch_size)
    dataset = (
        grain.MapDataset.range(n_batches * example.local)
        .map(example)
        .batch(example.local, drop_remainder=True)
        .to_iter_dataset(_read_options())
    )
    return iter(dataset)
