"""How fast are the jitted log-mel front ends (DFT as a matrix product, and jnp.fft.rfft) against
plain numpy and scipy?

Batch of 32 ten-second clips; for each front end (PASST_32K, DCASE_16K) it times
- jax_jit: `jax.jit(log_mel)` with ``dft='matmul'`` (the exportable form) on the default device,
- jax_fft: the same with ``dft='fft'`` (compile times reported apart),
- numpy: a float32 numpy version of the same chain built on np.fft.rfft (the baseline),
- scipy: the same chain built on scipy.signal.stft (the bar the FFT path is held to),
interleaved (one call of each per round, so a load change hits all alike), and reports the
steady-state median over the rounds, clips/s, speed relative to numpy and to scipy, and the
load average before and after. Runs unchanged on CPU, GPU or TPU.

    python benchmarks/frontend.py [--repeats 5] [--batch 32] [--seconds 10]
"""
from __future__ import annotations

import argparse
import dataclasses
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

def interleaved_seconds(calls: dict, repeats: int) -> dict:
    """``repeats`` rounds of one call of each, in turn: name -> the seconds of each round."""
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


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
    calls, outs, compile_s, first_call_s = {}, {}, {}, {}
    for impl, dft in (("jax_jit", "matmul"), ("jax_fft", "fft")):
        chain = dataclasses.replace(cfg, dft=dft)
        start = time.perf_counter()
        compiled = jax.jit(lambda w, chain=chain: F.log_mel(w, chain)).lower(device_wave).compile()
        compile_s[impl] = time.perf_counter() - start
        start = time.perf_counter()
        outs[impl] = np.asarray(jax.block_until_ready(compiled(device_wave)))
        first_call_s[impl] = time.perf_counter() - start
        calls[impl] = lambda compiled=compiled: jax.block_until_ready(compiled(device_wave))
    outs["numpy"] = numpy_log_mel(wave, cfg, bank)
    outs["scipy"] = scipy_log_mel(wave, cfg, bank)
    calls["numpy"] = lambda: numpy_log_mel(wave, cfg, bank)
    calls["scipy"] = lambda: scipy_log_mel(wave, cfg, bank)
    times = interleaved_seconds(calls, repeats)
    results = []
    for impl in ("numpy", "scipy", "jax_jit", "jax_fft"):
        median_s, out = statistics.median(times[impl]), outs[impl]
        results.append({
            "config": name, "impl": impl, "median_s": median_s,
            "compile_s": compile_s.get(impl), "first_call_s": first_call_s.get(impl),
            "clips_per_s": batch / median_s,
            "audio_seconds_per_s": batch * seconds / median_s,
            "speedup_vs_numpy": statistics.median(times["numpy"]) / median_s,
            "speedup_vs_scipy": statistics.median(times["scipy"]) / median_s,
            "max_abs_diff_vs_numpy": float(np.max(np.abs(out - outs["numpy"]))),
            "max_abs_diff_vs_jax_jit": float(np.max(np.abs(out - outs["jax_jit"]))),
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

    load_before = os.getloadavg()[0]
    results = []
    for name in args.configs.split(","):
        results += bench_config(name, CONFIGS[name], args.batch, args.seconds, args.repeats)

    header = f"{'config':<10} {'impl':<8} {'compile s':>9} {'median s':>9} {'clips/s':>8} " \
             f"{'x numpy':>8} {'x scipy':>8} {'max|diff|':>10}"
    print(f"log-mel front end, batch {args.batch} x {args.seconds:g} s, median of {args.repeats}, "
          f"jax device: {jax.devices()[0].device_kind}")
    print(header)
    print("-" * len(header))
    for r in results:
        comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "-"
        print(f"{r['config']:<10} {r['impl']:<8} {comp:>9} {r['median_s']:>9.3f} "
              f"{r['clips_per_s']:>8.1f} {r['speedup_vs_numpy']:>8.2f} {r['speedup_vs_scipy']:>8.2f} "
              f"{r['max_abs_diff_vs_numpy']:>10.2e}")

    report = {
        "question": "throughput of the jitted log-mel (DFT matmul; jnp.fft.rfft) vs numpy rfft and scipy.signal.stft",
        "baseline": "numpy (float32, np.fft.rfft) and scipy.signal.stft, measured in the same run, interleaved",
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
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
