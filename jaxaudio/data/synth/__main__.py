"""Generate a built-in synthetic data set.

    python -m jaxaudio.data.synth --task desed --out DIR [--seed N] [--preset default|small]

Reuses DIR when it already holds the same set (see cache.ensure_dataset); --force regenerates.
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
from jaxaudio.data.synth.stats import event_statistics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxaudio.data.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["desed"], required=True)
    parser.add_argument("--out", required=True, help="output folder (the data root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)

    config = dataclasses.replace(PRESETS[args.preset], seed=args.seed)
    out = Path(args.out)
    start = time.perf_counter()
    root = ensure_dataset(out, config, progress=not args.quiet, workers=args.workers, force=args.force)
    if not args.quiet:
        print(f"DESED-layout set at {root} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
        print(json.dumps(event_statistics(root), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
