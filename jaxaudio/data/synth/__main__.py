"""Generate a built-in synthetic data set, or soundscapes from your own sound banks.

    python -m jaxaudio.data.synth --task desed --out DIR [--seed N] [--preset default|small]
    python -m jaxaudio.data.synth --task desed --foreground FG_DIR --background BG_DIR --out DIR [--seed N] [...]
    python -m jaxaudio.data.synth --regenerate RECORD.json --foreground FG_DIR --background BG_DIR --out FILE.wav

The first reuses DIR when it already holds the same set (see cache.ensure_dataset); so does the
second when its manifest matches the config and the banks; --force regenerates. FG_DIR holds
one folder of isolated events per class, BG_DIR background ambiences (see soundscape.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from jaxaudio.data.synth.cache import ensure_dataset
from jaxaudio.data.synth.desed import PRESETS
from jaxaudio.data.synth.soundscape import (SoundscapeConfig, generate_soundscapes, print_summary, render_record,
                                            summarize, write_clip)
from jaxaudio.data.synth.stats import event_statistics

# SoundscapeConfig fields offered as --flags (seed is --seed); a None or tuple default is a LO HI range.
BANK_OPTIONS = {
    "sample_rate": "output sample rate in Hz (default 16000)",
    "clip_seconds": "clip length (default 10)",
    "n_strong": "synthetic_train clips (strong labels; default 200)",
    "n_weak": "weak clips (default 100)",
    "n_unlabeled": "unlabeled clips (default 200)",
    "n_validation": "validation clips (0, or at least the number of classes; default 60)",
    "n_eval": "eval clips (0, or at least the number of classes; default 60)",
    "min_events": "fewest events per clip (default 1)",
    "max_events": "most events per clip (default 3)",
    "empty_fraction": "share of event-free clips in unlabeled, validation and eval (default 0.1)",
    "event_seconds": "event duration range, clamped to the source (default 0.25 10)",
    "snr_db": "event RMS re background RMS, in dB (default 0 20)",
    "background_dbfs": "background RMS level range in dBFS (default -45 -30)",
    "pitch_shift": "pitch shift range in semitones (default off)",
    "time_stretch": "time stretch factor range, 2 = twice as long (default off)",
    "eval_fraction": "share of each class's and the backgrounds' files kept for validation/eval (default 0.3)",
    "same_class_gap_seconds": "least gap between two events of one class (default 0.2)",
    "fade_seconds": "fade in/out of each event (default 0.01)",
    "trim_db": "foreground silence threshold re the loudest frame, in dB (default -40)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jaxaudio.data.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["desed"], help="required, except with --regenerate")
    parser.add_argument("--out", required=True, help="output folder (the data root); with --regenerate, the wav")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="built-in generator only (default: default)")
    parser.add_argument("--workers", type=int, default=None,
                        help="built-in generator only: processes (default: CPU count, at most 8)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    banks = parser.add_argument_group("soundscapes from sound banks")
    banks.add_argument("--foreground", help="FG_DIR: <class>/*.wav|flac|ogg, isolated events")
    banks.add_argument("--background", help="BG_DIR: background ambiences (any audio file under it)")
    banks.add_argument("--regenerate", metavar="RECORD.json", help="re-render one clip from its record to --out")
    defaults = SoundscapeConfig()
    for name, help_text in BANK_OPTIONS.items():
        default = getattr(defaults, name)
        flag = "--" + name.replace("_", "-")
        if default is None or isinstance(default, tuple):
            banks.add_argument(flag, type=float, nargs=2, metavar=("LO", "HI"), default=None, help=help_text)
        else:
            banks.add_argument(flag, type=type(default), default=None, metavar="N" if isinstance(default, int) else "X",
                               help=help_text)
    return parser


def _from_banks(parser, args) -> int:
    if not (args.foreground and args.background):
        parser.error("--foreground and --background go together")
    for flag in ("preset", "workers"):
        if getattr(args, flag) is not None:
            parser.error(f"--{flag} applies to the built-in generator only, not with --foreground")
    chosen = {name: getattr(args, name) for name in BANK_OPTIONS if getattr(args, name) is not None}
    config = SoundscapeConfig(seed=args.seed, **{k: tuple(v) if isinstance(v, list) else v for k, v in chosen.items()})
    start = time.perf_counter()
    root = generate_soundscapes(args.foreground, args.background, args.out, config, progress=not args.quiet,
                                force=args.force)
    if not args.quiet:
        summary = summarize(root)
        print(f"DESED-layout soundscapes at {root} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
        print_summary(summary)
        print(json.dumps(summary, indent=1))
    return 0


def _regenerate(parser, args) -> int:
    if not (args.foreground and args.background):
        parser.error("--regenerate needs --foreground and --background (the banks the record was made from)")
    try:
        record = json.loads(Path(args.regenerate).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        parser.error(f"--regenerate {args.regenerate}: cannot read the record ({err})")
    write_clip(args.out, render_record(record, args.foreground, args.background), int(record["sample_rate"]))
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.regenerate:
        return _regenerate(parser, args)
    if args.task is None:
        parser.error("the following arguments are required: --task")
    if args.foreground or args.background:
        return _from_banks(parser, args)
    given = [f"--{n.replace('_', '-')}" for n in BANK_OPTIONS if getattr(args, n) is not None]
    if given:
        parser.error(f"{', '.join(given)}: only with --foreground and --background")

    config = dataclasses.replace(PRESETS[args.preset or "default"], seed=args.seed)
    out = Path(args.out)
    start = time.perf_counter()
    root = ensure_dataset(out, config, progress=not args.quiet, workers=args.workers, force=args.force)
    if not args.quiet:
        print(f"DESED-layout set at {root} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
        print(json.dumps(event_statistics(root), indent=1))
    return 0


def cli(argv=None) -> int:
    """main() for the shell (``cli.run_cli``)."""
    from jaxaudio.data.synth.cli import run_cli

    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
