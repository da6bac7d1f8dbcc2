"""Compile one train step over many meshes and gather what each program costs.

For every (device count, strategy) the study builds the experiment's sharded train state
*abstractly* (shapes and shardings only), lowers and compiles the real train step
(``jaxaudio.train.step.make_train_step``) ahead of time on the first ``n`` devices, and
reads from the compiled program: FLOPs and bytes accessed (``cost_analysis``), per-device
memory (``memory_analysis``) and the bytes each collective moves (``hlo.parse_collectives``
on ``as_text()``). On real accelerators (not CPU-simulated devices) it also times the step.

Weak scaling: each device keeps ``per_device_batch`` rows, so the global batch is
``per_device_batch x data x fsdp`` (the tensor axis shares its rows).

Strategies (mesh ``(data, fsdp, tensor)`` for ``n`` devices):
  dp       (n, 1, 1)
  fsdp     (1, n, 1)
  dp_fsdp  (2, n/2, 1) for n >= 4; below that the same mesh as fsdp
  tp       (1, 1, n)
Meshes that coincide (all strategies at n = 1) are compiled once.

An experiment hands its own ``Case`` to ``run_study(..., case=...)`` (its System's
``scaling_cases``; ``experiments/run.py --mode=scale``): the library never depends on the
experiments. ``CASES`` holds the library's own cases (``vit``, a plain PaSST-style tagger).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.scaling import accelerators, cost_model, hlo
from jaxaudio.train.mesh import batch_axis_size, batch_sharding, make_mesh
from jaxaudio.train.optim import make_optimizer
from jaxaudio.train.sharding import _eval_shape_with_graphdef, create_sharded_state, state_shardings, with_shardings
from jaxaudio.train.state import create_train_state
from jaxaudio.train.step import make_train_step

STRATEGIES = ("dp", "fsdp", "dp_fsdp", "tp")
SMALL_BYTES = 1024  # arrays below this in a collective are scalar/statistic reductions
# XLA options that skip LLVM's costly code generation passes on CPU. They act after the HLO
# passes, so the optimized HLO (collectives, cost and memory analysis) is the same; only the
# machine code is slower. For studies on simulated CPU devices, where nothing is timed.
FAST_CPU_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class Case:
    """What a study needs from an experiment.

    model_fn: builds the model (its own ``nnx.Rngs``). loss_fn_for(global_batch): the train
    step's loss (some losses depend on the batch layout). batch_spec(global_batch):
    ``{name: (shape, dtype)}`` of one batch. tx: the optimizer. with_teacher/ema_decay: a
    mean-teacher EMA copy in the state. note: what the report should say about this case's traffic.
    """

    name: str
    model_fn: Callable[[], nnx.Module]
    loss_fn_for: Callable[[int], Callable]
    batch_spec: Callable[[int], Mapping[str, tuple[tuple[int, ...], Any]]]
    tx: optax.GradientTransformation
    per_device_batch: int
    with_teacher: bool = False
    ema_decay: float | None = None
    note: str = ""


CASES: dict[str, Callable[[str], Case]] = {}


def register_case(name: str):
    """Decorator: ``@register_case('pmam')`` on ``def pmam_case(preset) -> Case``."""

    def wrap(builder):
        CASES[name] = builder
        return builder

    return wrap


def get_case(name: str, preset: str = "tiny") -> Case:
    if name not in CASES:
        raise ConfigError(f"--exp={name!r} has no scaling case; registered: {sorted(CASES)}")
    return CASES[name](preset)


# ----------------------------------------------------------------------------- registry

class _ViTTagger(nnx.Module):
    """ViT encoder -> mean over patch tokens -> clip logits ``(batch, classes)``."""

    def __init__(self, cfg, classes: int, *, rngs: nnx.Rngs):
        from jaxaudio.nn.vit import ViT

        self.encoder = ViT(cfg, rngs=rngs)
        self.head = nnx.Linear(cfg.dim, classes, rngs=rngs)

    def __call__(self, mel, *, train: bool, rngs=None):
        tokens = self.encoder(mel, train=train, rngs=rngs, return_layer=None)["patch_tokens"]
        return self.head(tokens.mean(axis=1))


@register_case("vit")
def vit_case(preset: str = "tiny") -> Case:
    """PaSST-style ViT clip tagger (stand-in for PMAM). ``tiny``: 2 blocks of width 128 on
    64 mels x 100 frames, large enough that FSDP shards the q/k/v and MLP kernels;
    ``paper``: PaSST-S on 128 mels x 998 frames."""
    from jaxaudio.nn.vit import PASST_S, ViTConfig

    if preset == "tiny":
        cfg = ViTConfig(n_mels=64, max_frames=100, dim=128, depth=2, num_heads=4, mlp_ratio=4.0)
        per_device = 4
    elif preset == "paper":
        cfg, per_device = PASST_S, 8
    else:
        raise ConfigError(f"--preset={preset!r}: the vit case knows 'tiny' and 'paper'")
    classes = 10

    def loss_fn_for(_batch: int):
        def loss_fn(model, batch, rng, teacher, step):
            logits = model(batch["mel"], train=True, rngs=rng)
            loss = optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean()
            return loss, {}

        return loss_fn

    def batch_spec(batch: int):
        return {"mel": ((batch, cfg.max_frames, cfg.n_mels), jnp.float32), "labels": ((batch, classes), jnp.float32)}

    tx = make_optimizer([], {"lr": 1e-3}, 1.0, 1000)
    return Case(f"vit/{preset}", lambda: _ViTTagger(cfg, classes, rngs=nnx.Rngs(0)), loss_fn_for, batch_spec, tx,
                per_device_batch=per_device)


# ----------------------------------------------------------------------------- meshes

def mesh_shape(strategy: str, n: int) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` for ``strategy`` on ``n`` devices (module docstring)."""
    if strategy == "dp":
        return n, 1, 1
    if strategy == "fsdp":
        return 1, n, 1
    if strategy == "dp_fsdp":
        return (2, n // 2, 1) if n >= 4 and n % 2 == 0 else (1, n, 1)
    if strategy == "tp":
        return 1, 1, n
    raise ConfigError(f"--strategies: unknown strategy {strategy!r}; expected some of {STRATEGIES}")


# ----------------------------------------------------------------------------- one compile

def _cost_dict(compiled) -> dict:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def _memory_dict(compiled) -> dict:
    mem = compiled.memory_analysis()
    if mem is None:
        return {}
    out = {k: int(getattr(mem, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "temp", "alias")}
    out["peak_estimate"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def _collective_groups(ops: Sequence[hlo.CollectiveOp]) -> list[dict]:
    """Payload bytes per (kind, group size): what the cost model needs."""
    groups: dict[tuple[str, int], int] = {}
    for op in ops:
        groups[(op.kind, op.group_size)] = groups.get((op.kind, op.group_size), 0) + op.total_bytes
    return [{"kind": k, "group_size": g, "bytes": b} for (k, g), b in sorted(groups.items())]


def _abstract_batch(case: Case, batch: int, sharding) -> dict:
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
            for k, (shape, dtype) in case.batch_spec(batch).items()}


def _random_batch(case: Case, batch: int, sharding, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for k, (shape, dtype) in case.batch_spec(batch).items():
        if jnp.issubdtype(dtype, jnp.floating):
            value = rng.uniform(0, 1, shape).astype(np.dtype(dtype))
        else:
            value = np.ones(shape, np.dtype(dtype))
        out[k] = jax.device_put(value, sharding)
    return out


def compile_point(case: Case, shape: tuple[int, int, int], devices: Sequence, time_steps: int = 0,
                  compiler_options: Mapping[str, Any] | None = None) -> dict:
    """Lower and compile the train step on ``devices`` arranged as ``shape``; gather the figures.

    compiler_options: XLA options for ``Lowered.compile`` (e.g. ``FAST_CPU_COMPILE``).
    """
    mesh = make_mesh(*shape, devices=list(devices))
    batch = case.per_device_batch * batch_axis_size(mesh)
    rng = jax.random.key(0)

    def init():
        return create_train_state(case.model_fn(), case.tx, rng, with_teacher=case.with_teacher)

    graphdef, abstract = _eval_shape_with_graphdef(init)
    shardings = state_shardings(abstract, mesh)
    bsharding = batch_sharding(mesh)
    step = make_train_step(graphdef, case.loss_fn_for(batch), case.tx, state_shardings=shardings,
                           batch_sharding=bsharding, ema_decay=case.ema_decay)
    started = time.perf_counter()
    lowered = step.lower(with_shardings(abstract, shardings), _abstract_batch(case, batch, bsharding))
    lower_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = lowered.compile(compiler_options=dict(compiler_options)) if compiler_options else lowered.compile()
    compile_s = time.perf_counter() - started

    text = compiled.as_text()
    ops = hlo.parse_collectives(text)
    cost = _cost_dict(compiled)
    params = jax.tree.leaves(abstract.params)
    point = {
        "mesh": {"data": shape[0], "fsdp": shape[1], "tensor": shape[2]},
        "devices": len(devices),
        "global_batch": batch,
        "param_count": int(sum(int(np.prod(p.shape)) for p in params)),
        "param_bytes": int(sum(int(np.prod(p.shape)) * p.dtype.itemsize for p in params)),
        "flops": float(cost.get("flops", 0.0)),
        "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "memory": _memory_dict(compiled),
        "collective_bytes": hlo.bytes_by_kind(ops),
        "collective_bytes_large": hlo.bytes_by_kind(ops, SMALL_BYTES),
        "collective_counts": {k: sum(op.count for op in ops if op.kind == k) for k in hlo.KINDS},
        "collective_bytes_in_loops": sum(op.total_bytes for op in ops if op.count > 1),
        "collectives": _collective_groups(ops),
        "unknown_trip_count": any(op.unknown_trip_count for op in ops),
        "lower_s": lower_s,
        "compile_s": compile_s,
        "measured_step_s": None,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
    }
    if time_steps > 0:
        point["measured_step_s"] = _time_step(case, compiled, mesh, batch, bsharding, time_steps)
    return point, text


def _time_step(case: Case, compiled, mesh, batch: int, bsharding, steps: int) -> float:
    """Median seconds per step after two warm-up steps (state and batch built for real)."""
    _, state, _ = create_sharded_state(case.model_fn, case.tx, jax.random.key(0), mesh, with_teacher=case.with_teacher)
    data = _random_batch(case, batch, bsharding)
    for _ in range(2):
        state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        state, metrics = compiled(state, data)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def accelerator_of(device_kind: str) -> str | None:
    """Table name of a real device (``'TPU v5 lite'`` -> ``'v5e'``), None for CPU/unknown."""
    kind = device_kind.lower()
    for needle, name in (("v5 lite", "v5e"), ("v5e", "v5e"), ("v6 lite", "v6e"), ("v6e", "v6e"), ("v5p", "v5p"),
                         ("v5", "v5p"), ("v4", "v4"), ("h200", "h200"), ("h100", "h100")):
        if needle in kind:
            return name
    return None


# ----------------------------------------------------------------------------- the sweep

def run_study(exp: str, device_counts: Sequence[int], strategies: Sequence[str], preset: str = "tiny",
              accelerator_names: Sequence[str] = tuple(accelerators.ACCELERATORS), mfu: float = cost_model.DEFAULT_MFU,
              time_steps: int | None = None, case: Case | None = None, keep_hlo: bool = False,
              compiler_options: Mapping[str, Any] | None = None,
              log: Callable[[str], None] = lambda s: None) -> dict:
    """Compile every mesh, predict per accelerator, and return a JSON-able result.

    time_steps: steps to time per mesh; default 10 on real accelerators, 0 on CPU (simulated
    devices share the host's cores, so their timings say nothing about scaling).
    compiler_options: passed to every compile (``FAST_CPU_COMPILE`` on CPU: same HLO, faster).
    """
    case = case or get_case(exp, preset)
    all_devices = jax.devices()
    for n in device_counts:
        if n > len(all_devices):
            raise ConfigError(f"--devices asks for {n} but only {len(all_devices)} are visible")
    on_cpu = all_devices[0].platform == "cpu"
    if time_steps is None:
        time_steps = 0 if on_cpu else 10
    chips = [accelerators.get(a) for a in accelerator_names]
    measured_chip = None if on_cpu else accelerator_of(all_devices[0].device_kind)

    cache: dict[tuple[int, int, int], tuple[dict, str]] = {}
    points = []
    for strategy in strategies:
        for n in device_counts:
            shape = mesh_shape(strategy, n)
            if shape not in cache:
                log(f"compiling {case.name} {strategy} n={n} mesh={shape}")
                cache[shape] = compile_point(case, shape, all_devices[:n], time_steps, compiler_options)
            point, text = cache[shape]
            point = dict(point, strategy=strategy)
            if keep_hlo:
                point["hlo_text"] = text
            point["predicted"] = {
                chip.name: cost_model.predict(point["flops"], point["bytes_accessed"], point["collectives"], chip,
                                              mfu=mfu).as_dict()
                for chip in chips
            }
            if point["measured_step_s"] and measured_chip:
                peak = accelerators.get(measured_chip).peak_bf16_flops
                point["measured_mfu"] = point["flops"] / (point["measured_step_s"] * peak)
            points.append(point)
    _add_scaling(points, [c.name for c in chips])
    return {
        "exp": exp,
        "case": case.name,
        "note": case.note,
        "preset": preset,
        "per_device_batch": case.per_device_batch,
        "mfu_assumption": mfu,
        "compiler_options": dict(compiler_options or {}),
        "platform": all_devices[0].platform,
        "device_kind": all_devices[0].device_kind,
        "measured_accelerator": measured_chip,
        "jax_version": jax.__version__,
        "points": points,
    }


def _add_scaling(points: list[dict], chip_names: Sequence[str]) -> None:
    """Throughput (samples/s) and weak-scaling efficiency against the same strategy's smallest mesh."""
    for point in points:
        base = min((p for p in points if p["strategy"] == point["strategy"]), key=lambda p: p["devices"])
        for name in chip_names:
            pred, ref = point["predicted"][name], base["predicted"][name]
            per_device_ratio = point["global_batch"] / point["devices"] / (base["global_batch"] / base["devices"])
            pred["throughput"] = point["global_batch"] / pred["step_s"] if pred["step_s"] > 0 else float("nan")
            pred["efficiency"] = cost_model.scaling_efficiency(ref["step_s"], pred["step_s"]) * per_device_ratio
        if point["measured_step_s"] and base["measured_step_s"]:
            point["measured_throughput"] = point["global_batch"] / point["measured_step_s"]
            per_device_ratio = point["global_batch"] / point["devices"] / (base["global_batch"] / base["devices"])
            point["measured_efficiency"] = base["measured_step_s"] / point["measured_step_s"] * per_device_ratio
