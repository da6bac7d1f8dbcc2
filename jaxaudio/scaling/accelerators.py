"""Public per-chip figures of the accelerators the cost model predicts for.

One row per chip: dense bf16 peak (FLOP/s), HBM bandwidth (bytes/s) and the chip's
interconnect bandwidth as the vendor states it: *bidirectional, summed over all of the
chip's links* (TPU ICI; NVLink for GPUs). The cost model uses half of it (one direction),
the bandwidth one ring step can use (see ``cost_model``).

Sources (looked up for this table; numbers as published):
  v4   cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, HBM2 1200 GBps. ICI is not in that
       table: 6 links per chip (3D torus), 400 Gb/s each way per link (TPU v4 paper, Jouppi et
       al., ISCA 2023; summarised at glennklockwood.com/garden/processors/TPUv4)
       -> 6 x 50 GB/s x 2 directions = 600 GB/s.
  v5e  cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, HBM 819 GBps, bidirectional ICI per
       chip 400 GBps (older revision: "1600 Gbps", i.e. 200 GB/s one way).
  v5p  cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, HBM 2765 GBps, bidirectional ICI per
       chip 1200 GBps (older revision: "4800 Gbps").
  v6e  cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, HBM 1640 GBps (a later revision says
       1600), bidirectional ICI per chip 800 GBps (older revision: "3200 Gbps").
  h100 NVIDIA H100 SXM5 datasheet (nvidia.com/en-us/data-center/h100): bf16 tensor core
       989 TFLOP/s dense (the sheet's 1979 is with 2:4 sparsity), HBM3 3.35 TB/s,
       NVLink 900 GB/s (bidirectional, 18 links).
  h200 NVIDIA H200 SXM datasheet (nvidia.com/en-us/data-center/h200): same Hopper compute,
       989 TFLOP/s dense bf16, HBM3e 4.8 TB/s, NVLink 900 GB/s.
"""
from __future__ import annotations

import dataclasses

from jaxaudio.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One chip. Units: FLOP/s and bytes/s (not T or G)."""

    name: str
    peak_bf16_flops: float
    hbm_bytes_per_s: float
    interconnect_bytes_per_s: float  # bidirectional, all links of one chip
    interconnect: str
    hbm_bytes: float

    @property
    def link_bytes_per_s(self) -> float:
        """One direction of the chip's interconnect: what the cost model's ring uses."""
        return self.interconnect_bytes_per_s / 2


T, G = 1e12, 1e9
GIB = 2**30

ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("v4", 275 * T, 1200 * G, 600 * G, "ICI 3D torus", 32 * GIB),
        Accelerator("v5e", 197 * T, 819 * G, 400 * G, "ICI 2D torus", 16 * G),
        Accelerator("v5p", 459 * T, 2765 * G, 1200 * G, "ICI 3D torus", 95 * G),
        Accelerator("v6e", 918 * T, 1640 * G, 800 * G, "ICI 2D torus", 32 * G),
        Accelerator("h100", 989 * T, 3350 * G, 900 * G, "NVLink 4", 80 * G),
        Accelerator("h200", 989 * T, 4800 * G, 900 * G, "NVLink 4", 141 * G),
    )
}


def get(name: str) -> Accelerator:
    """The table row for ``name`` (case-insensitive)."""
    key = name.strip().lower()
    if key not in ACCELERATORS:
        raise ConfigError(f"--accelerators: unknown accelerator {name!r}; expected one of {sorted(ACCELERATORS)}")
    return ACCELERATORS[key]
