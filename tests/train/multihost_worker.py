"""One process of the 2-process test: ``python multihost_worker.py OUT_DIR``.

The parent sets JAXAUDIO_COORDINATOR, JAX_NUM_PROCESSES, JAX_PROCESS_ID and 4 CPU devices
per process. This process joins the 8-device mesh, feeds only its own rows of every
global batch, and writes what it read, the resulting losses/params, and a checkpoint
written by both processes to OUT_DIR.
"""
import json
import sys
from pathlib import Path

from jaxaudio.train.distributed import maybe_initialize


def main(out_dir: str) -> None:
    assert maybe_initialize(), "the coordinator environment was not picked up"
    import jax
    import numpy as np

    import tiny_training as tt  # next to this script, so on sys.path
    from jaxaudio.train.mesh import make_mesh

    assert jax.process_count() == 2 and jax.local_device_count() == 4 and jax.device_count() == 8
    result = tt.run("transformer", make_mesh(*tt.MULTIHOST_MESH), init="jit")
    out = Path(out_dir)
    rank = jax.process_index()
    (out / f"process{rank}.json").write_text(json.dumps({"losses": result["losses"], "read": result["read"]}))
    np.savez(out / f"process{rank}_params.npz", **result["params"])

    # Both processes write one checkpoint together; the parent restores it in one process.
    from jaxaudio.train.checkpoint import Checkpointer

    ckpt = Checkpointer(out / "checkpoints", async_save=False)
    ckpt.save(tt.TOTAL_STEPS, result["state"], force=True)
    ckpt.wait()
    ckpt.close()
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
