"""python -m jaxaudio.export --workdir W [--formats ...] [--out DIR] [--calibration-clips N] [--threads 1,2]"""
from __future__ import annotations

import argparse
import os
import sys

from jaxaudio.errors import JaxAudioError


def parse_args(argv):
    from jaxaudio.export.tflite import FORMATS

    parser = argparse.ArgumentParser(prog="python -m jaxaudio.export", description=__doc__)
    parser.add_argument("--workdir", required=True, help="a trained workdir (config.json + checkpoints/)")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of: {', '.join(FORMATS)}")
    parser.add_argument("--out", default=None, help="output folder (default WORKDIR/export)")
    parser.add_argument("--calibration-clips", type=int, default=32, help="training clips for int8 calibration")
    parser.add_argument("--eval-clips", type=int, default=0, help="held-out clips to verify on (0: all)")
    parser.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,4")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per variant and thread count")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, os.getcwd())  # the experiments package lives at the repository root
    from jaxaudio.export import export_workdir

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
        result = export_workdir(args.workdir, args.formats, args.out, calibration_clips=args.calibration_clips,
                                eval_clips=args.eval_clips, threads=threads, runs=args.runs)
    except JaxAudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {', '.join(result['report_paths'])}")
    print(result["recommendation"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
