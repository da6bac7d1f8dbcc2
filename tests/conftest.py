"""Test set-up: 8 simulated CPU devices, so sharding tests run on any machine, and a
compilation cache for this session only, so a program compiled by one test (a system's
forward pass, say) is not compiled again by the next: the cache starts empty every run and is
removed at the end. With pytest-xdist's workers (``-n 2`` in pyproject.toml) the controller
makes the cache and the workers inherit it; tests are scheduled so that each module's fixtures,
and the session's smoke-trained runs, are built by one worker only."""
import os
import shutil
import tempfile

import pytest

# Must happen before jax is imported anywhere in the test session.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags = os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
# The tests are compile-bound (small arrays, many distinct programs): LLVM at -O0 compiles them
# about a quarter faster (the GeCoPair and augmentation tests: 101 -> 76 s) and computes the same
# numbers (a PMAM smoke run's metrics equal to the last digit); runs and benchmarks keep XLA's
# default level.
if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxaudio-test-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")


# Tests that share the session's smoke-trained workdirs (tests/experiments/conftest.py: each
# system trained once per process that asks for it) stay on one worker per task: the SED systems
# (PMAM, MAT-SED and the CRNN, which several modules use together) on one, the other tasks'
# systems (GeCo and the autoencoder, which share their data; the scene distillation; the two
# speech recognisers, which share their corpus) on the other, so the two sets train side by side.
# Their slowest tests in a full run: about 430 s (SED) and 490 s (the others); with the two
# recognisers (~190 s) among the SED systems it was about 620 s against 300.
SHARED_RUNS_DIR = "tests/experiments/"
OTHER_TASK_SYSTEMS = ("geco", "asd_ae", "rsic_kd", "paraformer", "ar_asr")
OTHER_TASK_MODULES = ("test_geco", "test_asd", "test_rsic", "test_asr", "test_paraformer", "test_ar_asr")


def uses_shared_runs(module_path: str) -> bool:
    """Does a test module take the ``trained`` or ``smoke_data`` fixture (in a test or a fixture of its own)?"""
    import re

    try:
        with open(module_path) as f:
            return re.search(r"def \w+\([^)]*\b(trained|smoke_data)\b", f.read()) is not None
    except OSError:
        return False


def shared_runs_scope(nodeid: str) -> str:
    """``tests/experiments/asd`` for the tests of the non-SED systems' runs, ``.../sed`` for the other
    tests of shared runs, the module itself for a module that uses none."""
    path = nodeid.split("::", 1)[0]
    if not uses_shared_runs(path):
        return path
    module = path.rsplit("/", 1)[-1]
    params = nodeid.rsplit("[", 1)[-1].rstrip("]") if nodeid.endswith("]") else ""
    asd = module.startswith(OTHER_TASK_MODULES) or params in OTHER_TASK_SYSTEMS
    return SHARED_RUNS_DIR + ("asd" if asd else "sed")


def pytest_xdist_make_scheduler(config, log):
    """Each test module on one worker (its module fixtures built once), and the tests under
    tests/experiments/ in two scopes by the runs they share (``shared_runs_scope``). Not ``--dist
    loadgroup`` marks: pytest 9 node ids no longer carry the group suffix xdist 3.8 adds."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleOrSharedRuns(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return shared_runs_scope(nodeid) if module.startswith(SHARED_RUNS_DIR) else module

    return ModuleOrSharedRuns(config, log)


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def require_reference():
    """``require_reference("timm")``: import a reference library for a parity test; skip without it
    on a developer's machine, but fail in CI (``CI`` set), where ``.ci/run`` installs it and a
    reference-parity test must never skip."""
    import importlib

    def require(name: str):
        if os.environ.get("CI"):
            return importlib.import_module(name)
        return pytest.importorskip(name)

    return require
