"""Two local processes (4 CPU devices each, gloo collectives) train like one 8-device process.

Each process loads only its own rows of every global batch (``process_batch_slice``) and
hands them to ``global_batch``; if the rows were mis-assigned, duplicated or dropped, the
loss curve would differ from the single-process run on the same 8-device mesh.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
TIMEOUT_S = 300


def _helper():
    if "tiny_training" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tiny_training", HERE / "tiny_training.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["tiny_training"] = module
        spec.loader.exec_module(module)
    return sys.modules["tiny_training"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(out_dir: Path) -> None:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ)
        env.update(
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
            JAX_PLATFORMS="cpu",
            JAXAUDIO_COORDINATOR=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(rank),
        )
        log = open(out_dir / f"process{rank}.log", "w")
        procs.append(
            (subprocess.Popen([sys.executable, str(HERE / "multihost_worker.py"), str(out_dir)],
                              env=env, stdout=log, stderr=subprocess.STDOUT), log)
        )
    try:
        for proc, _ in procs:
            proc.wait(timeout=TIMEOUT_S)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for rank, (proc, _) in enumerate(procs):
        if proc.returncode != 0:
            tail = (out_dir / f"process{rank}.log").read_text()[-3000:]
            pytest.fail(f"process {rank} exited with {proc.returncode}:\n{tail}")


@pytest.mark.multihost
def test_two_processes_match_one(tmp_path):
    tt = _helper()
    _launch(tmp_path)
    results = [json.loads((tmp_path / f"process{rank}.json").read_text()) for rank in range(2)]

    # Every process read its own half of every global batch: disjoint, and together all of it.
    for step in range(tt.TOTAL_STEPS):
        first, second = (set(r["read"][step]) for r in results)
        assert len(first) == len(second) == tt.GLOBAL_BATCH // 2
        assert not first & second
        assert first | second == set(range(step * tt.GLOBAL_BATCH, (step + 1) * tt.GLOBAL_BATCH))

    reference = tt.run_cached("transformer", tt.MULTIHOST_MESH)
    for rank, result in enumerate(results):
        np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-5, atol=0, err_msg=f"process {rank}")
        with np.load(tmp_path / f"process{rank}_params.npz") as params:
            assert sorted(params.files) == sorted(reference["params"])
            for path, value in reference["params"].items():
                if path.endswith("attention/key/bias"):
                    continue  # zero exact gradient; see test_sharding_equivalence.GRADIENT_FREE
                np.testing.assert_allclose(params[path], value, rtol=1e-5, atol=1e-6, err_msg=path)

    # The checkpoint both processes wrote restores in this single process (8 local devices)
    # onto a one-device layout, with the values the processes trained.
    import jax
    from jaxaudio.train.checkpoint import Checkpointer
    from jaxaudio.train.sharding import path_to_str

    target = reference["state"]
    device = jax.devices()[0]
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(device)), target
    )
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == tt.TOTAL_STEPS
        restored, _ = ckpt.restore(abstract)
    assert int(restored.step) == tt.TOTAL_STEPS
    with np.load(tmp_path / "process0_params.npz") as params:
        restored_params = jax.tree_util.tree_flatten_with_path(restored.params)[0]
        assert sorted(path_to_str(p) for p, _ in restored_params) == sorted(params.files)
        for path, leaf in restored_params:
            np.testing.assert_array_equal(np.asarray(leaf), params[path_to_str(path)], err_msg=path_to_str(path))
