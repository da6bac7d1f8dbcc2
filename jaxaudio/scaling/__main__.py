"""Command line for the scaling study of the library's own cases (``vit``).

    python -m jaxaudio.scaling --exp vit --devices 1,2,4,8 --strategies dp,fsdp,dp_fsdp \
        [--preset tiny] [--out benchmarks/results] [--accelerators v4,v5e,v5p,v6e,h100,h200] [--fast-compile]

An experiment's cases run through its System: ``python experiments/run.py --exp=pmam
--mode=scale --simulate 8`` (same options).

On a CPU-only machine pass ``--simulate 8`` (or set
``XLA_FLAGS=--xla_force_host_platform_device_count=8``) to get 8 simulated devices; the
programs are compiled for them, nothing is timed. On TPU/GPU the steps are also timed.
"""
from __future__ import annotations

import argparse
import os
import sys


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxaudio.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--exp", default="vit", help="a library case (jaxaudio.scaling.study.CASES)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--devices", default="1,2,4,8", type=_ints)
    p.add_argument("--strategies", default="dp,fsdp,dp_fsdp", type=_names)
    p.add_argument("--accelerators", default="v4,v5e,v5p,v6e,h100,h200", type=_names)
    p.add_argument("--mfu", default=0.5, type=float, help="assumed model-FLOPs utilisation for predictions")
    p.add_argument("--time-steps", default=None, type=int,
                   help="steps to time per mesh (default: 10 on TPU/GPU, 0 on CPU)")
    p.add_argument("--simulate", default=0, type=int, help="CPU only: force this many simulated host devices")
    p.add_argument("--fast-compile", action="store_true",
                   help="CPU: skip LLVM's costly passes (same optimized HLO and figures; compile_s not comparable)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default=None, help="file stem (default scaling_<exp>_<preset>)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.simulate:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.simulate}".strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from jaxaudio.scaling import report, study  # after XLA_FLAGS: importing jax reads them

    result = study.run_study(args.exp, args.devices, args.strategies, preset=args.preset,
                             accelerator_names=args.accelerators, mfu=args.mfu, time_steps=args.time_steps,
                             compiler_options=study.FAST_CPU_COMPILE if args.fast_compile else None,
                             log=lambda s: print(s, file=sys.stderr, flush=True))
    paths = report.write(result, args.out, args.name or f"scaling_{args.exp}_{args.preset}")
    print(report.markdown_table(result))
    for kind, path in paths.items():
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
