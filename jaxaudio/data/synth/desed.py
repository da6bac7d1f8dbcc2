"""A DESED-layout soundscape set built from procedural sources: mixer and layout writer.

Each clip is rendered from its own generator seeded by (seed, subset, index), so the set is
the same whatever the number of worker processes, and one subset's size never changes
another subset's clips. Events are mixed over a background bed at a random SNR re the bed's
RMS; events of one class never overlap (sed_scores_eval requires it), different classes may.
The first ten clips of every labelled subset each carry one event of a different class, so
every class occurs in validation and eval.

`strong_real` stands in for DESED's AudioSet-strong ("real strong") clips: the same sources
and labels, recorded differently from the Scaper-like `synthetic_train` soundscapes. Each
clip has a field-recording bed (`backgrounds.make_field_background`), a room (a reverb
tail, RT60 0.15 to 0.9 s, each event at its own direct-to-reverberant ratio), a microphone
and recording chain (band limit about 60-400 Hz to 3-6.5 kHz, a tilt and a presence peak)
with a hiss floor after it, a lower SNR range and a wider level range. Its labels span each
event's direct sound; the reverb rings on after the offset. Its SNR is set in the room (event
RMS over the labelled span re the bed's RMS), before the microphone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sp_fft

from jaxaudio.data.synth import dsp, manifest
from jaxaudio.data.synth.backgrounds import make_background, make_field_background
from jaxaudio.data.synth.parallel import render_all, start_over
from jaxaudio.data.synth.sources import CLASSES, make_source
from jaxaudio.errors import ConfigError

# Bump when a change to the generator changes its output: cached sets then regenerate.
# 2: the strong_real subset (other subsets' clips unchanged).
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes are clip counts per subset."""

    seed: int = 0
    sample_rate: int = 16000
    clip_seconds: float = 10.0
    n_strong: int = 600
    n_strong_real: int = 0  # the presets set it; 0 keeps a hand-made config's subsets as they were
    n_weak: int = 300
    n_unlabeled: int = 600
    n_validation: int = 200
    n_eval: int = 200
    min_events: int = 1
    max_events: int = 3
    empty_fraction: float = 0.1  # clips without events, in validation, eval and unlabeled
    snr_db_min: float = 0.0  # event RMS re background RMS
    snr_db_max: float = 20.0
    background_dbfs_min: float = -45.0
    background_dbfs_max: float = -30.0
    min_visible_seconds: float = 0.25  # an event starts at least this long before the clip ends
    same_class_gap_seconds: float = 0.2
    real_snr_db_min: float = -3.0  # strong_real: event RMS re bed RMS, in the room
    real_snr_db_max: float = 15.0
    real_background_dbfs_min: float = -55.0  # strong_real: bed RMS
    real_background_dbfs_max: float = -20.0


# n_strong_real : n_strong about as DESED's 3470 AudioSet-strong clips : 10000 synthetic ones.
DEFAULT = SynthConfig(n_strong_real=200)
SMALL = SynthConfig(n_strong=10, n_strong_real=6, n_weak=6, n_unlabeled=4, n_validation=10, n_eval=10)
# The systems' smoke presets: short clips, enough of them that a few hundred CPU steps learn
# something measurable (tests assert that the trained model beats the untrained one).
SMOKE = SynthConfig(clip_seconds=2.5, n_strong=96, n_strong_real=32, n_weak=24, n_unlabeled=24, n_validation=32,
                    n_eval=32, max_events=2, min_visible_seconds=0.2)
PRESETS = {"default": DEFAULT, "small": SMALL, "smoke": SMOKE}


@dataclass(frozen=True)
class SubsetPlan:
    """One subset: its key in the reader's DEFAULT_LAYOUT, where it goes, which labels it gets."""

    name: str
    rng_id: int  # stable id folded into the per-clip seed
    size_field: str
    audio_dir: str
    file_prefix: str
    strong_tsv: str | None = None
    weak_tsv: str | None = None
    durations_tsv: str | None = None
    allow_empty: bool = False


# The subsets both generators write (soundscape.py mixes them from a user's sound banks).
SUBSETS: tuple[SubsetPlan, ...] = (
    SubsetPlan("synthetic_train", 0, "n_strong", "audio/train/synthetic21_train/soundscapes", "synth",
               strong_tsv="metadata/train/synthetic21_train/soundscapes.tsv"),
    SubsetPlan("weak", 1, "n_weak", "audio/train/weak", "weak", weak_tsv="metadata/train/weak.tsv"),
    SubsetPlan("unlabeled", 2, "n_unlabeled", "audio/train/unlabel_in_domain", "unlabel", allow_empty=True),
    SubsetPlan("validation", 3, "n_validation", "audio/validation/validation", "val",
               strong_tsv="metadata/validation/validation.tsv",
               durations_tsv="metadata/validation/validation_durations.tsv", allow_empty=True),
    SubsetPlan("eval", 4, "n_eval", "audio/eval/public", "eval", strong_tsv="metadata/eval/public.tsv",
               durations_tsv="metadata/eval/public_durations.tsv", allow_empty=True),
)
# Written by the built-in generator only, in other recording conditions (see the module doc).
REAL_SUBSETS: tuple[SubsetPlan, ...] = (
    SubsetPlan("strong_real", 5, "n_strong_real", "audio/train/strong_label_real", "real",
               strong_tsv="metadata/train/audioset_strong.tsv", allow_empty=True),
)
BUILTIN_SUBSETS = SUBSETS + REAL_SUBSETS  # what `generate` writes
SUBSETS_BY_NAME = {s.name: s for s in BUILTIN_SUBSETS}


@dataclass(frozen=True)
class Event:
    label: str
    onset: float  # seconds, 3 decimals
    offset: float
    snr_db: float


@dataclass
class RenderedClip:
    """audio: (samples,) float in [-1, 1], exactly what goes to disk after 16-bit rounding.

    stems (only with keep_stems): each event's placed, scaled signal, same length as audio;
    background likewise; audio == background + sum(stems) before quantisation (to float
    rounding for strong_real, whose microphone filters each part separately).
    """

    audio: np.ndarray
    events: list[Event]
    background: np.ndarray | None = None
    stems: list[np.ndarray] | None = None
    conditions: dict | None = None  # strong_real only: the room and microphone drawn for the clip


def validate_config(config: SynthConfig) -> None:
    def bad(key, problem):
        raise ConfigError(f"SynthConfig.{key}: {problem}")

    if config.sample_rate < 16000:
        bad("sample_rate", f"{config.sample_rate} is below 16000 Hz; the sources reach 7.5 kHz")
    if config.clip_seconds <= config.min_visible_seconds:
        bad("clip_seconds", f"{config.clip_seconds} must exceed min_visible_seconds")
    for plan in BUILTIN_SUBSETS:
        if getattr(config, plan.size_field) < 0:
            bad(plan.size_field, "must be >= 0")
    for key in ("n_validation", "n_eval"):
        if 0 < getattr(config, key) < len(CLASSES):
            bad(key, f"must be 0 or >= {len(CLASSES)} so that every class occurs at least once")
    if not 1 <= config.min_events <= config.max_events:
        bad("min_events", f"need 1 <= min_events <= max_events, got {config.min_events}, {config.max_events}")
    if not 0.0 <= config.empty_fraction < 1.0:
        bad("empty_fraction", f"{config.empty_fraction} must lie in [0, 1)")
    if config.snr_db_min > config.snr_db_max:
        bad("snr_db_min", "must not exceed snr_db_max")
    if config.real_snr_db_min > config.real_snr_db_max:
        bad("real_snr_db_min", "must not exceed real_snr_db_max")
    if config.real_background_dbfs_min > config.real_background_dbfs_max:
        bad("real_background_dbfs_min", "must not exceed real_background_dbfs_max")


def clip_filename(plan: SubsetPlan, index: int) -> str:
    return f"{plan.file_prefix}_{index:05d}.wav"


def clip_rng(config: SynthConfig, plan: SubsetPlan, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, plan.rng_id, index])


def same_class_conflict(events: list[Event], label: str, onset: float, offset: float, gap: float) -> bool:
    return any(e.label == label and onset < e.offset + gap and offset > e.onset - gap for e in events)


def _draw_labels(config: SynthConfig, plan: SubsetPlan, index: int, rng: np.random.Generator) -> list[str]:
    """The clip's event classes: clip k < 10 carries class k first; maybe none (allow_empty)."""
    forced = CLASSES[index] if index < len(CLASSES) else None
    n_events = int(rng.integers(config.min_events, config.max_events + 1))
    empty = plan.allow_empty and forced is None and rng.random() < config.empty_fraction
    return [] if empty else [forced or CLASSES[rng.integers(len(CLASSES))]] + [
        CLASSES[rng.integers(len(CLASSES))] for _ in range(n_events - 1)]


def _place(config: SynthConfig, rng: np.random.Generator, events: list[Event], label: str, source: np.ndarray,
           n: int):
    """(start sample, the part of source inside the clip, onset, offset), or None when 20 tries
    found no place clear of the other events of the class."""
    sr = config.sample_rate
    max_onset_ms = int((config.clip_seconds - config.min_visible_seconds) * 1000)
    for _ in range(20):
        start = int(round(rng.integers(0, max_onset_ms + 1) / 1000 * sr))
        placed = source[: n - start]
        onset, offset = round(start / sr, 3), round((start + len(placed)) / sr, 3)
        if not same_class_conflict(events, label, onset, offset, config.same_class_gap_seconds):
            return start, placed, onset, offset
    return None


def _finish(mix, events, background, stems, keep_stems, conditions=None) -> RenderedClip:
    peak = float(np.max(np.abs(mix)))
    scale = 0.89 / peak if peak > 0.89 else 1.0  # headroom for 16-bit without clipping
    order = sorted(range(len(events)), key=lambda i: (events[i].onset, events[i].label))
    return RenderedClip(
        audio=mix * scale,
        events=[events[i] for i in order],
        background=background * scale if keep_stems else None,
        stems=[stems[i] * scale for i in order] if keep_stems else None,
        conditions=conditions,
    )


def render_clip(config: SynthConfig, subset: str, index: int, keep_stems: bool = False) -> RenderedClip:
    """Render clip `index` of `subset`; pure function of (config, subset, index)."""
    plan = SUBSETS_BY_NAME[subset]
    if plan in REAL_SUBSETS:
        return _render_real(config, plan, index, keep_stems)
    rng = clip_rng(config, plan, index)
    sr = config.sample_rate
    n = int(round(config.clip_seconds * sr))
    bg_gain = 10 ** (rng.uniform(config.background_dbfs_min, config.background_dbfs_max) / 20)
    background = make_background(rng, n, sr) * bg_gain

    labels = _draw_labels(config, plan, index, rng)
    events: list[Event] = []
    stems: list[np.ndarray] = []
    mix = background.copy()
    for label in labels:
        source = make_source(label, rng, sr)
        snr_db = float(rng.uniform(config.snr_db_min, config.snr_db_max))
        spot = _place(config, rng, events, label, source, n)
        if spot is None:
            continue  # no room left for another event of this class
        start, placed, onset, offset = spot
        scaled = placed * (bg_gain * 10 ** (snr_db / 20) / dsp.rms(placed))
        mix[start:start + len(scaled)] += scaled
        events.append(Event(label, onset, offset, round(snr_db, 2)))
        if keep_stems:
            stem = np.zeros(n)
            stem[start:start + len(scaled)] = scaled
            stems.append(stem)
    return _finish(mix, events, background, stems, keep_stems)


def recording_conditions(rng: np.random.Generator) -> dict:
    """The room and the microphone of one strong_real clip (see the module doc)."""
    return {
        "rt60_s": float(rng.uniform(0.15, 0.9)),
        "mic_lo_hz": float(np.exp(rng.uniform(np.log(60.0), np.log(400.0)))),
        "mic_hi_hz": float(rng.uniform(3000.0, 6500.0)),
        "mic_slope_db_per_octave": float(rng.uniform(-3.0, 1.5)),
        "mic_peak_hz": float(np.exp(rng.uniform(np.log(1500.0), np.log(5000.0)))),
        "mic_peak_db": float(rng.uniform(0.0, 8.0)),
    }


def _render_real(config: SynthConfig, plan: SubsetPlan, index: int, keep_stems: bool) -> RenderedClip:
    """A strong_real clip: field bed + events in a room (each at its own distance), all
    through one microphone; the SNR is set in the room, re the bed, before the microphone."""
    rng = clip_rng(config, plan, index)
    sr = config.sample_rate
    n = int(round(config.clip_seconds * sr))
    conditions = recording_conditions(rng)
    tail = dsp.reverb_tail(rng, sr, conditions["rt60_s"])
    bg_gain = 10 ** (rng.uniform(config.real_background_dbfs_min, config.real_background_dbfs_max) / 20)
    background = make_field_background(rng, n, sr) * bg_gain

    labels = _draw_labels(config, plan, index, rng)
    events: list[Event] = []
    spans: list[tuple[int, np.ndarray]] = []
    drrs: list[float] = []
    mix = background.copy()
    for label in labels:
        source = make_source(label, rng, sr)
        snr_db = float(rng.uniform(config.real_snr_db_min, config.real_snr_db_max))
        drr_db = float(rng.uniform(-2.0, 12.0))  # near sources are dry, far ones reverberant
        spot = _place(config, rng, events, label, source, n)
        if spot is None:
            continue
        start, placed, onset, offset = spot
        wet = dsp.reverberate(placed, tail, drr_db, n - start)
        wet *= bg_gain * 10 ** (snr_db / 20) / dsp.rms(wet[:len(placed)])  # SNR over the labelled span
        mix[start:start + len(wet)] += wet
        events.append(Event(label, onset, offset, round(snr_db, 2)))
        spans.append((start, wet))
        drrs.append(drr_db)

    n_fft = sp_fft.next_fast_len(n, real=True)
    gain = dsp.channel_gain(np.fft.rfftfreq(n_fft, 1.0 / sr), conditions["mic_lo_hz"], conditions["mic_hi_hz"],
                            conditions["mic_slope_db_per_octave"], conditions["mic_peak_hz"],
                            conditions["mic_peak_db"])

    def microphone(x):
        return dsp.filter_fft(x, sr, lambda freqs: gain)

    floor_dbfs = float(rng.uniform(-85.0, -70.0))  # the recorder's own hiss, after the microphone
    floor = rng.standard_normal(n) * 10 ** (floor_dbfs / 20)
    stems = []
    if keep_stems:
        for start, wet in spans:
            stem = np.zeros(n)
            stem[start:start + len(wet)] = wet
            stems.append(microphone(stem))
        background = microphone(background) + floor
    order = sorted(range(len(events)), key=lambda i: (events[i].onset, events[i].label))
    conditions = {**conditions, "noise_floor_dbfs": floor_dbfs, "event_drr_db": [round(drrs[i], 2) for i in order]}
    return _finish(microphone(mix) + floor, events, background, stems, keep_stems, conditions)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _render_and_write(job: tuple[SynthConfig, str, str, int]):
    """Worker: render one clip, write it as 16-bit PCM, return its events and file facts."""
    config, root, subset, index = job
    plan = SUBSETS_BY_NAME[subset]
    clip = render_clip(config, subset, index)
    rel = f"{plan.audio_dir}/{clip_filename(plan, index)}"
    path = Path(root) / rel
    sf.write(path, to_pcm16(clip.audio), config.sample_rate, subtype="PCM_16", format="WAV")
    return subset, index, clip.events, rel, {"size": path.stat().st_size, "sha256": manifest.sha256_file(path)}


def identity(config: SynthConfig) -> dict:
    """What a cached set must match to be reused."""
    return {"task": "desed", "generator_version": GENERATOR_VERSION, "config": dataclasses.asdict(config)}


def write_tsv(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")


def _write_metadata(root: Path, config: SynthConfig, results: dict[str, list[list[Event]]]) -> list[str]:
    written = []
    for plan in BUILTIN_SUBSETS:
        clips = results.get(plan.name, [])
        if not clips:
            continue
        names = [clip_filename(plan, i) for i in range(len(clips))]
        if plan.strong_tsv:
            rows = []
            for name, events in zip(names, clips):
                rows += [f"{name}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}" for e in events] or [f"{name}\t\t\t"]
            write_tsv(root / plan.strong_tsv, "filename\tonset\toffset\tevent_label", rows)
            written.append(plan.strong_tsv)
        if plan.weak_tsv:
            rows = [f"{name}\t{','.join(c for c in CLASSES if any(e.label == c for e in events))}"
                    for name, events in zip(names, clips)]
            write_tsv(root / plan.weak_tsv, "filename\tevent_labels", rows)
            written.append(plan.weak_tsv)
        if plan.durations_tsv:
            rows = [f"{name}\t{config.clip_seconds:.3f}" for name in names]
            write_tsv(root / plan.durations_tsv, "filename\tduration", rows)
            written.append(plan.durations_tsv)
    return written


def generate(out_dir, config: SynthConfig = DEFAULT, progress: bool = True, workers: int | None = None) -> Path:
    """Write the whole DESED layout under out_dir; the manifest goes last.

    Same config → byte-identical files, whatever `workers` is. Workers are spawned (not
    forked) so that a caller that has already started JAX threads is safe.
    """
    validate_config(config)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    start_over(root)
    jobs = []
    for plan in BUILTIN_SUBSETS:
        size = getattr(config, plan.size_field)
        if size:
            (root / plan.audio_dir).mkdir(parents=True, exist_ok=True)
        jobs += [(config, str(root), plan.name, i) for i in range(size)]

    results: dict[str, list] = {p.name: [None] * getattr(config, p.size_field) for p in BUILTIN_SUBSETS}
    files: dict[str, dict] = {}
    for subset, index, events, rel, info in render_all(_render_and_write, jobs, workers=workers, desc="synth desed",
                                                       unit="clip", progress=progress):
        results[subset][index] = events
        files[rel] = info

    for rel in _write_metadata(root, config, results):
        path = root / rel
        files[rel] = {"size": path.stat().st_size, "sha256": manifest.sha256_file(path)}
    manifest.write_manifest(root, identity(config), files)
    return root
