"""How fast is the jitted DFT-matmul log-mel front end against plain numpy and scipy?

Batch of 32 ten-second clips; for each front end (PASST_32K, DCASE_16K) it times
- jax:   `jax.jit(log_mel)` on the default device (compile time reported apart),
- numpy: a float32 numpy version of the same chain built on np.fft.rfft (the baseline),
- scipy: the same chain built on scipy.signal.stft,
and reports the steady-state median over repeats, clips/s, and speed relative to numpy.
Runs unchanged on CPU, GPU or TPU (the jax column uses whatever `jax.devices()[0]` is).

    python benchmarks/frontend.py [--repeats 5] [--batch 32] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.signal

from jaxaudio.audio import features as F

CONFIGS = {"PASST_32K": F.PASST_32K, "DCASE_16K": F.DCASE_16K}
RESULTS = pathlib.Path(__file__).parent / "results" / "frontend.json"


# ----------------------------------------------------------------------------- host baselines

def _prepare(wave: np.ndarray, cfg: F.FrontEndConfig) -> np.ndarray:
    """Waveform-level steps and centring pad, shared by both host baselines."""
    if not cfg.center:
        raise SystemExit("the host baselines here implement centred (torch.stft) framing only")
    x = wave.astype(np.float32)
    if cfg.peak_normalize:
        x = x / (np.abs(x).max(axis=-1, keepdims=True) + 1e-10)
    if cfg.preemphasis:
        x = x[..., 1:] - np.float32(cfg.preemphasis) * x[..., :-1]
    pad = cfg.n_fft // 2
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=cfg.pad_mode)


def _full_window(cfg: F.FrontEndConfig) -> np.ndarray:
    full = np.zeros(cfg.n_fft, np.float32)
    left = (cfg.n_fft - cfg.win_length) // 2
    full[left:left + cfg.win_length] = F.window_function(cfg)
    return full


def _finish(mag: np.ndarray, cfg: F.FrontEndConfig, bank: np.ndarray) -> np.ndarray:
    mel = mag @ bank
    if cfg.log == "ln":
        out = np.log(mel + np.float32(cfg.log_offset))
    elif cfg.log == "ln_clamp":
        out = np.log(np.maximum(mel, np.float32(cfg.log_offset)))
    else:
        out = np.float32(20.0 / cfg.power) * np.log10(np.maximum(mel, np.float32(cfg.amin)))
        if cfg.db_clip is not None:
            out = np.clip(out, *cfg.db_clip)
    return ((out - cfg.norm_mean) / cfg.norm_std).astype(np.float32)


def numpy_log_mel(wave: np.ndarray, cfg: F.FrontEndConfig, bank: np.ndarray) -> np.ndarray:
    xp = _prepare(wave, cfg)
    frames = np.lib.stride_tricks.sliding_window_view(xp, cfg.n_fft, axis=-1)[..., ::cfg.hop_length, :]
    spec = np.fft.rfft(frames * _full_window(cfg), axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    mag = power if cfg.power == 2.0 else power ** np.float32(cfg.power / 2.0)
    return _finish(mag.astype(np.float32), cfg, bank)


def scipy_log_mel(wave: np.ndarray, cfg: F.FrontEndConfig, bank: np.ndarray) -> np.ndarray:
    xp = _prepare(wave, cfg)
    w = _full_window(cfg)
    _, _, zxx = scipy.signal.stft(xp, window=w, nperseg=cfg.n_fft, noverlap=cfg.n_fft - cfg.hop_length,
                                  nfft=cfg.n_fft, boundary=None, padded=False, detrend=False, axis=-1)
    zxx = np.swapaxes(zxx, -1, -2) * np.float32(w.sum())  # undo scipy's 1/sum(w) scaling
    power = zxx.real ** 2 + zxx.imag ** 2
    mag = power if cfg.power == 2.0 else power ** np.float32(cfg.power / 2.0)
    return _finish(mag.astype(np.float32), cfg, bank)


# ----------------------------------------------------------------------------- timing

def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_info() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"model": model, "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
            "load_average_1m": load,  # > usable_cpus means other work shared the CPU
            "machine": platform.machine(), "system": platform.platform()}


def bench_config(name: str, cfg: F.FrontEndConfig, batch: int, seconds: float, repeats: int):
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal((batch, int(cfg.sample_rate * seconds)))).astype(np.float32)
    bank = F.mel_filterbank(cfg)

    device_wave = jax.device_put(jnp.asarray(wave))
    start = time.perf_counter()
    compiled = jax.jit(lambda w: F.log_mel(w, cfg)).lower(device_wave).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax_out = np.asarray(jax.block_until_ready(compiled(device_wave)))
    first_call_s = time.perf_counter() - start

    numpy_out = numpy_log_mel(wave, cfg, bank)
    scipy_out = scipy_log_mel(wave, cfg, bank)
    rows = {
        "numpy": (median_seconds(lambda: numpy_log_mel(wave, cfg, bank), repeats), numpy_out, None),
        "scipy": (median_seconds(lambda: scipy_log_mel(wave, cfg, bank), repeats), scipy_out, None),
        "jax_jit": (median_seconds(lambda: jax.block_until_ready(compiled(device_wave)), repeats),
                    jax_out, compile_s),
    }
    base = rows["numpy"][0]
    results = []
    for impl, (median_s, out, comp) in rows.items():
        results.append({
            "config": name, "impl": impl, "median_s": median_s,
            "compile_s": comp, "first_call_s": first_call_s if impl == "jax_jit" else None,
            "clips_per_s": batch / median_s,
            "audio_seconds_per_s": batch * seconds / median_s,
            "speedup_vs_numpy": base / median_s,
            "max_abs_diff_vs_numpy": float(np.max(np.abs(out - numpy_out))),
            "output_shape": list(out.shape),
        })
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", default="PASST_32K,DCASE_16K")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    results = []
    for name in args.configs.split(","):
        results += bench_config(name, CONFIGS[name], args.batch, args.seconds, args.repeats)

    header = f"{'config':<10} {'impl':<8} {'compile s':>9} {'median s':>9} {'clips/s':>8} " \
             f"{'x numpy':>8} {'max|diff|':>10}"
    print(f"log-mel front end, batch {args.batch} x {args.seconds:g} s, median of {args.repeats}, "
          f"jax device: {jax.devices()[0].device_kind}")
    print(header)
    print("-" * len(header))
    for r in results:
        comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "-"
        print(f"{r['config']:<10} {r['impl']:<8} {comp:>9} {r['median_s']:>9.3f} "
              f"{r['clips_per_s']:>8.1f} {r['speedup_vs_numpy']:>8.2f} {r['max_abs_diff_vs_numpy']:>10.2e}")

    report = {
        "question": "throughput of the jitted DFT-matmul log-mel vs numpy rfft and scipy.signal.stft",
        "baseline": "numpy (float32, np.fft.rfft), measured in the same run",
        "batch": args.batch, "seconds_per_clip": args.seconds, "repeats": args.repeats,
        "jax_version": jax.__version__, "jaxlib_backend": jax.default_backend(),
        "jax_device": str(jax.devices()[0]), "jax_device_kind": jax.devices()[0].device_kind,
        "numpy_version": np.__version__, "scipy_version": scipy.__version__,
        "python": platform.python_version(), "cpu": cpu_info(),
        "results": results,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
