"""Preemption safety, end to end: real processes killed with SIGKILL/SIGTERM and restarted.

The worker (resume_worker.py) runs the real train_loop on one CPU device. Kills are timed
from files and stdout markers (a committed checkpoint folder, a tmp folder, a printed line),
never from sleeps alone; the worker's own per-batch sleep only keeps training from ending
before the test gets to kill it. Subprocesses share a persistent compilation cache so only
the first one pays for XLA compilation.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.train.checkpoint import Checkpointer, abstract_like
from jaxaudio.train.loop import PREEMPTED_EXIT_CODE
from jaxaudio.train.state import TrainState

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")
TOTAL, EVERY = 40, 10


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory):
    env = dict(os.environ)
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def _start(env, *args, stdout=subprocess.PIPE):
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True
    )


def _run(env, *args, expect=0):
    proc = subprocess.run([sys.executable, WORKER, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def _wait_for(predicate, proc, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def reference_params(worker_env, tmp_path_factory):
    """Final parameters of an uninterrupted run with the same seed and data order."""
    workdir = tmp_path_factory.mktemp("reference")
    _run(worker_env, "train", workdir, "--total", TOTAL, "--ckpt-every", EVERY)
    return _load(workdir / "final_params.npz")


def _assert_same_params(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(worker_env, reference_params, tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    proc = _start(worker_env, "train", tmp_path, "--total", TOTAL, "--ckpt-every", EVERY, "--sleep", 0.05,
                  stdout=subprocess.DEVNULL)
    _wait_for(lambda: (ckpt_dir / str(EVERY)).is_dir(), proc, "the first committed checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "final_params.npz").exists(), "the run finished before it was killed"
    with Checkpointer(ckpt_dir) as ckpt:
        killed_at = ckpt.latest_step()
    assert killed_at is not None and EVERY <= killed_at < TOTAL

    resumed = _run(worker_env, "train", tmp_path, "--total", TOTAL, "--ckpt-every", EVERY)
    assert f"resumed from step {killed_at}" in resumed.stderr
    # The resumed run draws exactly the batches the killed one had not yet trained on.
    first_batch = int(resumed.stdout.split("BATCH ")[1].split()[0])
    assert first_batch == killed_at
    _assert_same_params(_load(tmp_path / "final_params.npz"), reference_params)

    # metrics.jsonl reads as one history: each logged step once, despite the kill.
    with open(tmp_path / "metrics.jsonl") as f:
        steps = [int(line.split('"step": ')[1].split(",")[0]) for line in f]
    assert steps == list(range(5, TOTAL + 1, 5))


def _sigterm_run(worker_env, workdir):
    """Start a run, SIGTERM it after its first checkpoint; return the step it reported."""
    proc = _start(worker_env, "train", workdir, "--total", TOTAL, "--ckpt-every", EVERY, "--sleep", 0.05)
    _wait_for(lambda: (workdir / "checkpoints" / str(EVERY)).is_dir(), proc, "the first committed checkpoint")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    line = [ln for ln in out.splitlines() if ln.startswith("PREEMPTED")][0]
    reported, drawn = int(line.split()[1]), int(line.split("drawn=")[1])
    assert reported == drawn  # one step per batch drawn: the step in flight was finished
    assert EVERY <= reported < TOTAL
    return reported


def test_sigterm_saves_a_checkpoint_at_the_current_step(worker_env, tmp_path):
    reported = _sigterm_run(worker_env, tmp_path)
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == reported
        assert ckpt.all_steps()[-2:] == sorted({EVERY * (reported // EVERY), reported})[-2:]


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(worker_env, reference_params, tmp_path):
    reported = _sigterm_run(worker_env, tmp_path)
    resumed = _run(worker_env, "train", tmp_path, "--total", TOTAL, "--ckpt-every", EVERY)
    assert f"resumed from step {reported}" in resumed.stderr
    _assert_same_params(_load(tmp_path / "final_params.npz"), reference_params)


def test_sigkill_during_checkpoint_write_keeps_previous_step(worker_env, tmp_path):
    # A few attempts: rarely, the rename that commits a step can land between seeing its tmp
    # folder and the kill; then that step is complete, and the test needs a torn one.
    for _attempt in range(3):
        directory = tmp_path / f"try{_attempt}"
        proc = _start(worker_env, "save-loop", directory)
        def tmp_after_first_save():
            names = os.listdir(directory) if directory.is_dir() else []
            return any(p.isdigit() for p in names) and any(".orbax-checkpoint-tmp" in p for p in names)

        _wait_for(tmp_after_first_save, proc, "a checkpoint being written")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        leftovers = [p for p in os.listdir(directory) if ".orbax-checkpoint-tmp" in p]
        if leftovers:
            break
    assert leftovers, "never caught a write in progress"
    torn_step = int(leftovers[0].split(".")[0])
    saved = sorted(int(p) for p in os.listdir(directory) if p.isdigit())
    assert torn_step not in saved and saved[-1] == torn_step - 1

    with Checkpointer(directory) as ckpt:
        assert ckpt.latest_step() == torn_step - 1
        template = TrainState(
            step=jnp.zeros((), jnp.int32),
            params={f"w{i}": jnp.zeros((512, 1024), jnp.float32) for i in range(12)},
            model_state={},
            opt_state={},
            rng=jax.random.key(0),
        )
        state, data_state = ckpt.restore(abstract_like(template))
    previous = torn_step - 1
    assert int(state.step) == previous and data_state == {"step": previous}
    for value in state.params.values():
        np.testing.assert_array_equal(np.asarray(value), np.full((512, 1024), previous, np.float32))
    np.testing.assert_array_equal(jax.random.key_data(state.rng), jax.random.key_data(jax.random.key(previous)))
    # The new Checkpointer removed the torn folder.
    assert not [p for p in os.listdir(directory) if ".orbax-checkpoint-tmp" in p]
