"""Is our JAX EM for a full-covariance GMM faster than scikit-learn's, at PMAM's size?

PMAM fits K=30 full-covariance prototypes to 768-d frame features (~1e5 frames). Both fits
start from the same parameters (our k-means++ means, weights and covariances from the hard
assignment) and run the same EM iterations; we time each iteration (compile apart for ours)
and report both mean log-likelihoods so the speed is for the same numbers.

scikit-learn's per-iteration time is its own ``_e_step`` + ``_m_step`` (what its ``fit`` loop
runs each iteration), so its one-off initialisation is not counted against it. It runs in
float64 (its usual input) and, with --sklearn-float32, also on float32 input. Both run back
to back in one process with the library defaults for threads (all cores); the thread pools
are recorded in the JSON.

    python benchmarks/gmm.py                                  # 100k x 768 x 30, 1 iteration
    python benchmarks/gmm.py --frames 20000 --dim 128 --iters 3 --sklearn-float32   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np
import sklearn
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_info

from jaxaudio.objectives import gmm as G
from jaxaudio.objectives.kmeans import kmeans, kmeans_plusplus_rows, prepare_rows

RESULTS = Path(__file__).parent / "results" / "gmm.json"


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


def time_ours(rows, start: G.GMMState, iters: int, reg_covar: float):
    params = (start.weights, start.means, start.precisions_cholesky)
    t0 = time.perf_counter()
    step = G.em_iteration.lower(rows.x, rows.valid, rows.n_valid, params, reg_covar).compile()
    compile_s = time.perf_counter() - t0
    times, lls = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        params, _, ll = jax.block_until_ready(step(rows.x, rows.valid, rows.n_valid, params, reg_covar))
        times.append(time.perf_counter() - t0)
        lls.append(float(ll))
    return compile_s, times, lls


def time_sklearn(x: np.ndarray, start: G.GMMState, iters: int, reg_covar: float, dtype):
    gm = GaussianMixture(start.means.shape[0], covariance_type="full", reg_covar=reg_covar)
    x = x.astype(dtype)
    weights = np.asarray(start.weights, np.float64)
    gm.weights_ = (weights / weights.sum()).astype(dtype)
    gm.means_ = np.asarray(start.means, dtype)
    gm.precisions_cholesky_ = np.asarray(start.precisions_cholesky, dtype)
    times, lls = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        ll, log_resp = gm._e_step(x)
        gm._m_step(x, log_resp)
        times.append(time.perf_counter() - t0)
        lls.append(float(ll))
    return times, lls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--components", type=int, default=30)
    parser.add_argument("--iters", type=int, default=1, help="timed EM iterations per method")
    parser.add_argument("--chunk", type=int, default=1024, help="rows per E/M chunk (ours)")
    parser.add_argument("--reg-covar", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lloyd-iters", type=int, default=10, help="k-means steps before EM")
    parser.add_argument("--sklearn-float32", action="store_true", help="also time sklearn on float32")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()
    x = mixture_data(args.frames, args.dim, args.components, args.seed)
    rows = prepare_rows(x, chunk_size=args.chunk)
    t0 = time.perf_counter()
    means0 = kmeans_plusplus_rows(jax.random.PRNGKey(args.seed), rows, args.components)
    # A few Lloyd steps balance the clusters, so no start covariance is singular.
    means0 = kmeans(x, args.components, init_centroids=means0, max_iter=args.lloyd_iters).centroids
    start = jax.block_until_ready(G.initial_state(x, means0, reg_covar=args.reg_covar, chunk_size=args.chunk))
    init_s = time.perf_counter() - t0

    compile_s, ours_t, ours_ll = time_ours(rows, start, args.iters, args.reg_covar)
    runs = {"ours_float32": {"per_iter_s": ours_t, "log_likelihood": ours_ll, "compile_s": compile_s}}
    dtypes = [np.float64] + ([np.float32] if args.sklearn_float32 else [])
    for dtype in dtypes:
        t, ll = time_sklearn(x, start, args.iters, args.reg_covar, dtype)
        runs[f"sklearn_{np.dtype(dtype).name}"] = {"per_iter_s": t, "log_likelihood": ll}

    ours_med = statistics.median(ours_t)
    print(f"GMM EM: {args.frames} frames x {args.dim} dims x {args.components} components, "
          f"{args.iters} iteration(s); init (k-means++, Lloyd, hard assignment; ours) {init_s:.1f} s; "
          f"compile {compile_s:.1f} s; load avg before {load_before[0]:.1f}")
    print(f"{'method':<18}{'s / iter':>12}{'speed-up of ours':>18}{'mean log-lik (last iter)':>28}")
    for name, run in runs.items():
        med = statistics.median(run["per_iter_s"])
        run["median_per_iter_s"] = med
        run["ours_speedup"] = med / ours_med
        rel = abs(run["log_likelihood"][-1] - ours_ll[-1]) / abs(run["log_likelihood"][-1])
        run["ll_rel_diff_vs_ours"] = rel
        print(f"{name:<18}{med:>12.2f}{med / ours_med:>17.2f}x{run['log_likelihood'][-1]:>28.6f}")

    result = {
        "question": "per-iteration EM time, ours (JAX float32) vs scikit-learn full-covariance GMM",
        "frames": args.frames, "dim": args.dim, "components": args.components,
        "iters": args.iters, "chunk": args.chunk, "reg_covar": args.reg_covar,
        "init_s": init_s, "runs": runs,
        "machine": {
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
            "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()],
            "sklearn": sklearn.__version__,
            "blas_threads": [
                {k: p.get(k) for k in ("internal_api", "num_threads")} for p in threadpool_info()
            ],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "note": "sklearn timed as _e_step + _m_step per iteration (its fit loop body); same start "
                "parameters; run back to back in one process on a machine shared with other jobs",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
