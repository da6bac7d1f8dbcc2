"""Run one experiment end to end.

    python experiments/run.py --list
    python experiments/run.py --exp=crnn
    python experiments/run.py --exp=crnn --preset=paper --workdir=/tmp/w --config.train.lr=3e-4

A run with the same workdir resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import configs as registry  # noqa: E402
from experiments.overrides import apply_overrides  # noqa: E402
from jaxaudio.errors import JaxAudioError  # noqa: E402
from jaxaudio.train.loop import Preempted  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", default=None, help="experiment name (see --list)")
    parser.add_argument("--preset", default="tiny", help="config preset: tiny (laptop CPU) or paper")
    parser.add_argument("--workdir", default=None, help="where checkpoints, metrics and plots go (default workdirs/<exp>)")
    parser.add_argument("--data_dir", default=None, help="a DESED-layout folder; default: the built-in synthetic set")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--export", nargs="?", const="float32,float16,int8_dynamic,int8", default=None,
                        metavar="FORMATS", help="export the trained workdir to TFLite (needs the 'export' extra)")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognised argument {item!r} (overrides look like --config.train.lr=3e-4)")
        key, sep, value = item[len("--config."):].partition("=")
        if not sep:
            parser.error(f"override {item!r} needs a value: --config.{key}=VALUE")
        overrides[key] = value
    return args, overrides


def save_run_config(workdir: str, name: str, preset: str, config) -> None:
    """Record what ran, so export and evaluation can rebuild the model from the workdir alone."""
    from jaxaudio.io import paths  # local folder or gs:// workdir

    paths.makedirs(workdir)
    record = {"exp": name, "preset": preset, "config": json.loads(config.to_json())}
    paths.write_text_atomic(paths.join(workdir, "config.json"), json.dumps(record, indent=2))


def main(argv=None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, (_, _, description) in sorted(registry.EXPERIMENTS.items()):
            default = " (default)" if name == registry.DEFAULT_EXPERIMENT else ""
            print(f"{name:12s} {description}{default}")
        return 0
    name = args.exp or registry.DEFAULT_EXPERIMENT
    try:
        if name is None:
            raise JaxAudioError("no --exp given and no default experiment registered; see --list")
        config = registry.load_config(name, args.preset)
        if args.data_dir is not None:
            overrides.setdefault("data.data_dir", args.data_dir)
        apply_overrides(config, overrides)
        if args.print_config:
            print(config)
            return 0
        workdir = args.workdir or os.path.join("workdirs", name)
        if args.export:
            from jaxaudio.export import export_workdir  # TensorFlow only when exporting

            report = export_workdir(workdir, args.export)
            print(json.dumps(report.get("report_paths", {}), indent=2))
            return 0
        save_run_config(workdir, name, args.preset, config)
        metrics = registry.load_runner(name).run(config, workdir)
    except Preempted as err:
        print(f"preempted: {err}; run the same command again to resume", file=sys.stderr)
        return err.exit_code
    except JaxAudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
