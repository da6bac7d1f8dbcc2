"""A first-order step-time model: compute, HBM traffic and collectives on a named chip.

For one device of a mesh running one train step:

  compute_s = FLOPs / (peak_bf16 x mfu)            mfu: assumed model-FLOPs utilisation
  memory_s  = bytes_accessed / HBM bandwidth       a floor: no kernel beats streaming its bytes
  comm_s    = sum over collectives of payload_bytes x factor / link bandwidth
  step_s    = max(compute_s, memory_s) + comm_s    (``overlap=False``, the default)
            = max(compute_s, memory_s, comm_s)     (``overlap=True``: collectives fully hidden)

Factors are the bytes each device sends per payload byte in the bandwidth-optimal ring
algorithms over a group of ``g`` devices: all-reduce 2(g-1)/g (reduce-scatter then
all-gather), all-gather / reduce-scatter / all-to-all (g-1)/g, collective-permute 1.
The link bandwidth is one direction of the chip's interconnect (``Accelerator``).
The default adds communication to compute because nothing guarantees overlap; XLA's
async collectives on TPU/GPU hide part of it, so the truth lies between the two modes.
Latency per collective (microseconds each) is ignored: fine for large payloads, optimistic
for many small ones.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from jaxaudio.scaling.accelerators import Accelerator

DEFAULT_MFU = 0.5


def ring_factor(kind: str, group_size: int) -> float:
    """Bytes sent per device per payload byte (module docstring); 0 for a group of one."""
    g = int(group_size)
    if g <= 1:
        return 0.0
    if kind == "all-reduce":
        return 2.0 * (g - 1) / g
    if kind in ("all-gather", "reduce-scatter", "all-to-all"):
        return (g - 1) / g
    if kind == "collective-permute":
        return 1.0
    raise ValueError(f"unknown collective kind {kind!r}")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Seconds per step on one accelerator, by term, and the total."""

    accelerator: str
    compute_s: float
    memory_s: float
    comm_s: float
    step_s: float
    overlap: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def comm_seconds(collectives: Iterable[Mapping], link_bytes_per_s: float) -> float:
    """``collectives``: dicts with ``kind``, ``group_size`` and ``bytes`` (payload per step)."""
    return sum(float(c["bytes"]) * ring_factor(c["kind"], c["group_size"]) for c in collectives) / link_bytes_per_s


def predict(flops: float, bytes_accessed: float, collectives: Iterable[Mapping], chip: Accelerator,
            mfu: float = DEFAULT_MFU, overlap: bool = False) -> Prediction:
    """Step time of one device (all devices run the same SPMD program)."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu={mfu}; expected a fraction in (0, 1]")
    compute = flops / (chip.peak_bf16_flops * mfu)
    memory = bytes_accessed / chip.hbm_bytes_per_s
    comm = comm_seconds(collectives, chip.link_bytes_per_s)
    step = max(compute, memory, comm) if overlap else max(compute, memory) + comm
    return Prediction(chip.name, compute, memory, comm, step, overlap)


def scaling_efficiency(step_s_one: float, step_s_n: float) -> float:
    """Weak scaling (same per-device batch): throughput(n) / (n x throughput(1)) = t(1) / t(n)."""
    return step_s_one / step_s_n if step_s_n > 0 else float("nan")
