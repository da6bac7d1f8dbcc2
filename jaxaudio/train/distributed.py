"""Start multi-process JAX when the launcher says so, and do nothing otherwise.

``maybe_initialize()`` must run before anything touches a device. It reads, in order:

1. ``JAXAUDIO_DISTRIBUTED=0``: never initialise (debugging a pod worker on its own).
2. ``JAXAUDIO_COORDINATOR`` or ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0)
   together with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; optional
   ``JAX_LOCAL_DEVICE_IDS`` (comma-separated). Used for local multi-process tests, GPU
   clusters without SLURM, and any launcher that sets the three explicitly.
3. SLURM with more than one task (``SLURM_JOB_ID`` and ``SLURM_NTASKS`` > 1): JAX reads
   the coordinator, process count and id from SLURM itself.
4. A Cloud TPU pod slice: ``JAXAUDIO_TPU_POD=1`` (set by ``tpu_scripts``) or
   ``TPU_WORKER_HOSTNAMES`` naming more than one host: JAX asks the TPU metadata.

On CPU, cross-process collectives use gloo (``jax_cpu_collectives_implementation``).
"""
from __future__ import annotations

import os
from typing import Mapping

import jax

from jaxaudio.errors import ConfigError

COORDINATOR_VARS = ("JAXAUDIO_COORDINATOR", "JAX_COORDINATOR_ADDRESS")

_initialized = False


def _int_env(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name)
    if raw is None:
        raise ConfigError(f"{name} must be set when a coordinator address is given ({'/'.join(COORDINATOR_VARS)})")
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be an integer") from None


def initialize_kwargs(env: Mapping[str, str] | None = None) -> dict | None:
    """What ``jax.distributed.initialize`` should be called with, or None for single-process."""
    env = os.environ if env is None else env
    if env.get("JAXAUDIO_DISTRIBUTED", "") == "0":
        return None
    address = next((env[name] for name in COORDINATOR_VARS if env.get(name)), None)
    if address:
        kwargs = {
            "coordinator_address": address,
            "num_processes": _int_env(env, "JAX_NUM_PROCESSES"),
            "process_id": _int_env(env, "JAX_PROCESS_ID"),
        }
        if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
            raise ConfigError(
                f"JAX_PROCESS_ID={kwargs['process_id']} must lie in [0, JAX_NUM_PROCESSES={kwargs['num_processes']})"
            )
        if env.get("JAX_LOCAL_DEVICE_IDS"):
            kwargs["local_device_ids"] = [int(i) for i in env["JAX_LOCAL_DEVICE_IDS"].split(",")]
        return kwargs
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        return {}
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if env.get("JAXAUDIO_TPU_POD", "") == "1" or len(hosts) > 1:
        return {}
    return None


def maybe_initialize() -> bool:
    """Call ``jax.distributed.initialize`` when the environment names a multi-process run.

    Returns whether it initialised (False when single-process or already initialised).
    """
    global _initialized
    if _initialized:
        return False
    kwargs = initialize_kwargs()
    if kwargs is None:
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    _initialized = True
    return True
