"""Train, predict with, export or scale one experiment.

    python experiments/run.py --list
    python experiments/run.py --exp=pmam                                  # train (resumes by itself)
    python experiments/run.py --exp=crnn --preset=paper --workdir=/tmp/w --config.stages.train.lr=3e-4
    python experiments/run.py --exp=pmam --mode=predict --input FILE_OR_DIR ... --out DIR
    python experiments/run.py --exp=geco --mode=predict --input DIR [--machine fan/id_00]   # scores.csv
    python experiments/run.py --exp=rsic_kd --mode=predict --input IMAGES_DIR   # predictions.csv
    python experiments/run.py --exp=paraformer --mode=predict --input DIR [--max_seconds 30]   # transcripts.tsv/.jsonl
    python experiments/run.py --exp=pmam --mode=export [--formats float32,int8]
    python experiments/run.py --exp=pmam --mode=scale --simulate 8 --devices 1,2,4,8

Predict and export read the trained workdir (``--workdir``, default ``workdirs/<exp>``) and its
config.json; overrides and presets apply to training and scaling only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import registry  # noqa: E402
from experiments.overrides import apply_overrides  # noqa: E402
from jaxaudio.errors import ConfigError, JaxAudioError  # noqa: E402

MODES = ("train", "predict", "export", "scale")
ALL_FORMATS = "float32,float16,int8_dynamic,int8"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", default=None, help="experiment name (see --list)")
    parser.add_argument("--mode", default="train", choices=MODES)
    parser.add_argument("--preset", default="tiny", help="config preset: smoke, tiny (laptop CPU) or paper")
    parser.add_argument("--workdir", default=None, help="checkpoints, metrics and plots (default workdirs/<exp>)")
    parser.add_argument("--data_dir", default=None, help="a DESED-layout folder; default: the built-in synthetic set")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    predict = parser.add_argument_group("--mode=predict")
    predict.add_argument("--input", nargs="+", default=None, help="audio (or image) files and/or folders")
    predict.add_argument("--out", default=None,
                         help="output folder (default WORKDIR/predictions; export: WORKDIR/export)")
    predict.add_argument("--plots", type=int, default=5, help="timeline PNGs for the first N files")
    predict.add_argument("--overlap", type=float, default=0.5, help="window overlap for files longer than a clip")
    predict.add_argument("--machine", default=None, metavar="TYPE/id_XX",
                         help="anomalous sound detection: the machine every input is from (default: from each "
                              "path, .../<type>/.../*id_XX*.wav)")
    predict.add_argument("--max_seconds", type=float, default=None,
                         help="speech recognition: refuse files longer than this (default 30; each file is "
                              "transcribed whole, in one pass)")
    export = parser.add_argument_group("--mode=export (needs the 'export' extra)")
    export.add_argument("--formats", default=ALL_FORMATS)
    export.add_argument("--export", nargs="?", const=ALL_FORMATS, default=None, metavar="FORMATS",
                        help="same as --mode=export --formats FORMATS")
    export.add_argument("--calibration-clips", type=int, default=32)
    export.add_argument("--eval-clips", type=int, default=0, help="held-out clips to verify on (0: all)")
    export.add_argument("--threads", default="1,2")
    export.add_argument("--runs", type=int, default=20)
    scale = parser.add_argument_group("--mode=scale")
    scale.add_argument("--case", default=None, help="the system's scaling case (default: its first)")
    scale.add_argument("--devices", default="1,2,4,8")
    scale.add_argument("--strategies", default="dp,fsdp,dp_fsdp")
    scale.add_argument("--accelerators", default="v4,v5e,v5p,v6e,h100,h200")
    scale.add_argument("--mfu", type=float, default=0.5)
    scale.add_argument("--time-steps", type=int, default=None)
    scale.add_argument("--simulate", type=int, default=0, help="CPU only: this many simulated host devices")
    scale.add_argument("--fast-compile", action="store_true")
    scale.add_argument("--results", default="benchmarks/results", help="where scaling results go")
    args, rest = parser.parse_known_args(argv)
    if args.export is not None:
        args.mode, args.formats = "export", args.export
    overrides = {}
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognised argument {item!r} (overrides look like --config.stages.train.lr=3e-4)")
        key, sep, value = item[len("--config."):].partition("=")
        if not sep:
            parser.error(f"override {item!r} needs a value: --config.{key}=VALUE")
        overrides[key] = value
    return args, overrides


def trained(args, name: str):
    """(system, config) of the trained workdir; its experiment must be the one asked for."""
    from jaxaudio.train import run_record

    recorded, _, config = run_record.load(args.workdir)
    if args.exp is not None and recorded != name:
        raise ConfigError(f"--workdir {args.workdir} holds a {recorded!r} run, not {name!r}")
    return registry.load(recorded), config


def train(args, name, overrides) -> dict:
    import jax

    from jaxaudio.train import distributed, run_record, trainer

    system = registry.load(name)
    config = registry.load_config(name, args.preset)
    if args.data_dir is not None:
        if not os.path.isdir(args.data_dir):
            raise ConfigError(f"--data_dir {args.data_dir!r}: no such folder (a DESED-layout data root: audio/, "
                              "metadata/); nothing was written")
        overrides.setdefault("data.data_dir", args.data_dir)
    apply_overrides(config, overrides)
    if system.finalize_config is not None:
        system.finalize_config(config)
    if args.print_config:
        print(config)
        return {}
    distributed.maybe_initialize()  # before the first jax call, which would fix a single-process backend
    primary = jax.process_index() == 0
    if primary:
        run_record.begin(args.workdir, name, args.preset, config)  # what ran, for predict and export
    try:
        return trainer.run(system, config, args.workdir)
    except BaseException:
        # A run that never reached training leaves no workdir that looks like a trained one.
        if primary and run_record.abandon(args.workdir):
            print(f"{args.workdir}: removed (the run stopped before training started)", file=sys.stderr)
        raise


def predict(args, name) -> dict:
    """Score the user's files: SED systems write score tables and events, ASD systems scores.csv,
    classifiers predictions.csv, speech recognisers transcripts.tsv and transcripts.jsonl."""
    if not args.input:
        raise ConfigError("--mode=predict needs --input FILE_OR_DIR [...]")
    system, config = trained(args, name)
    if system.predictor is None:
        raise ConfigError(f"{system.name} has no predictor for --mode=predict")
    if system.task not in ("sed", "asd", "classification", "asr"):
        raise ConfigError(f"{system.name}: --mode=predict knows the tasks 'sed', 'asd', 'classification' and 'asr', "
                          f"not {system.task!r}")
    if args.machine is not None and system.task != "asd":
        raise ConfigError(f"--machine applies to anomalous sound detection systems; {system.name} is a "
                          f"{system.task!r} system")
    if args.max_seconds is not None and system.task != "asr":
        raise ConfigError(f"--max_seconds applies to speech recognition systems; {system.name} is a "
                          f"{system.task!r} system")
    if args.max_seconds is not None and not 0 < args.max_seconds < float("inf"):
        raise ConfigError(f"--max_seconds must be a positive number of seconds, got {args.max_seconds:g}")
    predictor, source = system.predictor(config, args.workdir)
    out = args.out or os.path.join(args.workdir, "predictions")
    print(f"{system.name}: {source}", file=sys.stderr)
    if system.task == "asd":
        from jaxaudio.predict.asd import predict_files as predict_asd

        summary = predict_asd(predictor, args.input, out, machine=args.machine)
    elif system.task == "classification":
        from jaxaudio.predict.images import predict_files as predict_images

        summary = predict_images(predictor, args.input, out)
    elif system.task == "asr":
        from jaxaudio.predict.asr import DEFAULT_MAX_SECONDS
        from jaxaudio.predict.asr import predict_files as predict_asr

        max_seconds = DEFAULT_MAX_SECONDS if args.max_seconds is None else args.max_seconds
        summary = predict_asr(predictor, args.input, out, max_seconds=max_seconds)
    else:
        from jaxaudio.predict.sed import predict_files

        summary = predict_files(predictor, args.input, out, overlap=args.overlap, plots=args.plots)
    summary["model"] = source
    return summary


def export(args, name) -> dict:
    from jaxaudio.export import export_workdir, parse_formats

    parse_formats(args.formats)  # a misspelt format fails before the workdir is read
    system, config = trained(args, name)
    if system.inference_model is None:
        raise ConfigError(f"{system.name} cannot be exported: its System has no inference_model")
    model = system.inference_model(config, args.workdir, export=True)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    report = export_workdir(model, args.out or os.path.join(args.workdir, "export"), args.formats,
                            calibration_clips=args.calibration_clips, eval_clips=args.eval_clips, threads=threads,
                            runs=args.runs)
    return {"report_paths": report.get("report_paths"), "recommendation": report.get("recommendation")}


def scale(args, name) -> dict:
    from jaxaudio.scaling.cli import run_cli

    system = registry.load(name)
    if system.scaling_cases is None:
        raise ConfigError(f"{system.name} has no scaling case")
    cases = system.scaling_cases(args.preset)
    case_name = args.case or next(iter(cases))
    if case_name not in cases:
        raise ConfigError(f"--case: {system.name} has no scaling case {case_name!r}; cases: {', '.join(cases)}")
    return run_cli(cases[case_name](), args, name=f"scaling_{case_name}_{args.preset}")  # built only when asked


def main(argv=None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name in sorted(registry.SYSTEMS):
            default = " (default)" if name == registry.DEFAULT else ""
            print(f"{name:12s} {registry.load(name).description}{default}")
        return 0
    name = args.exp or registry.DEFAULT
    args.workdir = args.workdir or os.path.join("workdirs", name)
    if args.simulate:  # before JAX starts: it reads XLA_FLAGS once
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.simulate}".strip()
    from jaxaudio.train.loop import Preempted

    try:
        if overrides and args.mode in ("predict", "export"):
            raise ConfigError(f"--mode={args.mode} reads the trained run's config.json; --config overrides do not "
                              "apply")
        result = {"train": lambda: train(args, name, overrides), "predict": lambda: predict(args, name),
                  "export": lambda: export(args, name), "scale": lambda: scale(args, name)}[args.mode]()
    except Preempted as err:
        print(f"{err}; run the same command again to resume", file=sys.stderr)
        return err.exit_code
    except JaxAudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.mode == "predict" and result.get("failed"):
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        print(f"error: {len(result['failed'])} of {result['files']} file(s) could not be read or scored; see "
              "above", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
