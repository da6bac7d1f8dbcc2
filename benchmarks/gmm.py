"""Is our JAX EM for a full-covariance GMM faster than scikit-learn's, at PMAM's size, fairly?

PMAM fits K=30 full-covariance prototypes to 768-d frame features (~1e5 frames). The
comparison that counts is at equal precision: ours in float32 against scikit-learn fed
float32 (its arrays are checked to stay float32), with scikit-learn float64 reported too.
All fits start from the same parameters (our k-means++ + Lloyd means, weights and
covariances from the hard assignment) on the same data, and their iterations are interleaved
(ours, ours unpruned, sklearn f32, sklearn f64, then again), so load from other jobs on the
machine falls on all of them alike; the load average is recorded around every step.

scikit-learn's per-iteration time is its own ``_e_step`` + ``_m_step`` (its ``fit`` loop
body), so its one-off initialisation is not counted. Ours is ``em_iteration`` compiled
beforehand (compile time reported apart). Speed is put against the FLOP bound of the plain
algorithm, 4·N·K·D² per iteration (E: (x-μ_k)ᵀL_k, M: Σγ(x-c)(x-c)ᵀ, for every frame and
component), and the machine's attainable GEMM rate measured here; for ours the FLOPs it
actually executed (pruned pairs skipped, triangles halved) are reported as well.

    python benchmarks/gmm.py                                       # 100k x 768 x 30, 3 iterations
    python benchmarks/gmm.py --frames 20000 --dim 128 --iters 3    # quick
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sklearn
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_info

from jaxaudio.objectives import gmm as G
from jaxaudio.objectives.kmeans import kmeans, kmeans_plusplus_rows, prepare_rows

RESULTS = Path(__file__).parent / "results" / "gmm.json"
BASELINE = "sklearn_float32"


def mixture_data(frames: int, dim: int, components: int, seed: int) -> np.ndarray:
    """Frames from a known full-covariance mixture (random means, random correlated factors)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 2.0, (components, dim)).astype(np.float32)
    labels = rng.integers(0, components, frames)
    x = np.empty((frames, dim), np.float32)
    for k in range(components):
        rows = np.flatnonzero(labels == k)
        factor = (np.eye(dim) + rng.normal(0.0, 0.3 / np.sqrt(dim), (dim, dim))).astype(np.float32)
        x[rows] = rng.standard_normal((rows.size, dim), dtype=np.float32) @ factor + means[k]
    return x


def best_time(fn, reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_rates(n: int = 4096) -> dict:
    """Attainable GEMM GFLOP/s here: numpy (OpenBLAS, sklearn's engine) and jitted jnp.dot."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    flops = 2.0 * n**3
    out = {"n": n, "load_avg": os.getloadavg()[0]}
    for dtype in (np.float32, np.float64):
        a_, b_ = a.astype(dtype), b.astype(dtype)
        out[f"numpy_{np.dtype(dtype).name}"] = flops / best_time(lambda: a_ @ b_) / 1e9
    dot = jax.jit(jnp.dot)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    out["jax_float32"] = flops / best_time(lambda: dot(ja, jb).block_until_ready()) / 1e9
    return out


class Ours:
    """Our EM on prepared rows; ``prune=False`` is the plain (all pairs) path."""

    def __init__(self, rows, start: G.GMMState, reg_covar: float, prune: bool):
        self.rows, self.reg_covar = rows, reg_covar
        self.params = (start.weights, start.means, start.precisions_cholesky)
        step = functools.partial(G.em_iteration_with_work, prune=prune)
        t0 = time.perf_counter()
        self.step = jax.jit(step).lower(rows.x, rows.valid, rows.n_valid, self.params, reg_covar).compile()
        self.compile_s = time.perf_counter() - t0
        self.work = []

    def iterate(self) -> float:
        self.params, _, ll, work = jax.block_until_ready(
            self.step(self.rows.x, self.rows.valid, self.rows.n_valid, self.params, self.reg_covar)
        )
        self.work.append({k: float(v) for k, v in work.items()})
        return float(ll)


class Sklearn:
    """scikit-learn's GaussianMixture started from our parameters; one iteration = its fit loop
    body (_e_step + _m_step), on ``dtype`` data; records the dtypes its arrays end up in."""

    def __init__(self, x: np.ndarray, start: G.GMMState, reg_covar: float, dtype):
        self.x = np.ascontiguousarray(x, dtype=dtype)
        self.gm = GaussianMixture(start.means.shape[0], covariance_type="full", reg_covar=reg_covar)
        weights = np.asarray(start.weights, np.float64)
        self.gm.weights_ = (weights / weights.sum()).astype(dtype)
        self.gm.means_ = np.asarray(start.means, dtype)
        self.gm.precisions_cholesky_ = np.asarray(start.precisions_cholesky, dtype)
        self.dtypes = {}

    def iterate(self) -> float:
        ll, log_resp = self.gm._e_step(self.x)
        self.gm._m_step(self.x, log_resp)
        self.dtypes = {
            "X": str(self.x.dtype), "log_resp": str(log_resp.dtype),
            "weights_": str(self.gm.weights_.dtype), "means_": str(self.gm.means_.dtype),
            "covariances_": str(self.gm.covariances_.dtype),
            "precisions_cholesky_": str(self.gm.precisions_cholesky_.dtype),
        }
        return float(ll)


def executed_flops(n_pad: int, dim: int, k: int, work: dict, tile: int) -> float:
    """FLOPs our pruned step ran: the bound GEMM over all rows, 2·D² per tile row (E and M
    tiles), and the dense triangle-blocked E + M for rows that fell back."""
    rank = min(dim, k - 1)
    return (
        2.0 * n_pad * dim * k * rank
        + 2.0 * work["tiles"] * tile * dim * dim
        + work["dense_rows"] * dense_flops_per_row(dim, k)
    )


def dense_flops_per_row(dim: int, k: int) -> float:
    blocks = G._column_blocks(dim)
    e = sum(hi * (hi - lo) for lo, hi in blocks)
    m = sum((hi - lo) * (dim - lo) for lo, hi in blocks)
    return 2.0 * k * (e + m)


def machine_facts() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(), "cpu_model": model,
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()],
        "numpy": np.__version__, "sklearn": sklearn.__version__,
        "thread_pools": [
            {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "num_threads", "version")}
            for p in threadpool_info()
        ],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--components", type=int, default=30)
    parser.add_argument("--iters", type=int, default=3, help="timed EM iterations per method")
    parser.add_argument("--chunk", type=int, default=G.GMMConfig().chunk_size, help="rows per chunk (ours)")
    parser.add_argument("--reg-covar", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lloyd-iters", type=int, default=10, help="k-means steps before EM")
    parser.add_argument("--no-float64", action="store_true", help="skip sklearn float64")
    parser.add_argument("--no-dense", action="store_true", help="skip our unpruned path")
    parser.add_argument("--sklearn-float32", action="store_true", help="(always on now; kept for old command lines)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_start = os.getloadavg()
    rates_before = gemm_rates()
    x = mixture_data(args.frames, args.dim, args.components, args.seed)
    rows = prepare_rows(x, chunk_size=args.chunk)
    t0 = time.perf_counter()
    means0 = kmeans_plusplus_rows(jax.random.PRNGKey(args.seed), rows, args.components)
    # A few Lloyd steps balance the clusters, so no start covariance is singular.
    means0 = kmeans(x, args.components, init_centroids=means0, max_iter=args.lloyd_iters).centroids
    start = jax.block_until_ready(G.initial_state(x, means0, reg_covar=args.reg_covar, chunk_size=args.chunk))
    init_s = time.perf_counter() - t0

    methods = {"ours_float32": Ours(rows, start, args.reg_covar, prune=True)}
    if not args.no_dense:
        methods["ours_float32_unpruned"] = Ours(rows, start, args.reg_covar, prune=False)
    methods["sklearn_float32"] = Sklearn(x, start, args.reg_covar, np.float32)
    if not args.no_float64:
        methods["sklearn_float64"] = Sklearn(x, start, args.reg_covar, np.float64)
    runs = {name: {"per_iter_s": [], "log_likelihood": [], "load_avg_1min": []} for name in methods}
    for name, m in methods.items():
        if isinstance(m, Ours):
            runs[name]["compile_s"] = m.compile_s

    print(f"GMM EM: {args.frames} x {args.dim} x {args.components}, {args.iters} interleaved "
          f"iterations; load avg {load_start[0]:.1f}; GEMM GFLOP/s numpy f32 "
          f"{rates_before['numpy_float32']:.0f}, f64 {rates_before['numpy_float64']:.0f}, "
          f"jax f32 {rates_before['jax_float32']:.0f}", flush=True)
    for it in range(args.iters):
        for name, m in methods.items():
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            ll = m.iterate()
            dt = time.perf_counter() - t0
            run = runs[name]
            run["per_iter_s"].append(dt)
            run["log_likelihood"].append(ll)
            run["load_avg_1min"].append([load, os.getloadavg()[0]])
            print(f"  iter {it + 1} {name:<24}{dt:9.2f} s   mean log-lik {ll:.6f}   load {load:.1f}", flush=True)
    rates_after = gemm_rates()
    load_end = os.getloadavg()

    n, d, k = args.frames, args.dim, args.components
    bound = 4.0 * n * k * d * d
    attainable = {  # the GEMM each method's arithmetic runs on
        "ours_float32": "jax_float32", "ours_float32_unpruned": "jax_float32",
        "sklearn_float32": "numpy_float32", "sklearn_float64": "numpy_float64",
    }
    base = statistics.median(runs[BASELINE]["per_iter_s"])
    ref_ll = runs.get("sklearn_float64", runs[BASELINE])["log_likelihood"]
    tile = G._tile_rows(rows.x.shape[1], k)
    n_pad = rows.x.shape[0] * rows.x.shape[1]
    for name, run in runs.items():
        med = statistics.median(run["per_iter_s"])
        rate = max(rates_before[attainable[name]], rates_after[attainable[name]])
        run["median_per_iter_s"] = med
        run["speedup_vs_sklearn_float32"] = base / med
        # Paired per-iteration ratios: each pair ran back to back, under about the same load.
        run["paired_speedup_vs_sklearn_float32"] = [
            b / t for b, t in zip(runs[BASELINE]["per_iter_s"], run["per_iter_s"])
        ]
        run["plain_flop_bound_gflop_per_s"] = bound / med / 1e9
        run["fraction_of_flop_bound"] = bound / med / 1e9 / rate
        run["attainable_gemm"] = attainable[name]
        run["ll_max_rel_diff_vs_sklearn_float64"] = max(
            abs(a - b) / abs(b) for a, b in zip(run["log_likelihood"], ref_ll)
        )
        m = methods[name]
        if isinstance(m, Ours):
            run["work"] = m.work
            if name == "ours_float32":
                executed = [executed_flops(n_pad, d, k, w, tile) for w in m.work]
            else:
                executed = [n_pad * dense_flops_per_row(d, k)] * len(m.work)
            run["executed_gflop_per_iter"] = [f / 1e9 for f in executed]
            run["executed_fraction_of_plain"] = statistics.median(executed) / bound
            run["executed_gflop_per_s"] = statistics.median(executed) / med / 1e9
            run["executed_fraction_of_attainable"] = run["executed_gflop_per_s"] / rate
        else:
            run["array_dtypes"] = m.dtypes
    want = np.dtype(np.float32).name
    if any(v != want for v in runs[BASELINE]["array_dtypes"].values()):
        raise SystemExit(f"sklearn float32 run left float32: {runs[BASELINE]['array_dtypes']}")

    print(f"{'method':<24}{'s / iter':>10}{'vs sk f32':>11}{'paired':>9}{'plain GF/s':>12}"
          f"{'of bound':>10}{'last log-lik':>16}")
    for name, run in runs.items():
        paired = statistics.median(run["paired_speedup_vs_sklearn_float32"])
        print(f"{name:<24}{run['median_per_iter_s']:>10.2f}{run['speedup_vs_sklearn_float32']:>10.2f}x"
              f"{paired:>8.2f}x{run['plain_flop_bound_gflop_per_s']:>12.0f}"
              f"{run['fraction_of_flop_bound']:>10.2f}{run['log_likelihood'][-1]:>16.6f}")

    ours, sk32 = runs["ours_float32"], runs[BASELINE]
    summary = {
        "median_s_per_iter": {name: run["median_per_iter_s"] for name, run in runs.items()},
        "ours_speedup_vs_sklearn_float32": ours["speedup_vs_sklearn_float32"],
        "ours_paired_speedup_vs_sklearn_float32_median": statistics.median(
            ours["paired_speedup_vs_sklearn_float32"]
        ),
        "goal_3x_met": ours["speedup_vs_sklearn_float32"] >= 3.0,
        "last_log_likelihood": {name: run["log_likelihood"][-1] for name, run in runs.items()},
        "ours_vs_sklearn_float32_ll_max_rel_diff": max(
            abs(a - b) / abs(b) for a, b in zip(ours["log_likelihood"], sk32["log_likelihood"])
        ),
        "fraction_of_flop_bound": {name: run["fraction_of_flop_bound"] for name, run in runs.items()},
        "ours_executed_fraction_of_attainable": ours["executed_fraction_of_attainable"],
        "ours_executed_fraction_of_plain_flops": ours["executed_fraction_of_plain"],
    }

    result = {
        "question": "per-iteration full-covariance GMM EM time at equal precision: ours (JAX, "
                    "float32) vs scikit-learn float32 (baseline) and float64",
        "frames": n, "dim": d, "components": k, "iters": args.iters, "chunk": int(rows.x.shape[1]),
        "tile_rows": tile, "reg_covar": args.reg_covar, "seed": args.seed,
        "lloyd_iters": args.lloyd_iters, "init_s": init_s, "baseline": BASELINE,
        "summary": summary,
        "flop_bound_per_iter": bound,
        "flop_bound_note": "4·N·K·D²: the plain E ((x-μ_k)ᵀL_k) and M (Σγ(x-c)(x-c)ᵀ) GEMMs over "
                           "all frames and components; fraction_of_flop_bound = (bound / time) / "
                           "attainable GEMM rate; ours skips FLOPs, so its plain-FLOP rate can "
                           "exceed 1, and executed_* gives what it actually ran",
        "gemm_gflop_per_s": {"before": rates_before, "after": rates_after},
        "runs": runs,
        "machine": machine_facts() | {"load_avg_start": load_start, "load_avg_end": load_end},
        "note": "same data, same start parameters; iterations interleaved (one of each method "
                "per round) on a 2-core machine shared with other jobs; sklearn timed as "
                "_e_step + _m_step; log_likelihood[i] is the mean per-frame log-likelihood of "
                "the parameters entering iteration i",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


def markdown(r: dict) -> str:
    """The result as a short table for people (the JSON has everything)."""
    m, g = r["machine"], r["gemm_gflop_per_s"]
    lines = [
        f"# GMM EM: ours vs scikit-learn, {r['frames']:,} x {r['dim']} x {r['components']} "
        f"(full covariance), {r['iters']} interleaved iterations",
        "",
        f"{m['cpu_count']} cores ({m['cpu_model']}), jax {m['jax']}, scikit-learn {m['sklearn']}; "
        f"load average (1 min) {m['load_avg_start'][0]:.1f} at the start, "
        f"{m['load_avg_end'][0]:.1f} at the end (a machine shared with other jobs). "
        f"Attainable GEMM GFLOP/s (4096², best of before/after): numpy float32 "
        f"{max(g['before']['numpy_float32'], g['after']['numpy_float32']):.0f}, float64 "
        f"{max(g['before']['numpy_float64'], g['after']['numpy_float64']):.0f}, jax float32 "
        f"{max(g['before']['jax_float32'], g['after']['jax_float32']):.0f}. "
        f"Plain FLOP bound 4·N·K·D² = {r['flop_bound_per_iter'] / 1e12:.2f} TFLOP per iteration.",
        "",
        "| method | s / iteration (median) | per iteration | vs sklearn float32 | "
        "plain-FLOP GFLOP/s | of attainable | executed TFLOP | last mean log-lik |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in r["runs"].items():
        executed = run.get("executed_gflop_per_iter")
        tflop = statistics.median(executed) / 1e3 if executed else r["flop_bound_per_iter"] / 1e12
        lines.append(
            f"| {name} | {run['median_per_iter_s']:.2f} | "
            f"{', '.join(f'{t:.1f}' for t in run['per_iter_s'])} | "
            f"{run['speedup_vs_sklearn_float32']:.2f}x | {run['plain_flop_bound_gflop_per_s']:.0f} | "
            f"{run['fraction_of_flop_bound']:.2f} | {tflop:.2f} | {run['log_likelihood'][-1]:.6f} |"
        )
    ours = r["runs"]["ours_float32"]
    lines += [
        "",
        "Ours executes fewer FLOPs than the plain bound (triangle blocks; pruned pairs, whose "
        "posterior is 0 in float32), so its plain-FLOP rate can exceed the GEMM rate; "
        f"it ran {ours['executed_fraction_of_plain']:.3f} of the plain FLOPs at "
        f"{ours['executed_fraction_of_attainable']:.2f} of the attainable jax GEMM rate. "
        "sklearn float32 kept every array float32 "
        f"({', '.join(sorted(set(r['runs']['sklearn_float32']['array_dtypes'].values())))}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
