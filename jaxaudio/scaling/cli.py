"""Run a scaling study for a given Case and write its report: what ``run.py --mode=scale`` calls.

Why here and not in ``__main__``: the experiment's cases live with the experiments, so the
library only takes a ``Case``; ``python -m jaxaudio.scaling`` keeps the library's own cases.
"""
from __future__ import annotations

import sys


def _ints(text) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()] if not isinstance(text, list) else text


def _names(text) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()] if not isinstance(text, list) else text


def run_cli(case, args, *, name: str) -> dict:
    """``args``: devices, strategies, accelerators, mfu, time_steps, fast_compile, preset and
    results (the output folder). Returns the report paths and the result's headline."""
    from jaxaudio.scaling import report, study  # imports jax: after XLA_FLAGS are set

    result = study.run_study(case.name, _ints(args.devices), _names(args.strategies), preset=args.preset, case=case,
                             accelerator_names=_names(args.accelerators), mfu=args.mfu, time_steps=args.time_steps,
                             compiler_options=study.FAST_CPU_COMPILE if args.fast_compile else None,
                             log=lambda s: print(s, file=sys.stderr, flush=True))
    paths = report.write(result, args.results, name)
    print(report.markdown_table(result), file=sys.stderr)
    return {"case": case.name, "points": len(result["points"]), "report_paths": {k: str(v) for k, v in paths.items()}}
