"""``experiments/run.py --mode=scale --exp=crnn --simulate 2`` end to end, in a fresh interpreter.

Why a subprocess: ``--simulate`` only works if run.py sets XLA_FLAGS before anything imports
jax, and this test session has already started jax with 8 devices (tests/conftest.py). A child
started without the device-count flag sees one CPU device unless ``--simulate`` takes effect,
so asking for 2 devices fails loudly if an import drags jax in too early.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def test_crnn_scale_mode_on_two_simulated_devices(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "--mode=scale", "--exp=crnn", "--simulate", "2",
           "--devices", "1,2", "--strategies", "dp", "--accelerators", "v5e", "--fast-compile",
           "--results", str(tmp_path)]
    proc = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert summary["case"] == "crnn/tiny" and summary["points"] == 2
    stem = "scaling_crnn_tiny"
    assert summary["report_paths"] == {"json": str(tmp_path / f"{stem}.json"), "md": str(tmp_path / f"{stem}.md"),
                                       "png": str(tmp_path / f"{stem}.png"),
                                       "collectives_png": str(tmp_path / f"{stem}_collectives.png")}
    for path in summary["report_paths"].values():
        assert Path(path).stat().st_size > 0, path

    result = json.loads((tmp_path / f"{stem}.json").read_text())
    assert result["case"] == "crnn/tiny" and result["preset"] == "tiny" and result["platform"] == "cpu"
    assert result["compiler_options"]  # --fast-compile reached the compiler
    one, two = result["points"]
    assert [p["devices"] for p in (one, two)] == [1, 2]
    assert [p["strategy"] for p in (one, two)] == ["dp", "dp"]
    assert two["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
    assert [p["global_batch"] for p in (one, two)] == [4, 8]  # the case's 4 rows per device
    assert one["param_count"] == two["param_count"] > 0 and one["flops"] > 0
    assert one["measured_step_s"] is None  # simulated devices are compiled, not timed
    # one device moves nothing; two all-reduce the gradients (the recurrent ones once per step
    # of the backward scan, so at least the parameter bytes)
    assert sum(one["collective_bytes_large"].values()) == 0
    assert two["collective_bytes_large"]["all-reduce"] >= 0.9 * two["param_bytes"]
    assert two["collective_bytes_large"]["all-gather"] > 0  # the default case mixes up rows across devices
    assert set(two["predicted"]) == {"v5e"} and two["predicted"]["v5e"]["efficiency"] > 0
    assert "| dp | 2 | 2,1,1 | 8 |" in (tmp_path / f"{stem}.md").read_text()
