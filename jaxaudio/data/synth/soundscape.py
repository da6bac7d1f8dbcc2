"""DESED-layout soundscapes mixed from a user's sound banks, with Scaper's event semantics.

Scaper (the tool DESED's synthetic set is made with) does not install here, so this is our own
mixer. Each clip is first planned as a record (a JAMS-like dict: background file, offset and
level; each event's label, source file, source_time, event_time, event_duration, snr,
pitch_shift, time_stretch), every choice drawn from the clip's own generator seeded by
(seed, subset, index), so a clip does not depend on which or how many other clips are made.
The clip is then rendered from that record by `render_record`, the same function that
re-renders it later, so a record reproduces its wav byte for byte.

Differences from Scaper: SNR is event RMS over background RMS (Scaper uses LUFS); time stretch
is a phase vocoder on a scipy STFT and pitch shift is stretch + resample (Scaper uses rubberband).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal as sps

from jaxaudio.audio.io import pad_or_crop
from jaxaudio.data.synth import dsp, manifest
from jaxaudio.data.sed.desed import CLASSES_FILE
from jaxaudio.data.synth.cache import check_replaceable
from jaxaudio.data.synth.parallel import start_over
from jaxaudio.data.synth.desed import (SUBSETS, Event, SubsetPlan, clip_filename, clip_rng,
                                       same_class_conflict, to_pcm16, write_tsv)
from jaxaudio.data.synth.soundbank import Banks, fingerprint, load_banks, read_foreground, read_mono, split_banks
from jaxaudio.errors import ConfigError
from jaxaudio.utils.progress import progress as progress_reporter

# Bump when a change changes the output for the same config and banks: cached sets then regenerate.
SOUNDSCAPE_VERSION = 1
RECORD_FORMAT = "jaxaudio.soundscape/1"
RECORDS_DIR = "records"
TRAIN_SUBSETS = ("synthetic_train", "weak", "unlabeled")  # drawn from the train share of the banks
PEAK = 0.89  # a mix louder than this is scaled down as a whole (16-bit headroom, as the built-in set)
PLACEMENT_TRIES = 10


@dataclass(frozen=True)
class SoundscapeConfig:
    """What to generate. Ranges are (low, high), drawn uniformly; None turns a transform off."""

    seed: int = 0
    sample_rate: int = 16000
    clip_seconds: float = 10.0
    n_strong: int = 200
    n_weak: int = 100
    n_unlabeled: int = 200
    n_validation: int = 60
    n_eval: int = 60
    min_events: int = 1
    max_events: int = 3
    empty_fraction: float = 0.1  # clips without events, in unlabeled, validation and eval
    event_seconds: tuple[float, float] = (0.25, 10.0)  # clamped to the (trimmed, stretched) source and the clip
    snr_db: tuple[float, float] = (0.0, 20.0)  # event RMS re background RMS
    background_dbfs: tuple[float, float] = (-45.0, -30.0)  # background RMS
    pitch_shift: tuple[float, float] | None = None  # semitones
    time_stretch: tuple[float, float] | None = None  # duration factor: 2 makes an event twice as long
    eval_fraction: float = 0.3  # share of each class's (and the backgrounds') files held out for validation/eval
    same_class_gap_seconds: float = 0.2
    fade_seconds: float = 0.01  # raised-cosine fade in/out of each event (Scaper's default)
    trim_db: float = -40.0  # foreground silence threshold re the loudest 10 ms frame (dsp.trim)


def validate_config(config: SoundscapeConfig, classes: tuple[str, ...] | None = None) -> None:
    def bad(key, problem):
        raise ConfigError(f"SoundscapeConfig.{key} (--{key.replace('_', '-')}): {problem}")

    if config.sample_rate < 8000:
        bad("sample_rate", f"{config.sample_rate} Hz is below 8000 Hz")
    if config.clip_seconds <= 0:
        bad("clip_seconds", "must be positive")
    for plan in SUBSETS:
        if getattr(config, plan.size_field) < 0:
            bad(plan.size_field, "must be >= 0")
    for key in ("n_validation", "n_eval"):
        if classes is not None and 0 < getattr(config, key) < len(classes):
            bad(key, f"{getattr(config, key)} is below the {len(classes)} classes; every class must occur at least "
                     "once (use 0 to write no such subset)")
    if not 1 <= config.min_events <= config.max_events:
        bad("min_events", f"need 1 <= min_events <= max_events, got {config.min_events}, {config.max_events}")
    if not 0.0 <= config.empty_fraction < 1.0:
        bad("empty_fraction", f"{config.empty_fraction} must lie in [0, 1)")
    if not 0.0 < config.eval_fraction < 1.0:
        bad("eval_fraction", f"{config.eval_fraction} must lie in (0, 1)")
    for key in ("event_seconds", "snr_db", "background_dbfs", "pitch_shift", "time_stretch"):
        span = getattr(config, key)
        if span is not None and (len(span) != 2 or span[0] > span[1]):
            bad(key, f"{span} must be (low, high) with low <= high")
    if config.event_seconds[0] <= 0:
        bad("event_seconds", "must be positive")
    if config.time_stretch is not None and config.time_stretch[0] <= 0:
        bad("time_stretch", "factors must be positive")
    if config.pitch_shift is not None and max(map(abs, config.pitch_shift)) > 24:
        bad("pitch_shift", "at most 24 semitones either way")


# ---- time stretch and pitch shift ----------------------------------------------------------------

def _frame_length(sample_rate: int) -> int:
    return 1 << int(round(np.log2(0.032 * sample_rate)))  # about 32 ms


def time_stretch(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Phase vocoder: x lasting `factor` times as long (round(len * factor) samples), pitch kept."""
    x = np.asarray(x, dtype=np.float64)
    n_out = int(round(len(x) * factor))
    if factor == 1.0:
        return x.copy()
    n_fft = _frame_length(sample_rate)
    hop = n_fft // 4
    _, _, spec = sps.stft(np.pad(x, (0, max(0, n_fft - len(x)))), nperseg=n_fft, noverlap=n_fft - hop,
                          window="hann")
    steps = np.arange(0.0, spec.shape[1], 1.0 / factor)  # output frame i reads input frame steps[i]
    k, frac = steps.astype(int), steps % 1.0
    spec = np.pad(spec, ((0, 0), (0, 2)))
    c0, c1 = spec[:, k], spec[:, k + 1]
    magnitude = (1.0 - frac) * np.abs(c0) + frac * np.abs(c1)
    omega = 2.0 * np.pi * hop * np.arange(spec.shape[0]) / n_fft  # expected phase advance per hop
    deviation = np.angle(c1) - np.angle(c0) - omega[:, None]
    deviation -= 2.0 * np.pi * np.round(deviation / (2.0 * np.pi))
    advance = np.cumsum(omega[:, None] + deviation, axis=1)
    phase = np.angle(spec[:, :1]) + np.concatenate([np.zeros((len(omega), 1)), advance[:, :-1]], axis=1)
    _, y = sps.istft(magnitude * np.exp(1j * phase), nperseg=n_fft, noverlap=n_fft - hop, window="hann")
    return pad_or_crop(y, n_out)


def stretch_and_shift(x: np.ndarray, sample_rate: int, factor: float = 1.0, semitones: float = 0.0,
                      length: int | None = None) -> np.ndarray:
    """Time stretch by `factor` and pitch shift by `semitones` in one vocoder pass, then `length` samples.

    The pitch ratio 2^(s/12) is taken as a fraction of denominator <= 64 (error < 0.03 %), so
    the resampling back to the original duration is an exact polyphase ratio.
    """
    ratio = Fraction(2.0 ** (semitones / 12.0)).limit_denominator(64) if semitones else Fraction(1)
    length = int(round(len(x) * factor)) if length is None else length
    y = np.asarray(x, dtype=np.float64)
    if factor != 1.0 or ratio != 1:
        y = time_stretch(y, factor * float(ratio), sample_rate)
    if ratio != 1:
        y = sps.resample_poly(y, ratio.denominator, ratio.numerator)
    return pad_or_crop(y, length)


def pitch_shift(x: np.ndarray, semitones: float, sample_rate: int) -> np.ndarray:
    """x with every frequency times 2^(semitones/12), same length."""
    return stretch_and_shift(x, sample_rate, 1.0, semitones)


# ---- planning a clip (the record) -----------------------------------------------------------------

def clip_samples(config: SoundscapeConfig) -> int:
    return int(round(config.clip_seconds * config.sample_rate))


def _plan_event(rng: np.random.Generator, config: SoundscapeConfig, banks: Banks, label: str, n: int) -> dict:
    sr = config.sample_rate
    files = banks.foreground[label]
    source = files[int(rng.integers(len(files)))]
    stretch = float(rng.uniform(*config.time_stretch)) if config.time_stretch else 1.0
    shift = float(rng.uniform(*config.pitch_shift)) if config.pitch_shift else 0.0
    longest = min(int(source.samples * stretch), n)
    n_out = max(1, min(int(round(rng.uniform(*config.event_seconds) * sr)), longest))
    n_src = min(source.samples, max(1, int(round(n_out / stretch))))
    src_start = int(rng.integers(0, source.samples - n_src + 1))
    return {"label": label, "source_file": source.rel, "source_time": src_start / sr, "source_duration": n_src / sr,
            "event_time": None, "event_duration": n_out / sr, "snr": float(rng.uniform(*config.snr_db)),
            "pitch_shift": shift, "time_stretch": stretch}


def plan_clip(config: SoundscapeConfig, banks: Banks, plan: SubsetPlan, index: int) -> dict:
    """The record of clip `index` of `plan` before rendering (no gains yet); a pure function of its inputs."""
    rng = clip_rng(config, plan, index)
    sr, n, classes = config.sample_rate, clip_samples(config), banks.classes
    bed = banks.background[int(rng.integers(len(banks.background)))]
    offset = int(rng.integers(0, bed.samples - n + 1 if bed.samples >= n else bed.samples))
    level = float(rng.uniform(*config.background_dbfs))
    labelled = plan.strong_tsv is not None or plan.weak_tsv is not None
    forced = classes[index] if labelled and index < len(classes) else None  # every class in every labelled subset
    n_events = int(rng.integers(config.min_events, config.max_events + 1))
    empty = plan.allow_empty and forced is None and rng.random() < config.empty_fraction
    labels = [] if empty else [forced if forced is not None else classes[int(rng.integers(len(classes)))]] + [
        classes[int(rng.integers(len(classes)))] for _ in range(n_events - 1)]
    placed: list[Event] = []
    events = []
    for label in labels:
        event = _plan_event(rng, config, banks, label, n)
        n_out = int(round(event["event_duration"] * sr))
        for _ in range(PLACEMENT_TRIES):
            start = int(rng.integers(0, n - n_out + 1))
            onset, offset_s = round(start / sr, 3), round((start + n_out) / sr, 3)
            if not same_class_conflict(placed, label, onset, offset_s, config.same_class_gap_seconds):
                break
        else:
            continue  # no room left for another event of this class: dropped
        placed.append(Event(label, onset, offset_s, round(event["snr"], 2)))
        events.append({**event, "event_time": start / sr, "onset": onset, "offset": offset_s})
    events.sort(key=lambda e: (e["event_time"], e["label"]))  # the mixing order, and the tsv's
    return {
        "format": RECORD_FORMAT, "seed": config.seed, "subset": plan.name, "subset_id": plan.rng_id, "index": index,
        "filename": clip_filename(plan, index), "sample_rate": sr, "clip_duration": n / sr, "clip_samples": n,
        "trim_db": config.trim_db, "fade_seconds": config.fade_seconds,
        "background": {"source_file": bed.rel, "offset": offset, "level_dbfs": level},
        "events": events,
    }


# ---- rendering ---------------------------------------------------------------------------------------

def _render(record: dict, fg_root, bg_root) -> tuple[np.ndarray, dict]:
    """(clip in [-PEAK, PEAK], the record with each gain and the final scale filled in)."""
    if record.get("format") != RECORD_FORMAT:
        raise ConfigError(f"not a soundscape record (format {record.get('format')!r}, expected {RECORD_FORMAT!r})")
    sr, n = int(record["sample_rate"]), int(record["clip_samples"])
    fade = record["fade_seconds"]

    def samples(seconds: float) -> int:
        return int(round(seconds * sr))

    background = dict(record["background"])
    bed = read_mono(Path(bg_root) / background["source_file"], sr)
    segment = bed[(background["offset"] + np.arange(n)) % len(bed)]  # looped when the file is shorter
    background["gain"] = 10.0 ** (background["level_dbfs"] / 20.0) / dsp.rms(segment)
    mix = segment * background["gain"]
    bed_rms = dsp.rms(mix)
    events = []
    for event in record["events"]:
        path = Path(fg_root) / event["source_file"]
        source = read_foreground(path, sr, record["trim_db"])
        start, count = samples(event["source_time"]), samples(event["source_duration"])
        if start + count > len(source):
            raise ConfigError(f"{path}: {len(source)} usable samples, the record reads up to {start + count} "
                              "(the sound bank has changed since the record was written)")
        piece = stretch_and_shift(source[start:start + count], sr, event["time_stretch"], event["pitch_shift"],
                                  samples(event["event_duration"]))
        piece = dsp.fade(piece, sr, fade, fade)
        gain = bed_rms * 10.0 ** (event["snr"] / 20.0) / dsp.rms(piece)
        at = samples(event["event_time"])
        mix[at:at + len(piece)] += gain * piece
        events.append({**event, "gain": gain})
    peak = float(np.max(np.abs(mix)))
    scale = PEAK / peak if peak > PEAK else 1.0
    return mix * scale, {**record, "background": background, "events": events, "scale": scale}


def render_record(record: dict, fg_root, bg_root) -> np.ndarray:
    """Re-render a clip from its record alone: (samples,) float64; to_pcm16 of it is the written wav.

    A record whose gains no longer match (the banks changed) is a ConfigError.
    """
    audio, rendered = _render(record, fg_root, bg_root)
    written = [record.get("scale")] + [e.get("gain") for e in record["events"]]
    again = [rendered["scale"]] + [e["gain"] for e in rendered["events"]]
    if all(w is not None for w in written) and not np.allclose(written, again, rtol=1e-6, atol=0):
        raise ConfigError(f"record {record.get('filename')!r}: re-rendered gains {again} differ from the "
                          f"record's {written} (the sound bank has changed since the record was written)")
    return audio


def write_clip(path, audio: np.ndarray, sample_rate: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), to_pcm16(audio), sample_rate, subtype="PCM_16", format="WAV")


# ---- the layout ---------------------------------------------------------------------------------------

def identity(config: SoundscapeConfig, banks: Banks, bank_fingerprint: dict) -> dict:
    """What a set must match to be reused; JSON-normalised, so it compares equal to a read-back manifest."""
    return json.loads(json.dumps({
        "task": "desed", "source": "soundbank", "generator_version": SOUNDSCAPE_VERSION,
        "config": dataclasses.asdict(config), "classes": banks.classes, "banks": bank_fingerprint,
        "skipped": [{"file": f, "reason": r} for f, r in banks.skipped],
    }))


def _write_metadata(root: Path, config: SoundscapeConfig, classes, records: dict[str, list[dict]]) -> list[str]:
    (root / CLASSES_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / CLASSES_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    written = [CLASSES_FILE]
    for plan in SUBSETS:
        clips = records.get(plan.name)
        if not clips:
            continue
        if plan.strong_tsv:
            rows = []
            for r in clips:
                rows += [f"{r['filename']}\t{e['onset']:.3f}\t{e['offset']:.3f}\t{e['label']}"
                         for e in r["events"]] or [f"{r['filename']}\t\t\t"]
            write_tsv(root / plan.strong_tsv, "filename\tonset\toffset\tevent_label", rows)
            written.append(plan.strong_tsv)
        if plan.weak_tsv:
            rows = [f"{r['filename']}\t{','.join(c for c in classes if any(e['label'] == c for e in r['events']))}"
                    for r in clips]
            write_tsv(root / plan.weak_tsv, "filename\tevent_labels", rows)
            written.append(plan.weak_tsv)
        if plan.durations_tsv:
            write_tsv(root / plan.durations_tsv, "filename\tduration",
                      [f"{r['filename']}\t{r['clip_duration']:.3f}" for r in clips])
            written.append(plan.durations_tsv)
    return written


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def generate_soundscapes(fg_dir, bg_dir, out_dir, config: SoundscapeConfig = SoundscapeConfig(),
                         progress: bool = True, force: bool = False) -> Path:
    """Write the DESED layout, `metadata/classes.txt` and `records/` under out_dir; the manifest goes last.

    Same config and banks -> byte-identical files. Without `force`, a folder that already holds
    the set for this config and these banks (by the manifest) is returned as it is.
    """
    validate_config(config)
    fg, bg, root = Path(fg_dir).resolve(), Path(bg_dir).resolve(), Path(out_dir).resolve()
    for name, bank in (("foreground", fg), ("background", bg)):
        if _inside(root, bank) or _inside(bank, root):
            raise ConfigError(f"output folder {str(root)!r} and the {name} folder {str(bank)!r} must not contain "
                              "one another")
    check_replaceable(root)
    banks = load_banks(fg, bg, config.sample_rate, config.trim_db, progress=progress)
    validate_config(config, banks.classes)
    wanted = identity(config, banks, fingerprint(fg, bg))
    if not force and manifest.is_complete(root, wanted):
        return root
    train, held = split_banks(banks, config.eval_fraction, config.seed)

    root.mkdir(parents=True, exist_ok=True)
    start_over(root)
    jobs = [(plan, i) for plan in SUBSETS for i in range(getattr(config, plan.size_field))]
    records: dict[str, list[dict]] = {plan.name: [] for plan in SUBSETS}
    files: dict[str, dict] = {}
    bar = progress_reporter(len(jobs), desc="soundscapes", unit="clip", force=None if progress else False)
    try:
        for plan, index in jobs:
            audio, record = _render(plan_clip(config, train if plan.name in TRAIN_SUBSETS else held, plan, index),
                                    fg, bg)
            wav = f"{plan.audio_dir}/{record['filename']}"
            write_clip(root / wav, audio, config.sample_rate)
            rec = f"{RECORDS_DIR}/{plan.name}/{Path(record['filename']).stem}.json"
            (root / rec).parent.mkdir(parents=True, exist_ok=True)
            (root / rec).write_text(json.dumps(record, indent=1), encoding="utf-8")
            records[plan.name].append(record)
            files[wav] = files[rec] = None
            bar.update()
    finally:
        bar.close()
    for rel in _write_metadata(root, config, banks.classes, records):
        files[rel] = None
    files = {rel: {"size": (root / rel).stat().st_size, "sha256": manifest.sha256_file(root / rel)} for rel in files}
    manifest.write_manifest(root, wanted, files)
    return root


def summarize(root) -> dict:
    """Clips and empty clips per subset, events per class per subset, skipped files: read back from the records."""
    root = Path(root)
    found = manifest.read_manifest(root)
    if found is None:
        raise ConfigError(f"{root}: no {manifest.MANIFEST_NAME}; not a complete soundscape set")
    classes = found["identity"]["classes"]
    out = {"clips": {}, "empty_clips": {}, "events_per_class": {}, "skipped": found["identity"]["skipped"]}
    for rel in sorted(found["files"]):
        if not rel.startswith(RECORDS_DIR + "/"):
            continue
        record = json.loads((root / rel).read_text(encoding="utf-8"))
        name = record["subset"]
        out["clips"][name] = out["clips"].get(name, 0) + 1
        out["empty_clips"][name] = out["empty_clips"].get(name, 0) + (not record["events"])
        per_class = out["events_per_class"].setdefault(name, dict.fromkeys(classes, 0))
        for event in record["events"]:
            per_class[event["label"]] += 1
    return out


def print_summary(summary: dict, file=None) -> None:
    """A few human lines: clips per subset, events per class, skipped files."""
    file = sys.stderr if file is None else file
    for name, n in summary["clips"].items():
        counts = ", ".join(f"{c} {k}" for c, k in summary["events_per_class"][name].items())
        print(f"{name}: {n} clips ({summary['empty_clips'][name]} without events); events: {counts}", file=file)
    for item in summary["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}", file=file)
