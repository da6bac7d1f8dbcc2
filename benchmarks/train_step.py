"""What does one train step cost: compile time, step time, and per-device memory under DP vs FSDP?

Models (``--models``):
  crnn_tiny, crnn_paper  the full mean-teacher step of ``experiments/crnn/system.py`` (log-mel on
                         device, augmentation, student + EMA teacher, its stage's AdamW) at the
                         presets of ``experiments/crnn/config.py``; batch = strong + weak + unlabeled.
  vit_b                  the PaSST-S sized encoder (``PASST_S``: 12 blocks, 768 wide, 12 heads) on
                         128 mel x 998 frames, all 12 blocks, mean over frequency patches and a
                         linear frame-level head with BCE; AdamW, no teacher.

Part 1, on the default device(s) (``jax.devices()``; CPU, GPU or TPU alike): AOT lowering and
compile time (``jitted.lower(...).compile()``, timed apart), steady-state step time (median of
``--repeats`` after warm-up) and examples/s. The baseline is the forward pass of the same model
on the same batch (``make_eval_step``), timed in the same run: ``step / forward`` should be
about 3 (forward + backward) or 4 with a teacher forward, plus the optimizer and EMA.

Part 2, compile only, on 8 devices: per-device memory from the compiled step's
``memory_analysis()`` for data-parallel (8x1), FSDP (1x8) and DP4 x FSDP2, against DP as the
baseline, and against a closed form: every state leaf counts its full bytes where the sharding
rules replicate it and ``bytes / fsdp`` where they split it, plus ``batch bytes / (data*fsdp)``.
With fewer than 8 real devices this runs in a child process with 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before jax is imported).

    python benchmarks/train_step.py                       # all models, CPU-friendly batches
    python benchmarks/train_step.py --quick               # fewer repeats, smaller batches
    python benchmarks/train_step.py --models crnn_paper --repeats 10 --vit-batch 32
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from jaxaudio.data.sed.desed import DESED_CLASSES
from jaxaudio.nn.vit import PASST_S, ViT, ViTConfig, frequency_pool
from jaxaudio.objectives.sed import strong_bce
from jaxaudio.train.mesh import batch_axis_size, batch_sharding, make_mesh
from jaxaudio.train.optim import make_optimizer
from jaxaudio.train.sharding import create_sharded_state, state_shardings, with_shardings
from jaxaudio.train.state import create_train_state
from jaxaudio.train.step import make_eval_step, make_train_step

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_step.json"
MODELS = ("crnn_tiny", "crnn_paper", "vit_b")
MEMORY_MODELS = ("crnn_paper", "vit_b")
LAYOUTS = {"dp8": (8, 1), "fsdp8": (1, 8), "dp4_fsdp2": (4, 2)}  # (data, fsdp); tensor = 1
BASELINE_LAYOUT = "dp8"
MIB = 2.0**20


# ----------------------------------------------------------------------------- cases

@dataclasses.dataclass
class Case:
    """One model's train step, described without building anything on a device yet.

    model_fn builds the model (its own rngs); loss_fn follows ``jaxaudio.train.step.LossFn``;
    predict_fn(model, batch) is the forward pass used as the timing baseline; batch holds
    host numpy arrays whose leading axis is the example axis.
    """

    name: str
    model_fn: Callable[[], nnx.Module]
    loss_fn: Callable
    predict_fn: Callable
    tx: Any
    batch: dict[str, np.ndarray]
    with_teacher: bool = False
    ema_decay: float | None = None
    notes: str = ""

    @property
    def examples(self) -> int:
        return int(next(iter(self.batch.values())).shape[0])


def fit_counts(counts: list[int], multiple_of: int) -> list[int]:
    """Scale every count by the same integer so their sum divides ``multiple_of`` (the batch shards)."""
    total = sum(counts)
    factor = multiple_of // math.gcd(total, multiple_of)
    return [c * factor for c in counts]


def crnn_case(preset: str, batch_scale: float = 1.0, multiple_of: int = 1, clip_seconds: float | None = None,
              seed: int = 0) -> Case:
    """The CRNN mean-teacher step exactly as ``experiments/crnn/system.py`` wires it (its model,
    loss, forward pass, and the optimizer and EMA of its training stage), on random audio."""
    from experiments import registry
    from experiments.crnn import system
    from experiments.sed import augment as sed_augment
    from jaxaudio.train.trainer import stage_optimizer

    config = registry.load_config("crnn", preset)
    config.seed = seed
    if clip_seconds is not None:
        config.data.clip_seconds = clip_seconds
    fe = system.frontend_config(config)
    counts = [max(1, int(round(c * batch_scale))) for c in (config.batch.strong, config.batch.weak,
                                                            config.batch.unlabeled) if c > 0]
    counts = fit_counts(counts, multiple_of)
    segments = sed_augment.batch_segments(counts)
    samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    frames = system.output_frames(config)
    n_classes, total = len(DESED_CLASSES), sum(counts)

    rng = np.random.default_rng(seed)
    has_strong = np.zeros(total, bool)
    has_weak = np.zeros(total, bool)
    has_strong[segments[0][0]:segments[0][1]] = True
    if len(segments) > 1:
        has_weak[segments[1][0]:segments[1][1]] = True
    batch = {
        "audio": (0.1 * rng.standard_normal((total, samples))).astype(np.float32),
        "strong": (rng.random((total, frames, n_classes)) < 0.2).astype(np.float32),
        "weak": (rng.random((total, n_classes)) < 0.3).astype(np.float32),
        "has_strong": has_strong,
        "has_weak": has_weak,
    }
    stage = system.stages(config, "")[0]  # cheap: data is read only when a stage runs
    forward = system.predict(config)

    def predict_fn(model, b):
        return forward(model, b)["strong"]

    return Case(
        name=f"crnn_{preset}",
        model_fn=lambda: system.build_model(config),
        loss_fn=system.loss_fn(config, segments),
        predict_fn=predict_fn,
        tx=stage_optimizer(stage)[0],
        batch=batch,
        with_teacher=stage.has_teacher,
        ema_decay=stage.ema,
        notes=f"strong+weak+unlabeled={'+'.join(map(str, counts))}, {config.data.clip_seconds:g} s clips, "
              f"n_fft {fe.n_fft}, {fe.n_mels} mels",
    )


class ViTFrameTagger(nnx.Module):
    """ViT encoder -> mean over frequency patches -> linear -> sigmoid: ``(batch, T', classes)``."""

    def __init__(self, cfg: ViTConfig, n_classes: int, *, rngs: nnx.Rngs):
        self.vit = ViT(cfg, rngs=rngs)
        self.head = nnx.Linear(cfg.dim, n_classes, rngs=rngs)

    def __call__(self, mel: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        out = self.vit(mel, train=train, rngs=rngs, return_layer=None)  # all blocks, final norm
        n_freq, n_time = self.vit.grid_shape(mel.shape[1], train=train)
        return jax.nn.sigmoid(self.head(frequency_pool(out["patch_tokens"], n_freq, n_time)))


def vit_case(cfg: ViTConfig = PASST_S, batch_size: int = 2, frames: int | None = None, multiple_of: int = 1,
             n_classes: int = len(DESED_CLASSES), seed: int = 0, name: str = "vit_b") -> Case:
    """A plain supervised step of the ViT encoder with a frame-level BCE head on random log-mels."""
    frames = cfg.max_frames if frames is None else frames
    batch_size = fit_counts([batch_size], multiple_of)[0]
    n_time = min(cfg.patches(frames), cfg.time_patches)
    rng = np.random.default_rng(seed)
    batch = {
        "mel": rng.standard_normal((batch_size, frames, cfg.n_mels)).astype(np.float32),
        "strong": (rng.random((batch_size, n_time, n_classes)) < 0.2).astype(np.float32),
    }
    tx = make_optimizer([], {"lr": 1e-4, "weight_decay": 1e-4}, 5.0, 1000)

    def loss_fn(model, b, key, teacher, step):
        pred = model(b["mel"], train=True, rngs=key)
        loss = strong_bce(pred, b["strong"])
        return loss, {"strong_bce": loss}

    return Case(
        name=name,
        model_fn=lambda: ViTFrameTagger(cfg, n_classes, rngs=nnx.Rngs(seed)),
        loss_fn=loss_fn,
        predict_fn=lambda model, b: model(b["mel"], train=False),
        tx=tx,
        batch=batch,
        notes=f"{cfg.depth} blocks x {cfg.dim}, {cfg.n_mels} mel x {frames} frames "
              f"({cfg.freq_patches * n_time} patches)",
    )


def build_case(name: str, args, multiple_of: int) -> Case:
    if name == "crnn_tiny":
        return crnn_case("tiny", args.crnn_batch_scale, multiple_of)
    if name == "crnn_paper":
        return crnn_case("paper", args.crnn_batch_scale, multiple_of)
    if name == "vit_b":
        return vit_case(PASST_S, args.vit_batch, args.vit_frames, multiple_of)
    raise SystemExit(f"--models: unknown model {name!r}; expected some of {MODELS}")


# ----------------------------------------------------------------------------- part 1: timing

def count_params(params) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def time_case(case: Case, mesh, repeats: int, warmup: int = 1, forward_baseline: bool = True) -> dict:
    """Lower, compile and run the train step on ``mesh``; the forward pass is the baseline."""
    bsharding = batch_sharding(mesh)
    graphdef, state, shardings = create_sharded_state(case.model_fn, case.tx, jax.random.key(0), mesh,
                                                      with_teacher=case.with_teacher)
    n_params = count_params(state.params)
    step = make_train_step(graphdef, case.loss_fn, case.tx, state_shardings=shardings, batch_sharding=bsharding,
                           ema_decay=case.ema_decay)
    batch = jax.device_put(case.batch, bsharding)

    start = time.perf_counter()
    lowered = step.lower(state, batch)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start

    def run_step():
        nonlocal state
        state, metrics = compiled(state, batch)
        return jax.block_until_ready(metrics)

    start = time.perf_counter()
    metrics = run_step()
    first_step_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        run_step()
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = run_step()
        step_times.append(time.perf_counter() - start)
    loss = float(np.asarray(metrics["loss"]))
    step_s = statistics.median(step_times)
    result = {
        "model": case.name, "notes": case.notes, "params": n_params, "batch": case.examples,
        "mesh": dict(mesh.shape), "lower_s": lower_s, "compile_s": compile_s, "first_step_s": first_step_s,
        "step_times_s": step_times, "median_step_s": step_s, "examples_per_s": case.examples / step_s,
        "final_loss": loss, "loss_finite": math.isfinite(loss),
    }
    if forward_baseline:
        result.update(time_forward(case, graphdef, state, shardings, bsharding, batch, repeats, warmup))
        result["step_over_forward"] = step_s / result["forward_median_s"]
    return result


def time_forward(case, graphdef, state, shardings, bsharding, batch, repeats, warmup) -> dict:
    """The same model's inference pass on the same batch: compile and median time."""
    forward = make_eval_step(graphdef, case.predict_fn, params_sharding=shardings.params,
                             model_state_sharding=shardings.model_state, batch_sharding=bsharding)
    start = time.perf_counter()
    compiled = forward.lower(state.params, state.model_state, batch).compile()
    compile_s = time.perf_counter() - start
    for _ in range(max(1, warmup)):
        jax.block_until_ready(compiled(state.params, state.model_state, batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state.params, state.model_state, batch))
        times.append(time.perf_counter() - start)
    return {"forward_compile_s": compile_s, "forward_times_s": times, "forward_median_s": statistics.median(times)}


# ----------------------------------------------------------------------------- part 2: memory

def abstract_train_state(case: Case):
    """``(graphdef, TrainState of ShapeDtypeStruct)``: the state's shapes, nothing allocated."""
    box = {}

    def init():
        graphdef, state = create_train_state(case.model_fn(), case.tx, jax.random.key(0),
                                             with_teacher=case.with_teacher)
        box["graphdef"] = graphdef
        return state

    abstract = jax.eval_shape(init)
    return box["graphdef"], abstract


def _nbytes(leaf) -> int:
    return math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize if hasattr(leaf, "shape") else 0


def _key_bytes(leaf) -> int:
    """A typed PRNG key stores its raw uint32 words (2 for threefry) per key."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return math.prod(leaf.shape) * 2 * 4
    return _nbytes(leaf)


def closed_form_bytes(abstract_state, shardings, batch: dict, mesh) -> dict:
    """Per-device argument bytes predicted from leaf sizes: full where replicated, /fsdp where split.

    Only the data/fsdp mesh is used here (tensor = 1): a leaf whose spec mentions 'fsdp'
    holds ``bytes / fsdp`` per device; the batch's rows are split ``data * fsdp`` ways.
    """
    fsdp = mesh.shape["fsdp"]
    parts = {"params": 0, "opt_state": 0, "teacher": 0, "model_state": 0, "other": 0}
    sharded_full = 0
    per_device = 0
    for field in ("step", "params", "model_state", "opt_state", "rng", "teacher"):
        tree, tree_sh = getattr(abstract_state, field), getattr(shardings, field)
        if tree is None:
            continue
        for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(tree_sh)):
            nbytes = _key_bytes(leaf)
            split = any(axis == "fsdp" or (isinstance(axis, tuple) and "fsdp" in axis) for axis in sharding.spec)
            parts[field if field in parts else "other"] += nbytes
            if split:
                sharded_full += nbytes
                per_device += nbytes // fsdp
            else:
                per_device += nbytes
    batch_bytes = sum(v.nbytes for v in batch.values())
    per_device += batch_bytes // batch_axis_size(mesh)
    state_bytes = sum(parts.values())
    return {"state_bytes": state_bytes, "state_parts_bytes": parts, "fsdp_sharded_state_bytes": sharded_full,
            "fsdp_sharded_fraction": sharded_full / state_bytes, "batch_bytes": batch_bytes,
            "expected_argument_bytes_per_device": per_device}


def memory_case(case: Case, data: int, fsdp: int, devices=None) -> dict:
    """Compile (never run) the train step on a ``data x fsdp`` mesh and read its memory analysis."""
    mesh = make_mesh(data=data, fsdp=fsdp, tensor=1, devices=devices)
    graphdef, abstract = abstract_train_state(case)
    shardings = state_shardings(abstract, mesh)
    bsharding = batch_sharding(mesh)
    step = make_train_step(graphdef, case.loss_fn, case.tx, state_shardings=shardings, batch_sharding=bsharding,
                           ema_decay=case.ema_decay)
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsharding) for k, v in case.batch.items()}
    start = time.perf_counter()
    compiled = step.lower(with_shardings(abstract, shardings), abstract_batch).compile()
    compile_s = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    result = {"model": case.name, "mesh": dict(mesh.shape), "batch": case.examples, "compile_s": compile_s,
              **closed_form_bytes(abstract, shardings, case.batch, mesh)}
    if analysis is None:
        result["memory_analysis"] = None
        return result
    result["memory_analysis"] = {
        name: int(getattr(analysis, f"{name}_in_bytes"))
        for name in ("argument_size", "output_size", "temp_size", "generated_code_size", "alias_size")
        if hasattr(analysis, f"{name}_in_bytes")
    }
    measured = result["memory_analysis"]["argument_size"]
    result["measured_over_closed_form"] = measured / result["expected_argument_bytes_per_device"]
    return result


def memory_part(names: list[str], args, devices) -> list[dict]:
    """Every memory model on every layout, with ratios against the DP layout."""
    rows = []
    for name in names:
        case = build_case(name, args_for_memory(args), multiple_of=8)
        base = None
        for layout, (data, fsdp) in LAYOUTS.items():
            print(f"  memory: {name} {layout} ...", flush=True)
            row = {"layout": layout, **memory_case(case, data, fsdp, devices)}
            if layout == BASELINE_LAYOUT:
                base = row
            if base is not None and row["memory_analysis"] and base["memory_analysis"]:
                for key in ("argument_size", "temp_size", "output_size"):
                    row[f"{key}_vs_dp"] = row["memory_analysis"][key] / max(1, base["memory_analysis"][key])
            rows.append(row)
    return rows


def args_for_memory(args):
    """Memory uses the full preset batches (compile only, nothing runs) and ``--vit-memory-batch``."""
    return argparse.Namespace(**{**vars(args), "crnn_batch_scale": 1.0, "vit_batch": args.vit_memory_batch})


def run_memory_child(names: list[str], args) -> dict:
    """Run part 2 in a fresh interpreter with 8 simulated CPU devices; return its JSON."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = str(ROOT)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "memory.json"
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--memory-only", "--memory-models",
               ",".join(names), "--vit-memory-batch", str(args.vit_memory_batch), "--vit-frames",
               str(args.vit_frames), "--out", str(out)]
        subprocess.run(cmd, env=env, check=True, cwd=root)
        return json.loads(out.read_text())


# ----------------------------------------------------------------------------- report

def machine_info() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    devices = jax.devices()
    return {
        "jax_version": jax.__version__, "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "device_count": len(devices), "process_count": jax.process_count(), "python": platform.python_version(),
        "cpu_model": model, "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
    }


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def print_timing(rows: list[dict]) -> None:
    header = (f"{'model':<11} {'params':>10} {'batch':>5} {'lower s':>8} {'compile s':>9} {'step s':>8} "
              f"{'ex/s':>8} {'fwd s':>8} {'step/fwd':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        fwd = f"{r['forward_median_s']:>8.3f}" if "forward_median_s" in r else f"{'-':>8}"
        ratio = f"{r['step_over_forward']:>8.2f}" if "step_over_forward" in r else f"{'-':>8}"
        print(f"{r['model']:<11} {r['params']:>10,} {r['batch']:>5} {r['lower_s']:>8.2f} {r['compile_s']:>9.2f} "
              f"{r['median_step_s']:>8.3f} {r['examples_per_s']:>8.2f} {fwd} {ratio}")


def print_memory(rows: list[dict]) -> None:
    header = (f"{'model':<11} {'layout':<10} {'arg MiB':>9} {'closed MiB':>10} {'meas/cf':>7} {'arg/DP':>7} "
              f"{'out MiB':>8} {'temp MiB':>9} {'temp/DP':>7} {'code MiB':>8} {'alias MiB':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        m = r["memory_analysis"]
        if not m:
            print(f"{r['model']:<11} {r['layout']:<10} (memory_analysis unavailable on this backend)")
            continue
        print(f"{r['model']:<11} {r['layout']:<10} {m['argument_size'] / MIB:>9.2f} "
              f"{r['expected_argument_bytes_per_device'] / MIB:>10.2f} {r['measured_over_closed_form']:>7.3f} "
              f"{r.get('argument_size_vs_dp', float('nan')):>7.3f} {m['output_size'] / MIB:>8.2f} "
              f"{m['temp_size'] / MIB:>9.2f} {r.get('temp_size_vs_dp', float('nan')):>7.3f} "
              f"{m.get('generated_code_size', 0) / MIB:>8.2f} {m.get('alias_size', 0) / MIB:>9.2f}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    parser.add_argument("--memory-models", default=",".join(MEMORY_MODELS),
                        help="models for the 8-device memory part ('' to skip)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5, --quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compile")
    parser.add_argument("--quick", action="store_true", help="2 repeats, quarter CRNN batches, ViT batch 1")
    parser.add_argument("--crnn-batch-scale", type=float, default=None, help="CRNN batch = preset counts x this")
    parser.add_argument("--vit-batch", type=int, default=None, help="ViT batch for timing (default 2, --quick 1)")
    parser.add_argument("--vit-frames", type=int, default=PASST_S.max_frames)
    parser.add_argument("--vit-memory-batch", type=int, default=8, help="ViT batch for the 8-device memory part")
    parser.add_argument("--no-forward-baseline", action="store_true", help="skip the forward-pass baseline")
    parser.add_argument("--memory-only", action="store_true", help="only part 2, on the devices jax sees")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.crnn_batch_scale is None:
        args.crnn_batch_scale = 0.25 if args.quick else 1.0
    if args.vit_batch is None:
        args.vit_batch = 1 if args.quick else 2
    return args


def _names(text: str) -> list[str]:
    return [n for n in (s.strip() for s in text.split(",")) if n]


def main(argv=None) -> dict:
    args = parse_args(argv)
    memory_names = _names(args.memory_models)
    for name in _names(args.models) + memory_names:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; expected some of {MODELS}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    if args.memory_only:
        if len(jax.devices()) < 8:
            raise SystemExit(f"--memory-only needs 8 devices, jax sees {len(jax.devices())}; set XLA_FLAGS="
                             "--xla_force_host_platform_device_count=8 before starting (CPU)")
        report = {"machine": machine_info(), "memory": memory_part(memory_names, args, jax.devices()[:8])}
        out.write_text(json.dumps(report, indent=2) + "\n")
        return report

    report = {
        "question": "train-step compile time, step time, examples/s; per-device memory DP vs FSDP",
        "timing_baseline": "forward pass (make_eval_step) of the same model on the same batch, same run",
        "memory_baseline": f"{BASELINE_LAYOUT} (data-parallel over 8 devices), same run; closed form per layout",
        "machine": machine_info(), "load_average_before": load_average(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    started = time.perf_counter()
    mesh = make_mesh(data=-1, fsdp=1, tensor=1)
    timing = []
    for name in _names(args.models):
        print(f"timing {name} on {len(jax.devices())} x {jax.devices()[0].device_kind} ...", flush=True)
        case = build_case(name, args, multiple_of=batch_axis_size(mesh))
        timing.append(time_case(case, mesh, args.repeats, args.warmup, not args.no_forward_baseline))
    report["load_average_after_timing"] = load_average()
    report["timing"] = timing

    if memory_names:
        if len(jax.devices()) >= 8:
            report["memory_machine"] = report["machine"]
            report["memory"] = memory_part(memory_names, args, jax.devices()[:8])
        else:
            print("memory part: 8 simulated CPU devices in a child process ...", flush=True)
            child = run_memory_child(memory_names, args)
            report["memory_machine"], report["memory"] = child["machine"], child["memory"]
    report["load_average_after"] = load_average()
    report["total_wall_s"] = time.perf_counter() - started

    m = report["machine"]
    print(f"\ntrain step on {m['device_count']} x {m['device_kind']} ({m['backend']}), jax {m['jax_version']}, "
          f"{m['cpu_model']}, {m['usable_cpus']} usable CPUs; load average before "
          f"{report['load_average_before']}, after {report['load_average_after']}")
    print(f"median of {args.repeats} steps after {args.warmup} warm-up; baseline = forward pass of the same model")
    print_timing(timing)
    if memory_names:
        mm = report["memory_machine"]
        print(f"\nper-device memory of the compiled step, {mm['device_count']} x {mm['device_kind']} "
              f"({mm['backend']}); baseline = {BASELINE_LAYOUT}; closed form = replicated leaves + fsdp leaves / "
              "fsdp + batch / (data*fsdp)")
        print_memory(report["memory"])
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
