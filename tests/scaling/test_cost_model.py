"""The cost model on a case worked out by hand."""
import math

import pytest

from jaxaudio.scaling import accelerators, cost_model

CHIP = accelerators.Accelerator("toy", peak_bf16_flops=100e12, hbm_bytes_per_s=1e12,
                                interconnect_bytes_per_s=200e9, interconnect="toy", hbm_bytes=16e9)


def test_ring_factors():
    assert cost_model.ring_factor("all-reduce", 4) == pytest.approx(1.5)
    assert cost_model.ring_factor("all-gather", 4) == pytest.approx(0.75)
    assert cost_model.ring_factor("reduce-scatter", 8) == pytest.approx(0.875)
    assert cost_model.ring_factor("collective-permute", 2) == 1.0
    assert cost_model.ring_factor("all-reduce", 1) == 0.0


def test_hand_worked_step():
    # 10 TFLOP at 50% of 100 TFLOP/s -> 0.2 s; 100 GB at 1 TB/s -> 0.1 s (below compute).
    # 1 GB all-reduce over 4: 1.5 GB sent; 2 GB all-gather over 4: 1.5 GB; link = 100 GB/s -> 0.03 s.
    collectives = [{"kind": "all-reduce", "group_size": 4, "bytes": 1e9},
                   {"kind": "all-gather", "group_size": 4, "bytes": 2e9}]
    p = cost_model.predict(10e12, 100e9, collectives, CHIP, mfu=0.5)
    assert p.compute_s == pytest.approx(0.2)
    assert p.memory_s == pytest.approx(0.1)
    assert p.comm_s == pytest.approx(0.03)
    assert p.step_s == pytest.approx(0.23)
    overlapped = cost_model.predict(10e12, 100e9, collectives, CHIP, mfu=0.5, overlap=True)
    assert overlapped.step_s == pytest.approx(0.2)
    # memory-bound: 400 GB of traffic -> 0.4 s floor dominates compute
    assert cost_model.predict(10e12, 400e9, [], CHIP, mfu=0.5).step_s == pytest.approx(0.4)
    assert cost_model.scaling_efficiency(0.2, 0.23) == pytest.approx(0.2 / 0.23)


def test_bad_mfu_is_refused():
    with pytest.raises(ValueError):
        cost_model.predict(1.0, 1.0, [], CHIP, mfu=0.0)


def test_table_is_consistent():
    for name, chip in accelerators.ACCELERATORS.items():
        assert chip.name == name
        assert chip.peak_bf16_flops > 1e14 and chip.hbm_bytes_per_s > 5e11 and chip.interconnect_bytes_per_s > 1e11
        assert math.isclose(chip.link_bytes_per_s, chip.interconnect_bytes_per_s / 2)
    assert accelerators.get("H100").name == "h100"
