"""Examples/s of the training input pipeline: wav folder vs prepared ArrayRecord shards.

The same `mixed_batches` pipeline (strong/weak/unlabeled mixed 12/12/24 per batch, grain with
its default prefetch threads, no worker processes) runs over three readers of one data set:
- folder, no cache: every clip decoded from its wav file each time (the baseline),
- folder, cached: decoded audio kept in memory (timed after one warm-up epoch of every source),
- arrayrecord: one record per clip read by random access from the prepared shards.
Two cases: 16 kHz (the set's own rate: decoding only) and 32 kHz (the folder reader
resamples every clip on every read, as for PaSST or 44.1 kHz DESED files; the prepared set
stores the resampled float32 clips). Only the three training subsets are prepared.
Steady-state examples/s is the median over repeats of N batches after the first batch; the
time to the first batch (thread start-up, first reads) is reported apart, as is source
construction and the one-off preparation. Files are read through the OS page cache (the set
fits in memory here), so this measures decoding and parsing, not disk.

Uses the built-in set at data/desed_synth when it exists (read only), else generates the
`small` preset under /tmp.

    python benchmarks/data_readers.py [--batches 40] [--repeats 3] [--sample_rates 16000 32000]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import numpy as np

from jaxaudio.data.prepare import prepare
from jaxaudio.data.sed.clips import ClipSource
from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, DESED_CLASSES, load_subset
from jaxaudio.data.sed.labels import FrameLabelEncoder
from jaxaudio.data.sed.prepared import PreparedClipSource, prepared_path, read_metadata
from jaxaudio.data.source import mixed_batches

RESULTS = pathlib.Path(__file__).parent / "results" / "data_readers.json"
BUILT_IN = pathlib.Path(__file__).resolve().parents[1] / "data" / "desed_synth"
COUNTS = {"synthetic_train": 12, "weak": 12, "unlabeled": 24}
CLIP_SECONDS, N_FRAMES = 10.0, 156


def _data_root() -> tuple[pathlib.Path, str]:
    if (BUILT_IN / "synth_manifest.json").is_file():
        return BUILT_IN, "built-in default set (data/desed_synth)"
    from jaxaudio.data.synth.cache import ensure_dataset
    from jaxaudio.data.synth.desed import SMALL

    return ensure_dataset("/tmp/jaxaudio_bench_desed_small", SMALL), "small preset (/tmp)"


def _warm_page_cache(paths) -> float:
    """Reads every file once so both readers are timed from memory, not from disk."""
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    return time.perf_counter() - start


def _sources(make) -> tuple[list, float]:
    start = time.perf_counter()
    sources = [(make(name), count) for name, count in COUNTS.items()]
    return sources, time.perf_counter() - start


def _run(sources, n_batches: int, seed: int = 0) -> tuple[float, float, dict]:
    """(seconds to the first batch, seconds for the next n_batches, first batch)."""
    iterator = mixed_batches(sources, seed=seed)
    try:
        start = time.perf_counter()
        first = next(iterator)
        startup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(n_batches):
            next(iterator)
        return startup, time.perf_counter() - start, first
    finally:
        iterator.close()


def _measure(root, prepared_root: str, sample_rate: int, n_batches: int, repeats: int) -> dict:
    """One case: the three readers at `sample_rate` (files at another rate are resampled)."""
    encoder = FrameLabelEncoder(DESED_CLASSES, CLIP_SECONDS, N_FRAMES)
    clip_samples = int(CLIP_SECONDS * sample_rate)
    existed = prepared_path(prepared_root, sample_rate, clip_samples).exists()
    start = time.perf_counter()
    prepared = prepare(root, prepared_root, sample_rate=sample_rate, clip_seconds=CLIP_SECONDS,
                       subsets=list(COUNTS), progress=True)
    prepare_s = time.perf_counter() - start
    metadata = read_metadata(prepared)
    shard_bytes = sum(p.stat().st_size for p in prepared.glob("*.array_record-*"))

    wavs = [r.path for name in COUNTS for r in load_subset(root, DEFAULT_LAYOUT[name])]
    warm_s = _warm_page_cache(wavs + sorted(prepared.glob("*.array_record-*")))

    def folder(cache):
        return lambda name: ClipSource(load_subset(root, DEFAULT_LAYOUT[name]), sample_rate,
                                       clip_samples, encoder, cache=cache)

    readers = {
        "folder_no_cache": folder(False),
        "folder_cached": folder(True),
        "arrayrecord": lambda name: PreparedClipSource(prepared, name, encoder),
    }
    per_batch = sum(COUNTS.values())
    results, firsts = {}, {}
    for name, make in readers.items():
        sources, build_s = _sources(make)
        warmup = 0
        if name == "folder_cached":  # fill the cache: one epoch of the slowest-cycling source
            warmup = max(len(s) // c + 1 for s, c in sources)
            _run(sources, warmup)
        startups, rates = [], []
        for _ in range(repeats):
            startup, seconds, first = _run(sources, n_batches)
            startups.append(startup)
            rates.append(n_batches * per_batch / seconds)
        firsts[name] = first
        results[name] = {
            "examples_per_s": statistics.median(rates),
            "examples_per_s_all": rates,
            "first_batch_s": statistics.median(startups),
            "source_construction_s": build_s,
            "warmup_batches": warmup,
        }
        del sources  # frees the cached audio before the next reader
    base = results["folder_no_cache"]["examples_per_s"]
    for entry in results.values():
        entry["speedup_vs_folder_no_cache"] = entry["examples_per_s"] / base
    identical = all(
        all(np.array_equal(firsts[name][k], firsts["folder_no_cache"][k]) for k in firsts[name])
        for name in firsts
    )
    return {
        "sample_rate": sample_rate,
        "clips": metadata["subsets"],
        "readers": results,
        "first_batches_identical": identical,
        "page_cache_warmup_s": warm_s,
        "prepare": {"seconds": prepare_s, "reused_existing": existed,
                    "audio_dtype": metadata["audio_dtype"], "shard_bytes": shard_bytes},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample_rates", type=int, nargs="+", default=[16000, 32000],
                        help="one case per rate; 32000 resamples the 16 kHz set on every read "
                             "(as the PaSST systems do, and as 44.1 kHz DESED files would)")
    parser.add_argument("--prepared", default="/tmp/jaxaudio_bench_prepared",
                        help="output folder of the prepared ArrayRecord sets (reused if current)")
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]  # other jobs sharing the CPUs skew every figure
    root, root_name = _data_root()
    cases = [_measure(root, args.prepared, rate, args.batches, args.repeats)
             for rate in args.sample_rates]
    report = {
        "data": root_name,
        "batch": COUNTS,
        "clip_seconds": CLIP_SECONDS,
        "batches_timed": args.batches,
        "repeats": args.repeats,
        "baseline": "folder_no_cache",
        "cases": cases,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "load_average_1min_at_start": load_at_start,
                 "python": platform.python_version()},
        "note": "grain threads, no worker processes; files served from the OS page cache",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")

    print(f"data: {root_name}; batch {sum(COUNTS.values())} ({COUNTS}); {args.batches} batches "
          f"x {args.repeats} repeats")
    print(f"{'rate':>6}  {'reader':<18}{'examples/s':>12}{'vs baseline':>13}"
          f"{'first batch s':>15}{'build s':>10}")
    for case in cases:
        for name, entry in case["readers"].items():
            print(f"{case['sample_rate']:>6}  {name:<18}{entry['examples_per_s']:>12.1f}"
                  f"{entry['speedup_vs_folder_no_cache']:>12.2f}x{entry['first_batch_s']:>15.3f}"
                  f"{entry['source_construction_s']:>10.3f}")
        prep = case["prepare"]
        print(f"{case['sample_rate']:>6}  prepare: {prep['seconds']:.1f} s ({prep['audio_dtype']}, "
              f"{prep['shard_bytes'] / 2**20:.0f} MiB, reused: {prep['reused_existing']}); "
              f"first batches identical: {case['first_batches_identical']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
