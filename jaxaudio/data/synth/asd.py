"""A built-in machine-sound set for anomalous sound detection, in the DCASE2020 task 2 layout.

    <out>/dev_data/<machine_type>/train/normal_id_XX_%08d.wav          normals only
    <out>/dev_data/<machine_type>/test/{normal,anomaly}_id_XX_%08d.wav
    <out>/synth_clips.csv        per clip: SNR, level, anomaly kind and severity (not in DCASE)
    <out>/synth_manifest.json    written last: the config, the generator version, file sizes

16 kHz mono 16-bit PCM, six machine types named as DCASE's, several IDs each with its own
signature (asd_machines.py). A clip is its ID's machine sound in its own state (speed, load,
level), in the ID's place in a factory (a fixed reverb), over a factory bed at an SNR drawn per
clip; an anomaly clip adds one anomaly kind at a severity drawn per clip. Every clip comes from
generators keyed by (seed, machine type, ID, split, index), so the set is the same whatever the
number of worker processes, and one split's size never changes another split's clips.

    python -m jaxaudio.data.synth.asd --out DIR --preset tiny
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from jaxaudio.data.synth import dsp, manifest
from jaxaudio.data.synth.asd_machines import (ANOMALY_KINDS, KINDS_BY_TYPE, MACHINE_IDS, MACHINE_TYPES, Anomaly,
                                              Streams, apply_anomaly, blend_signatures, draw_anomaly,
                                              factory_background, mods_for, render_machine, room, signature)
from jaxaudio.data.synth.cache import ensure_generated
from jaxaudio.data.synth.parallel import render_all, start_over
from jaxaudio.errors import ConfigError

# Bump when a change to the generator changes its output: cached sets then regenerate.
GENERATOR_VERSION = 1
DATA_DIR = "dev_data"
CLIPS_CSV = "synth_clips.csv"
FILENAME_RE = re.compile(r"^(normal|anomaly)_id_(\d{2})_(\d{8})\.wav$")  # DCASE2020 task 2 file names
SPLITS = {("train", "normal"): 0, ("test", "normal"): 1, ("test", "anomaly"): 2}  # folded into the clip seed
SEVERITY_QUARTERS = (0, 2, 1, 3)  # see clip_anomaly
PEAK = 0.89  # headroom for 16-bit without clipping
# Level offsets re config.level_dbfs: impulsive machines are quieter, so their peaks fit under PEAK.
TYPE_LEVEL_DB = {"fan": 0.0, "pump": 0.0, "slider": -5.0, "valve": -12.0, "ToyCar": 0.0, "ToyConveyor": -4.0}


@dataclass(frozen=True)
class ASDSynthConfig:
    """What to generate. Counts are clips per machine ID; SNRs are machine RMS re background RMS."""

    seed: int = 0
    sample_rate: int = 16000
    clip_seconds: float = 10.0
    machine_types: tuple[str, ...] = MACHINE_TYPES
    ids_per_type: int = 4  # the type's first IDs in MACHINE_IDS (DCASE's development IDs first)
    n_train: int = 250  # normals per ID
    n_test_normal: int = 100
    n_test_anomaly: int = 100
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    severity_min: float = 0.0
    severity_max: float = 1.0
    snr_db_min: float = 0.0
    snr_db_max: float = 12.0
    level_dbfs: float = -28.0  # the normal machine sound's RMS before the background (+ TYPE_LEVEL_DB)
    level_spread_db: float = 1.5  # standard deviation of the per-clip level about it
    # How far apart a type's IDs sound: 1 = each ID its own signature; below 1 each lies that
    # fraction of the way from one signature the type's IDs share (asd_machines.blend_signatures).
    id_spread: float = 1.0


# DCASE-like: 1000 train normals per type (DCASE has 3000-4000), 100 + 100 test clips per ID, 10 s.
DEV_LIKE = ASDSynthConfig()
# A small CNN trains on it on two CPU cores in minutes; 1800 clips, about 230 MB.
TINY = ASDSynthConfig(clip_seconds=4.0, ids_per_type=3, n_train=60, n_test_normal=20, n_test_anomaly=20)
SMOKE = ASDSynthConfig(clip_seconds=2.0, machine_types=("fan", "ToyCar"), ids_per_type=2, n_train=6, n_test_normal=3,
                       n_test_anomaly=3)
# Tiny with the IDs of a type close together (same counts and structure, continuous values a
# quarter of the way to their own): to tell them apart a classifier must learn finer structure.
TINY_CLOSE_IDS = dataclasses.replace(TINY, id_spread=0.25)
PRESETS = {"smoke": SMOKE, "tiny": TINY, "tiny_close_ids": TINY_CLOSE_IDS, "dev_like": DEV_LIKE}


@dataclass
class RenderedASDClip:
    """audio: (samples,) float in [-1, 1], exactly what goes to disk after 16-bit rounding."""

    audio: np.ndarray
    anomaly: Anomaly | None
    snr_db: float
    level_dbfs: float


def validate_config(config: ASDSynthConfig) -> None:
    def bad(key, problem):
        raise ConfigError(f"ASDSynthConfig.{key}: {problem}")

    if config.seed < 0:
        bad("seed", f"{config.seed} must be >= 0")
    if config.sample_rate < 16000:
        bad("sample_rate", f"{config.sample_rate} is below 16000 Hz; the machines reach 7.5 kHz")
    if not config.clip_seconds >= 0.5:
        bad("clip_seconds", f"{config.clip_seconds} is below 0.5 s, too short for a machine's rhythm")
    if not config.machine_types or len(set(config.machine_types)) != len(config.machine_types):
        bad("machine_types", f"{config.machine_types!r} must be a non-empty tuple without repeats")
    for t in config.machine_types:
        if t not in MACHINE_TYPES:
            bad("machine_types", f"unknown machine type {t!r}; choose from {', '.join(MACHINE_TYPES)}")
    if config.ids_per_type < 1:
        bad("ids_per_type", f"{config.ids_per_type} must be at least 1")
    for key in ("n_train", "n_test_normal", "n_test_anomaly"):
        if getattr(config, key) < 0:
            bad(key, f"{getattr(config, key)} must be >= 0")
    if not config.anomaly_kinds:
        bad("anomaly_kinds", "must name at least one kind")
    for kind in config.anomaly_kinds:
        if kind not in ANOMALY_KINDS:
            bad("anomaly_kinds", f"unknown kind {kind!r}; choose from {', '.join(ANOMALY_KINDS)}")
    for t in config.machine_types:
        if not kinds_for(config, t):
            bad("anomaly_kinds", f"{config.anomaly_kinds!r} holds no kind a {t} can have "
                                 f"({', '.join(KINDS_BY_TYPE[t])})")
    if not 0.0 <= config.severity_min <= config.severity_max <= 1.0:
        bad("severity_min", f"need 0 <= severity_min <= severity_max <= 1, got {config.severity_min}, "
                            f"{config.severity_max}")
    if config.snr_db_min > config.snr_db_max:
        bad("snr_db_min", "must not exceed snr_db_max")
    if config.level_dbfs > -12.0 or config.level_spread_db < 0:
        bad("level_dbfs", "must be at most -12 dBFS (room for peaks) with level_spread_db >= 0")
    if not 0.0 <= config.id_spread <= 1.0:
        bad("id_spread", f"{config.id_spread} must lie in [0, 1]")


def kinds_for(config: ASDSynthConfig, machine_type: str) -> tuple[str, ...]:
    return tuple(k for k in config.anomaly_kinds if k in KINDS_BY_TYPE[machine_type])


def machine_ids(config: ASDSynthConfig, machine_type: str) -> tuple[int, ...]:
    """The IDs generated for a type (the type's first `ids_per_type`; ToyConveyor has 6 at most)."""
    return MACHINE_IDS[machine_type][:config.ids_per_type]


def clip_path(machine_type: str, split: str, label: str, machine_id: int, index: int) -> str:
    """The clip's path under the data root, as DCASE2020 task 2 names it."""
    return f"{DATA_DIR}/{machine_type}/{split}/{label}_id_{machine_id:02d}_{index:08d}.wav"


def id_signature(config: ASDSynthConfig, machine_type: str, machine_id: int) -> dict:
    """An ID's parameters: fixed by (seed, type, ID, id_spread) alone."""
    t = MACHINE_TYPES.index(machine_type)
    own = signature(machine_type, np.random.default_rng([config.seed, t, machine_id, 7919]))
    if config.id_spread == 1.0:
        return own
    shared = signature(machine_type, np.random.default_rng([config.seed, t, 7919]))
    return blend_signatures(shared, own, config.id_spread)


def _clip_streams(config, machine_type, machine_id, split, label, index) -> Streams:
    if machine_type not in MACHINE_TYPES or machine_id not in MACHINE_IDS[machine_type]:
        raise ConfigError(f"clip {machine_type}/id_{machine_id}: not a machine type and ID of this generator "
                          f"(types {', '.join(MACHINE_TYPES)}; IDs in asd_machines.MACHINE_IDS)")
    if (split, label) not in SPLITS:
        raise ConfigError(f"clip split/label {split}/{label}: expected train/normal, test/normal or test/anomaly")
    return Streams([config.seed, MACHINE_TYPES.index(machine_type), machine_id, SPLITS[split, label], index])


def clip_anomaly(config: ASDSynthConfig, machine_type: str, machine_id: int, index: int, sig: dict | None = None,
                 streams: Streams | None = None) -> Anomaly:
    """Anomaly clip `index`'s kind and severity.

    Kinds take turns (from an ID-specific start), so every kind occurs about equally often
    per ID. The severity is drawn per clip from one quarter of [severity_min, severity_max],
    a kind's successive clips visiting the quarters in the order 0, 2, 1, 3: even a test set
    of 20 anomalies per ID holds mild and clear cases of every kind, not a lucky draw.
    """
    sig = id_signature(config, machine_type, machine_id) if sig is None else sig
    streams = _clip_streams(config, machine_type, machine_id, "test", "anomaly", index) if streams is None else streams
    kinds = kinds_for(config, machine_type)
    turn, k = divmod(index + machine_id, len(kinds))
    rng = streams("anomaly")
    quarter = SEVERITY_QUARTERS[turn % len(SEVERITY_QUARTERS)]
    fraction = (quarter + rng.random()) / len(SEVERITY_QUARTERS)
    severity = config.severity_min + (config.severity_max - config.severity_min) * fraction
    return draw_anomaly(kinds[k], severity, sig, rng)


def render_clip(config: ASDSynthConfig, machine_type: str, machine_id: int, split: str, label: str, index: int,
                *, with_anomaly: bool = True) -> RenderedASDClip:
    """Render one clip; a pure function of its arguments.

    ``with_anomaly=False`` renders an anomaly clip's normal twin: the same machine state,
    background, SNR and level, without the anomaly (a normal clip is its own twin).
    """
    streams = _clip_streams(config, machine_type, machine_id, split, label, index)
    sig = id_signature(config, machine_type, machine_id)
    sr = config.sample_rate
    n = int(round(config.clip_seconds * sr))
    state = streams("clip")
    snr_db = float(state.uniform(config.snr_db_min, config.snr_db_max))
    level_dbfs = float(config.level_dbfs + TYPE_LEVEL_DB[machine_type]
                       + config.level_spread_db * np.clip(state.standard_normal(), -2.5, 2.5))

    machine, activity = render_machine(machine_type, sig, n, sr, streams)
    ref = dsp.rms(machine)  # levels and SNR refer to the normal machine sound
    anomaly = None
    if label == "anomaly" and with_anomaly:
        anomaly = clip_anomaly(config, machine_type, machine_id, index, sig, streams)
        mods = mods_for(anomaly)
        if mods != mods_for(None):
            machine, _ = render_machine(machine_type, sig, n, sr, streams, mods)
        machine = apply_anomaly(anomaly, machine, ref, sig, sr, streams("anomaly_signal"), activity)
    machine = room(sig, machine, sr)
    background = factory_background(streams("background"), n, sr) * ref * 10 ** (-snr_db / 20)
    audio = (machine + background) * (10 ** (level_dbfs / 20) / ref)
    peak = float(np.max(np.abs(audio)))
    if peak > PEAK:
        audio *= PEAK / peak
    return RenderedASDClip(audio, anomaly, round(snr_db, 3), round(level_dbfs, 3))


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def clip_jobs(config: ASDSynthConfig) -> list[tuple[str, int, str, str, int]]:
    """Every clip of the set as (machine type, ID, split, label, index), in a fixed order."""
    jobs = []
    for t in config.machine_types:
        for machine_id in machine_ids(config, t):
            for (split, label), count in ((("train", "normal"), config.n_train),
                                          (("test", "normal"), config.n_test_normal),
                                          (("test", "anomaly"), config.n_test_anomaly)):
                jobs += [(t, machine_id, split, label, i) for i in range(count)]
    return jobs


def _render_and_write(job):
    """Worker: render one clip, write it as 16-bit PCM, return its csv row and file facts."""
    config, root, (machine_type, machine_id, split, label, index) = job
    clip = render_clip(config, machine_type, machine_id, split, label, index)
    rel = clip_path(machine_type, split, label, machine_id, index)
    path = Path(root) / rel
    sf.write(path, to_pcm16(clip.audio), config.sample_rate, subtype="PCM_16", format="WAV")
    row = {"path": rel, "machine_type": machine_type, "machine_id": f"{machine_id:02d}", "split": split,
           "label": label, "kind": clip.anomaly.kind if clip.anomaly else "",
           "severity": f"{clip.anomaly.severity:.4f}" if clip.anomaly else "", "snr_db": f"{clip.snr_db:.3f}",
           "level_dbfs": f"{clip.level_dbfs:.3f}"}
    return row, rel, {"size": path.stat().st_size, "sha256": manifest.sha256_file(path)}


def identity(config: ASDSynthConfig) -> dict:
    """What a cached set must match to be reused (as JSON reads it back: tuples are lists). The
    default id_spread is left out, so sets generated before the field existed stay valid."""
    fields = dataclasses.asdict(config)
    if fields["id_spread"] == 1.0:
        del fields["id_spread"]
    return json.loads(json.dumps({"task": "dcase2020_asd", "generator_version": GENERATOR_VERSION,
                                  "config": fields}))


def generate(out_dir, config: ASDSynthConfig = TINY, progress: bool = True, workers: int | None = None) -> Path:
    """Write the whole set under out_dir (returned: the data root holding dev_data/); the
    manifest goes last. Same config -> byte-identical files, whatever `workers` is. Workers
    are spawned (not forked), so a caller that has already started JAX threads is safe."""
    validate_config(config)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    start_over(root)
    jobs = clip_jobs(config)
    for t in config.machine_types:
        for split in ("train", "test"):
            (root / DATA_DIR / t / split).mkdir(parents=True, exist_ok=True)

    rows, files = [], {}
    payload = [(config, str(root), job) for job in jobs]
    for row, rel, info in render_all(_render_and_write, payload, workers=workers, desc="synth asd", unit="clip",
                                     progress=progress):
        rows.append(row)
        files[rel] = info

    with open(root / CLIPS_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)
    files[CLIPS_CSV] = {"size": (root / CLIPS_CSV).stat().st_size, "sha256": manifest.sha256_file(root / CLIPS_CSV)}
    manifest.write_manifest(root, identity(config), files)
    return root


def ensure_dataset(data_dir, config: ASDSynthConfig = TINY, progress: bool = True, workers: int | None = None,
                   verify_hashes: bool = False, force: bool = False) -> Path:
    """Return data_dir holding a complete set for `config`, generating it if needed.

    Reused (unless `force`) when its manifest matches the config and generator version and
    every listed file has its recorded size (and sha256, with verify_hashes). Otherwise a fresh
    set is generated next to it and swapped in; the old folder goes only after the swap, and
    only if it is empty or one of our generated sets (cache.check_replaceable).
    """
    validate_config(config)
    return ensure_generated(data_dir, identity(config),
                            lambda out: generate(out, config, progress=progress, workers=workers),
                            verify_hashes=verify_hashes, force=force)


def summary(config: ASDSynthConfig) -> str:
    lines = []
    for t in config.machine_types:
        ids = ", ".join(f"{i:02d}" for i in machine_ids(config, t))
        lines.append(f"  {t}: IDs {ids}; per ID {config.n_train} train, {config.n_test_normal} normal + "
                     f"{config.n_test_anomaly} anomaly test clips ({', '.join(kinds_for(config, t))})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxaudio.data.synth.asd", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (the data root; dev_data/ goes inside)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)
    config = dataclasses.replace(PRESETS[args.preset], seed=args.seed)
    start = time.perf_counter()
    root = ensure_dataset(args.out, config, progress=not args.quiet, workers=args.workers, force=args.force)
    if not args.quiet:
        print(f"DCASE2020 task 2 layout set at {root / DATA_DIR} ({time.perf_counter() - start:.1f} s)\n"
              f"{summary(config)}", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    """main() for the shell (``cli.run_cli``)."""
    from jaxaudio.data.synth.cli import run_cli

    return run_cli(main, argv)


if __name__ == "__main__":
    from jaxaudio.data.synth.asd import cli as _cli  # the importable module, so spawned workers find it

    sys.exit(_cli())
