"""The built-in speech corpus: espeak-ng voices reading digit strings, times, dates and commands in
English and Mandarin, in rooms with noise and reverberation.

    <out>/wav/{train,dev,test}/<speaker>/<utterance>.wav    16 kHz mono 16-bit PCM
    <out>/{train,dev,test}.jsonl     path, text, speaker, language, kind, voice settings per row
    <out>/synth_manifest.json        written last: the config, the generator version, file sizes

Why held-out voices: a recogniser that only has to recognise the voices it trained on learns
little about speech. Every speaker is an espeak voice (an English accent, or Mandarin) with a
variant (espeak's formant and pitch profiles: m1..m8, f1..f5, named ones); dev and test speak
with variants that training never hears, so their CER measures generalisation to new voices.
Speed and pitch are drawn per utterance, and so are the room (reverberation: RT60, direct-to-
reverberant ratio), the background (``backgrounds.make_background``) and its SNR.

Texts come from ``speech_texts.py``; the manifests are the generic ones ``data/speech.read_manifest``
reads, so the built-in corpus goes through the same reader as a user's. An utterance is a
function of (seed, split, index) alone, so the corpus is byte-identical whatever the number of
worker processes (espeak's own noise generator is seeded too, ``espeak.synthesize(seed=)``).

    python -m jaxaudio.data.synth.speech --out DIR --preset tiny
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import scipy.signal as sps
import soundfile as sf

from jaxaudio.data.synth import dsp, espeak, manifest
from jaxaudio.data.synth.backgrounds import make_background
from jaxaudio.data.synth.cache import ensure_generated
from jaxaudio.data.synth.parallel import render_all, start_over
from jaxaudio.data.synth.speech_texts import KINDS, LANGUAGES, sentence
from jaxaudio.errors import ConfigError

# Bump when a change to the generator changes its output: cached sets then regenerate.
GENERATOR_VERSION = 1
SPLITS = ("train", "dev", "test")
PEAK = 0.89  # headroom for 16-bit without clipping
# espeak voices per language: the English accents espeak has rules for, and Mandarin's one voice
VOICES = {"en": ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp"), "zh": ("cmn",)}
# Human-sounding espeak variants ('' is the voice's own); the robotic, whispered and croaking ones are left out.
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m6", "f1", "f2", "f4", "Andy", "Annie", "belinda", "david", "ed",
                  "linda", "max", "paul", "steph", "zac")
DEV_VARIANTS = ("m5", "f3", "benjamin")
TEST_VARIANTS = ("m7", "f5", "travis", "aunty")


@dataclass(frozen=True)
class SpeechSynthConfig:
    """What to generate; counts are utterances per split, spread evenly over the languages."""

    seed: int = 0
    sample_rate: int = 16000
    languages: tuple[str, ...] = LANGUAGES
    kinds: tuple[str, ...] = KINDS
    n_train: int = 4000
    n_dev: int = 200
    n_test: int = 400
    train_variants: tuple[str, ...] = TRAIN_VARIANTS
    dev_variants: tuple[str, ...] = DEV_VARIANTS
    test_variants: tuple[str, ...] = TEST_VARIANTS
    speed_wpm: tuple[float, float] = (140.0, 200.0)   # espeak words per minute, uniform
    pitch: tuple[float, float] = (30.0, 70.0)         # espeak pitch 0-100 (50: the voice's own), uniform
    snr_db: tuple[float, float] = (10.0, 30.0)        # speech RMS re background RMS, uniform
    reverb_probability: float = 0.6
    rt60_s: tuple[float, float] = (0.2, 0.7)
    drr_db: tuple[float, float] = (2.0, 12.0)
    level_dbfs: float = -24.0          # speech RMS before the background, +- level_spread_db
    level_spread_db: float = 3.0
    pad_s: tuple[float, float] = (0.1, 0.4)  # silence (background only) before and after the speech


TINY = SpeechSynthConfig()
SMOKE = SpeechSynthConfig(n_train=48, n_dev=8, n_test=8, kinds=("digits",), reverb_probability=0.0,
                          snr_db=(25.0, 35.0))
PRESETS = {"smoke": SMOKE, "tiny": TINY}


def validate_config(config: SpeechSynthConfig) -> None:
    def bad(key, problem):
        raise ConfigError(f"SpeechSynthConfig.{key}: {problem}")

    for lang in config.languages:
        if lang not in LANGUAGES:
            bad("languages", f"unknown language {lang!r}; known: {', '.join(LANGUAGES)}")
    if not config.languages:
        bad("languages", "empty")
    for kind in config.kinds:
        if kind not in KINDS:
            bad("kinds", f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if not config.kinds:
        bad("kinds", "empty")
    for key in ("n_train", "n_dev", "n_test"):
        if getattr(config, key) < 1:
            bad(key, f"{getattr(config, key)}; expected >= 1")
    known = set(espeak.list_variants()) | {""}
    splits = [config.train_variants, config.dev_variants, config.test_variants]
    for key, variants in zip(("train_variants", "dev_variants", "test_variants"), splits):
        if not variants:
            bad(key, "empty")
        unknown = [v for v in variants if v not in known]
        if unknown:
            bad(key, f"espeak has no variant {unknown[0]!r}")
    if set(config.train_variants) & (set(config.dev_variants) | set(config.test_variants)):
        bad("train_variants", "shares a variant with dev or test: their voices would not be held out")
    for key in ("speed_wpm", "pitch", "snr_db", "rt60_s", "drr_db", "pad_s"):
        lo, hi = getattr(config, key)
        if lo > hi:
            bad(key, f"({lo}, {hi}): low above high")
    if not 0.0 <= config.reverb_probability <= 1.0:
        bad("reverb_probability", f"{config.reverb_probability}; expected in [0, 1]")


def variants_of(config: SpeechSynthConfig, split: str) -> tuple[str, ...]:
    return {"train": config.train_variants, "dev": config.dev_variants, "test": config.test_variants}[split]


def speaker_name(voice: str, variant: str) -> str:
    """A folder name for (voice, variant): "en-gb_m3", "cmn_f2", "en-us" (no variant)."""
    return voice + (f"_{variant}" if variant else "")


def draw_utterance(config: SpeechSynthConfig, split: str, index: int) -> dict:
    """Everything about one utterance but its samples: text, voice and settings, room and noise seeds."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    language = config.languages[index % len(config.languages)]
    kind = config.kinds[int(rng.integers(len(config.kinds)))]
    voice = VOICES[language][int(rng.integers(len(VOICES[language])))]
    variants = variants_of(config, split)
    variant = variants[int(rng.integers(len(variants)))]

    def uniform(key):
        lo, hi = getattr(config, key)
        return float(rng.uniform(lo, hi))

    return {"id": f"{split}_{index:06d}", "language": language, "kind": kind, "text": sentence(rng, language, kind),
            "voice": voice, "variant": variant, "speaker": speaker_name(voice, variant),
            "speed_wpm": round(uniform("speed_wpm")), "pitch": round(uniform("pitch")),
            "snr_db": round(uniform("snr_db"), 2), "reverb": bool(rng.random() < config.reverb_probability),
            "rt60_s": round(uniform("rt60_s"), 3), "drr_db": round(uniform("drr_db"), 2),
            "level_dbfs": round(config.level_dbfs + float(rng.uniform(-1, 1)) * config.level_spread_db, 2),
            "pad_s": (round(uniform("pad_s"), 3), round(uniform("pad_s"), 3)),
            "room_seed": int(rng.integers(2**31))}


def _speak(spec: dict, sample_rate: int) -> np.ndarray:
    settings = dict(speed_wpm=spec["speed_wpm"], pitch=spec["pitch"], seed=spec["room_seed"])
    if spec["language"] == "zh":
        wav, rate = espeak.synthesize_mandarin(spec["text"], spec["variant"], **settings)
    else:
        wav, rate = espeak.synthesize(spec["text"], spec["voice"] + (f"+{spec['variant']}" if spec["variant"] else ""),
                                      **settings)
    g = gcd(sample_rate, rate)
    return sps.resample_poly(wav.astype(np.float64), sample_rate // g, rate // g)


def render_utterance(config: SpeechSynthConfig, spec: dict) -> np.ndarray:
    """(samples,) float in [-1, 1]: the voice, padded with silence, in its room, over its background."""
    rng = np.random.default_rng(spec["room_seed"])
    sr = config.sample_rate
    speech = dsp.trim(_speak(spec, sr), sr)
    before, after = (int(p * sr) for p in spec["pad_s"])
    dry = np.concatenate([np.zeros(before), speech, np.zeros(after)])
    if spec["reverb"]:
        wet = dsp.reverberate(dry, dsp.reverb_tail(rng, sr, spec["rt60_s"]), spec["drr_db"], length=len(dry))
    else:
        wet = dry
    level = 10.0 ** (spec["level_dbfs"] / 20.0)
    wet = wet * level / max(dsp.rms(wet[before:before + len(speech)]), 1e-9)  # speech RMS at its level
    noise = make_background(rng, len(wet), sr) * level * 10.0 ** (-spec["snr_db"] / 20.0)
    out = wet + noise
    peak = np.max(np.abs(out))
    return out * (PEAK / peak) if peak > PEAK else out


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def wav_path(split: str, spec: dict) -> str:
    return f"wav/{split}/{spec['speaker']}/{spec['id']}.wav"


def _render_and_write(job):
    """Worker: one utterance to disk; its manifest row and file facts."""
    config, root, split, index = job
    spec = draw_utterance(config, split, index)
    rel = wav_path(split, spec)
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = to_pcm16(render_utterance(config, spec))
    sf.write(path, audio, config.sample_rate, subtype="PCM_16", format="WAV")
    row = {"path": rel, "text": spec["text"], "speaker": spec["speaker"],
           **{k: spec[k] for k in ("id", "language", "kind", "voice", "variant", "speed_wpm", "pitch", "snr_db",
                                   "reverb", "rt60_s", "drr_db")},
           "seconds": round(len(audio) / config.sample_rate, 3)}
    return split, row, rel, {"size": path.stat().st_size, "sha256": manifest.sha256_file(path)}


def counts(config: SpeechSynthConfig) -> dict[str, int]:
    return {"train": config.n_train, "dev": config.n_dev, "test": config.n_test}


def identity(config: SpeechSynthConfig) -> dict:
    """What a cached set must match to be reused (as JSON reads it back), espeak's version included:
    another espeak may say the same text otherwise."""
    return json.loads(json.dumps({"task": "speech", "generator_version": GENERATOR_VERSION,
                                  "espeak": espeak.version(), "config": dataclasses.asdict(config)}))


def generate(out_dir, config: SpeechSynthConfig = TINY, progress: bool = True, workers: int | None = None) -> Path:
    """Write the whole corpus under out_dir (returned); the manifest goes last. Same config ->
    byte-identical files, whatever ``workers`` is."""
    validate_config(config)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    start_over(root)
    jobs = [(config, str(root), split, i) for split, n in counts(config).items() for i in range(n)]
    rows: dict[str, list] = {split: [] for split in SPLITS}
    files = {}
    for split, row, rel, info in render_all(_render_and_write, jobs, workers=workers, desc="synth speech",
                                            unit="utt", progress=progress):
        rows[split].append(row)
        files[rel] = info
    for split in SPLITS:
        path = root / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[split]), encoding="utf-8")
        files[path.name] = {"size": path.stat().st_size, "sha256": manifest.sha256_file(path)}
    manifest.write_manifest(root, identity(config), files)
    return root


def ensure_dataset(data_dir, config: SpeechSynthConfig = TINY, progress: bool = True, workers: int | None = None,
                   verify_hashes: bool = False, force: bool = False) -> Path:
    """``data_dir`` holding a complete corpus for ``config``, generated if missing or different
    (``cache.ensure_generated``: an interrupted generation never looks complete)."""
    validate_config(config)
    return ensure_generated(data_dir, identity(config),
                            lambda out: generate(out, config, progress=progress, workers=workers),
                            verify_hashes=verify_hashes, force=force)


def summary(root: Path) -> str:
    lines = []
    for split in SPLITS:
        rows = [json.loads(line) for line in (Path(root) / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        hours = sum(r["seconds"] for r in rows) / 3600
        speakers = sorted({r["speaker"] for r in rows})
        lines.append(f"  {split}: {len(rows)} utterances, {hours:.2f} h, {len(speakers)} speakers")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxaudio.data.synth.speech", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (manifests and wav/ go inside)")
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
        print(f"speech corpus at {root} ({time.perf_counter() - start:.1f} s)\n{summary(root)}", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    """main() for the shell (``cli.run_cli``)."""
    from jaxaudio.data.synth.cli import run_cli

    return run_cli(main, argv)


if __name__ == "__main__":
    from jaxaudio.data.synth.speech import cli as _cli  # the importable module, so spawned workers find it

    sys.exit(_cli())
