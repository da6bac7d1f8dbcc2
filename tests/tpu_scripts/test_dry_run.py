"""The launch scripts print exactly the right gcloud / sbatch / srun commands and never run them.

Each script runs with --dry-run through bash, with fake `gcloud`, `sbatch` and `srun` first on
PATH that record any call (a call fails the test). Printed lines are parsed back with shlex,
so the assertions compare real argument vectors, and the remote shell snippets are checked
with `bash -n` and tokenised. The environment the scripts give the run is fed to
`jaxaudio.train.distributed.initialize_kwargs`, the reader on the other side.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from jaxaudio.train.distributed import initialize_kwargs

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tpu_scripts"
ALL_SCRIPTS = sorted(SCRIPTS.glob("*.sh")) + sorted((SCRIPTS / "slurm").glob("*.sh")) + [
    SCRIPTS / "slurm" / "train_gpu.sbatch"
]

V5E = ["--name=jx-v5e", "--zone=us-west4-a", "--project=my-proj"]
V4_TARGET = ["--name=jx-v4", "--zone=us-central2-b", "--project=my-proj"]
V4 = [*V4_TARGET, "--accelerator-type=v4-32"]


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def sandbox(tmp_path):
    """PATH with tripwire cloud/cluster tools; an environment free of JAXAUDIO_* settings."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ("gcloud", "sbatch", "srun", "gsutil"):
        _write_exe(bin_dir / tool, f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit 97\n')
    _write_exe(bin_dir / "scontrol", "#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] || exit 97\n"
               "echo gpu-node-007\necho gpu-node-008\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAXAUDIO_", "SLURM_", "JAX_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["TMPDIR"] = str(tmp_path)
    yield env, calls, tmp_path
    assert not calls.exists(), f"a cloud/cluster tool was executed: {calls.read_text()}"


def run_script(env, script, *args, check=True):
    result = subprocess.run(["bash", str(SCRIPTS / script), *args], env=env, capture_output=True,
                            text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def dry(env, script, *args):
    """The printed commands as argument vectors."""
    out = run_script(env, script, "--dry-run", *args).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def remote(argv):
    """The shell snippet a `gcloud ... ssh --command=...` line runs on the workers."""
    commands = [a for a in argv if a.startswith("--command=")]
    assert len(commands) == 1, argv
    snippet = commands[0][len("--command="):]
    subprocess.run(["bash", "-n", "-c", snippet], check=True)
    return snippet


def tokens(snippet):
    lexer = shlex.shlex(snippet, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def launched(snippet):
    """(environment, argv) of the process launch.sh starts: `K=V ... nohup setsid ... >> log`."""
    toks = tokens(snippet)
    start = toks.index("nohup")
    env_start = start
    while env_start > 0 and "=" in toks[env_start - 1] and toks[env_start - 1][0].isalpha():
        env_start -= 1
    env = dict(t.split("=", 1) for t in toks[env_start:start])
    argv = toks[start:toks.index(">>", start)]
    return env, argv


# ---- create.sh ------------------------------------------------------------------------


def test_create_v5e_8_on_demand(sandbox):
    env, _, _ = sandbox
    assert dry(env, "create.sh", *V5E) == [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", "jx-v5e", "--zone=us-west4-a",
        "--project=my-proj", "--accelerator-type=v5litepod-8", "--version=v2-alpha-tpuv5-lite",
    ]]


def test_create_v4_32_spot(sandbox):
    env, _, _ = sandbox
    assert dry(env, "create.sh", *V4, "--spot") == [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", "jx-v4", "--zone=us-central2-b",
        "--project=my-proj", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
    ]]


def test_create_queued_spot_waits_for_active(sandbox):
    env, _, _ = sandbox
    create, describe = dry(env, "create.sh", *V4, "--queued", "--spot", "--wait")
    assert create == [
        "gcloud", "compute", "tpus", "queued-resources", "create", "jx-v4", "--zone=us-central2-b",
        "--project=my-proj", "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base",
        "--node-id=jx-v4", "--spot",
    ]
    assert describe == [
        "gcloud", "compute", "tpus", "queued-resources", "describe", "jx-v4", "--zone=us-central2-b",
        "--project=my-proj", "--format=value(state.state)",
    ]


def test_create_queued_best_effort_uses_alpha_track(sandbox):
    env, _, _ = sandbox
    (argv,) = dry(env, "create.sh", *V5E, "--queued", "--best-effort")
    assert argv[:6] == ["gcloud", "alpha", "compute", "tpus", "queued-resources", "create"]
    assert argv[-1] == "--best-effort" and "--spot" not in argv


@pytest.mark.parametrize("accelerator, runtime", [
    ("v6e-8", "v2-alpha-tpuv6e"), ("v5p-16", "v2-alpha-tpuv5"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v3-8", "tpu-ubuntu2204-base"),
])
def test_create_default_runtime_per_generation(sandbox, accelerator, runtime):
    env, _, _ = sandbox
    (argv,) = dry(env, "create.sh", *V5E, f"--accelerator-type={accelerator}")
    assert f"--version={runtime}" in argv


def test_create_runtime_override_and_passthrough(sandbox):
    env, _, _ = sandbox
    (argv,) = dry(env, "create.sh", *V5E, "--runtime-version=v2-alpha-tpuv5-lite-next",
                  "--", "--network=my-net")
    assert argv[-2:] == ["--version=v2-alpha-tpuv5-lite-next", "--network=my-net"]


def test_environment_gives_defaults_and_flags_win(sandbox):
    env, _, _ = sandbox
    env = dict(env, JAXAUDIO_NAME="from-env", JAXAUDIO_ZONE="europe-west4-a", JAXAUDIO_SPOT="1")
    (argv,) = dry(env, "create.sh", "--zone=us-east5-a")
    assert argv[5:7] == ["from-env", "--zone=us-east5-a"] and argv[-1] == "--spot"


@pytest.mark.parametrize("script, args, message", [
    ("create.sh", ["--zone=z"], "--name is required"),
    ("create.sh", ["--name=n"], "--zone is required"),
    ("setup.sh", ["--name=n"], "--zone is required"),
    ("launch.sh", ["--name=n", "--zone=z", "--workdir=gs://b/w"], "--exp is required"),
    ("launch.sh", ["--name=n", "--zone=z", "--exp=crnn"], "--workdir is required"),
    ("logs.sh", ["--zone=z"], "--name is required"),
    ("stop.sh", ["--name=n"], "--zone is required"),
    ("delete.sh", ["--zone=z"], "--name is required"),
    ("resume_spot.sh", ["--name=n", "--zone=z", "--workdir=gs://b/w"], "--exp is required"),
    ("slurm/launch.sh", ["--exp=crnn"], "--workdir is required"),
    ("slurm/train_gpu.sbatch", ["--workdir=/w"], "--exp is required"),
])
def test_missing_required_flag_fails_naming_it(sandbox, script, args, message):
    env, _, _ = sandbox
    result = run_script(env, script, "--dry-run", *args, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert f"error: {message}" in result.stderr


@pytest.mark.parametrize("script, args, message", [
    ("create.sh", [*V5E, "--accelerator-type=tpu-8"], "--accelerator-type must look like"),
    ("create.sh", [*V5E, "--best-effort"], "--best-effort needs --queued"),
    ("create.sh", [*V5E, "--queued", "--best-effort", "--spot"], "--best-effort and --spot exclude"),
    ("create.sh", [*V5E, "--wait"], "--wait needs --queued"),
    ("create.sh", [*V5E, "--colour=blue"], "unknown flag --colour"),
    ("launch.sh", [*V4, "--exp=crnn", "--workdir=/home/me/w"], "--workdir must be a gs:// path"),
    ("launch.sh", [*V4, "--exp=crnn", "--workdir=gs://b/w", "--worker=0"], "--worker must be all"),
    ("launch.sh", [*V5E, "--exp=crnn", "--workdir=gs://b/w", "--env=1BAD=x"], "--env must look like"),
    ("resume_spot.sh", [*V5E, "--exp=crnn", "--workdir=/tmp/w"], "--workdir must be a gs:// path"),
    ("setup.sh", [*V5E, "--source=/no/such/dir"], "--source must be a git URL or an existing folder"),
    ("stop.sh", [*V5E, "--grace=soon"], "--grace must be a non-negative integer"),
    ("slurm/launch.sh", ["--exp=e", "--workdir=/w", "--procs=per-core"], "--procs must be one of"),
])
def test_invalid_values_fail_naming_the_flag(sandbox, script, args, message):
    env, _, _ = sandbox
    result = run_script(env, script, "--dry-run", *args, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr


@pytest.mark.parametrize("script", [p.relative_to(SCRIPTS).as_posix() for p in ALL_SCRIPTS
                                    if p.name not in ("common.sh", "worker_run.sh", "task.sh")])
def test_help_lists_every_flag_with_its_environment_variable(sandbox, script):
    env, _, _ = sandbox
    text = run_script(env, script, "--help").stdout
    assert text.startswith("usage: ") and "--dry-run" in text
    assert "[env JAXAUDIO_DRY_RUN=1]" in text


# ---- setup.sh -------------------------------------------------------------------------


def test_setup_copies_local_tree_to_every_worker(sandbox):
    env, _, tmp = sandbox
    tar, scp, ssh = dry(env, "setup.sh", *V4_TARGET)
    tarball = str(tmp / "jaxaudio-jx-v4.tar.gz")
    assert tar[:3] == ["tar", "-czf", tarball] and tar[-3:] == ["-C", str(ROOT), "."]
    assert "--exclude=.git" in tar and "--exclude=.venv" in tar
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, "jx-v4:jaxaudio-src.tar.gz",
                   "--zone=us-central2-b", "--project=my-proj", "--worker=all"]
    assert ssh[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jx-v4", "--zone=us-central2-b",
                       "--project=my-proj", "--worker=all"]
    steps = [s.strip() for s in remote(ssh).split(";")]
    assert "tar -xzf jaxaudio-src.tar.gz -C jaxaudio" in steps
    assert tokens(steps[-2]) == [".venv/bin/pip", "install", "--quiet", "-e", ".[tpu]"]


def test_setup_clones_git_url_at_ref(sandbox):
    env, _, _ = sandbox
    (ssh,) = dry(env, "setup.sh", *V5E, "--source=https://github.com/me/jaxaudio.git", "--ref=v1.2")
    snippet = remote(ssh)
    assert "--worker=all" in ssh
    assert "git clone --quiet https://github.com/me/jaxaudio.git jaxaudio" in snippet
    assert "git -C jaxaudio checkout --quiet --detach v1.2" in snippet


# ---- launch.sh ------------------------------------------------------------------------


def test_launch_v4_32_sets_pod_flag_on_all_workers(sandbox):
    env, _, _ = sandbox
    (ssh,) = dry(env, "launch.sh", *V4, "--exp=crnn", "--workdir=gs://bucket/runs/crnn-v4",
                 "--", "--config.stages.train.lr=3e-4")
    assert ssh[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jx-v4", "--zone=us-central2-b",
                       "--project=my-proj", "--worker=all"]
    run_env, argv = launched(remote(ssh))
    assert run_env == {"PYTHONUNBUFFERED": "1", "JAXAUDIO_TPU_POD": "1"}
    assert argv == ["nohup", "setsid", "bash", "tpu_scripts/worker_run.sh", "logs/train.pid",
                    "logs/train.exit", ".venv/bin/python", "experiments/run.py", "--exp=crnn",
                    "--preset=paper", "--workdir=gs://bucket/runs/crnn-v4", "--config.stages.train.lr=3e-4"]
    # The other side: distributed.py initialises from the TPU metadata on a pod slice.
    assert initialize_kwargs(run_env) == {}


def test_launch_v5e_8_single_host_has_no_pod_flag(sandbox):
    env, _, _ = sandbox
    (ssh,) = dry(env, "launch.sh", *V5E, "--exp=pmam", "--workdir=gs://bucket/runs/pmam",
                 "--preset=tiny")
    run_env, argv = launched(remote(ssh))
    assert "--worker=all" in ssh and "JAXAUDIO_TPU_POD" not in run_env
    assert argv[-3:] == ["--exp=pmam", "--preset=tiny", "--workdir=gs://bucket/runs/pmam"]
    assert initialize_kwargs(run_env) is None


def test_launch_extra_environment_survives_quoting(sandbox):
    env, _, _ = sandbox
    xla = "--xla_tpu_enable_latency_hiding_scheduler=true --xla_foo='a b'"
    (ssh,) = dry(env, "launch.sh", *V4, "--exp=crnn", "--workdir=gs://b/w", f"--env=XLA_FLAGS={xla}",
                 "--env=JAX_COMPILATION_CACHE_DIR=gs://b/cache")
    run_env, _ = launched(remote(ssh))
    assert run_env["XLA_FLAGS"] == xla
    assert run_env["JAX_COMPILATION_CACHE_DIR"] == "gs://b/cache"


def test_logs_stop_delete(sandbox):
    env, _, _ = sandbox
    (ssh,) = dry(env, "logs.sh", *V4_TARGET)
    assert "--worker=0" in ssh and tokens(remote(ssh)) == ["tail", "-n", "100", "-F", "jaxaudio/logs/train.log"]
    (ssh,) = dry(env, "logs.sh", *V4_TARGET, "--worker=all", "--once")
    assert "--worker=all" in ssh and "sed -u" in remote(ssh) and "-F" not in remote(ssh)
    (ssh,) = dry(env, "stop.sh", *V4_TARGET, "--grace=60")
    assert "--worker=all" in ssh
    snippet = remote(ssh)
    assert 'kill -TERM "$pid"' in snippet and "$(seq 60)" in snippet and "logs/train.pid" in snippet
    assert dry(env, "delete.sh", *V4_TARGET) == [[
        "gcloud", "compute", "tpus", "tpu-vm", "delete", "jx-v4", "--zone=us-central2-b", "--project=my-proj"]]
    assert dry(env, "delete.sh", *V4_TARGET, "--queued", "--yes") == [[
        "gcloud", "compute", "tpus", "queued-resources", "delete", "jx-v4", "--zone=us-central2-b",
        "--project=my-proj", "--force", "--quiet"]]


# ---- resume_spot.sh -------------------------------------------------------------------


def test_resume_spot_prints_one_recovery(sandbox):
    env, _, _ = sandbox
    lines = dry(env, "resume_spot.sh", *V4, "--exp=crnn", "--workdir=gs://bucket/runs/crnn-v4",
                "--", "--config.stages.train.lr=3e-4")
    describe, delete, create, tar, scp, setup, launch = lines
    assert describe == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "jx-v4", "--zone=us-central2-b",
                        "--project=my-proj", "--format=value(state)"]
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "jx-v4", "--zone=us-central2-b",
                      "--project=my-proj", "--quiet"]
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
    assert create[-2:] == ["--version=tpu-ubuntu2204-base", "--spot"]
    assert tar[0] == "tar" and scp[4] == "scp" and "--worker=all" in setup
    run_env, argv = launched(remote(launch))
    assert run_env["JAXAUDIO_TPU_POD"] == "1"
    assert argv[-2:] == ["--workdir=gs://bucket/runs/crnn-v4", "--config.stages.train.lr=3e-4"]


def test_resume_spot_queued_recreates_the_queued_resource(sandbox):
    env, _, _ = sandbox
    lines = dry(env, "resume_spot.sh", *V5E, "--exp=crnn", "--workdir=gs://b/w", "--queued")
    assert lines[0][3:5] == ["queued-resources", "describe"]
    assert lines[1][3:5] == ["queued-resources", "delete"] and lines[1][-2:] == ["--force", "--quiet"]
    assert lines[2][3:5] == ["queued-resources", "create"] and lines[2][-1] == "--spot"
    assert lines[3][3:5] == ["queued-resources", "describe"]  # --wait until ACTIVE
    launch_env, _ = launched(remote(lines[-1]))
    assert "JAXAUDIO_TPU_POD" not in launch_env


# ---- Slurm ----------------------------------------------------------------------------

SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-node-[007-008]"}


def test_slurm_launch_builds_sbatch(sandbox):
    env, _, _ = sandbox
    (argv,) = dry(env, "slurm/launch.sh", "--exp=crnn", "--workdir=/shared/crnn", "--nodes=2",
                  "--partition=gpu", "--", "--config.stages.train.lr=3e-4")
    assert argv == [
        "sbatch", "--job-name=jaxaudio-crnn", "--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8",
        "--time=24:00:00", f"--chdir={ROOT}", "--partition=gpu", str(SCRIPTS / "slurm/train_gpu.sbatch"),
        "--exp=crnn", "--workdir=/shared/crnn", "--preset=paper", "--procs=per-gpu", "--gpus-per-node=8",
        "--coordinator-mode=slurm", "--port=8476", "--", "--config.stages.train.lr=3e-4"]
    (argv,) = dry(env, "slurm/launch.sh", "--exp=crnn", "--workdir=/w", "--procs=per-node", "--gpus-per-node=4")
    assert "--ntasks-per-node=1" in argv and "--gpus-per-node=4" in argv


def test_sbatch_slurm_mode_one_process_per_gpu(sandbox):
    env, _, _ = sandbox
    lines = dry(dict(env, **SLURM_JOB), "slurm/train_gpu.sbatch", "--exp=crnn", "--workdir=/shared/crnn")
    assert lines == [
        ["export", "PYTHONUNBUFFERED=1"],
        ["srun", "--ntasks-per-node=8", "--kill-on-bad-exit=1", f"--chdir={ROOT}", "bash",
         str(SCRIPTS / "slurm/task.sh"), "per-gpu", "8", str(ROOT / ".venv/bin/python"), "experiments/run.py",
         "--exp=crnn", "--preset=paper", "--workdir=/shared/crnn"]]


def test_sbatch_explicit_coordinator_from_scontrol(sandbox):
    env, _, _ = sandbox
    lines = dry(dict(env, **SLURM_JOB), "slurm/train_gpu.sbatch", "--exp=crnn", "--workdir=/w",
                "--coordinator-mode=explicit", "--procs=per-node", "--port=9999")
    assert lines[:2] == [["export", "JAX_COORDINATOR_ADDRESS=gpu-node-007:9999"],
                         ["export", "JAX_NUM_PROCESSES=2"]]
    assert lines[-1][:2] == ["srun", "--ntasks-per-node=1"] and lines[-1][6] == "per-node"


def test_sbatch_outside_a_job_fails(sandbox):
    env, _, _ = sandbox
    result = run_script(env, "slurm/train_gpu.sbatch", "--dry-run", "--exp=crnn", "--workdir=/w", check=False)
    assert result.returncode == 2 and "SLURM_JOB_ID is unset" in result.stderr


def _task_env(env, *args):
    out = subprocess.run(["bash", str(SCRIPTS / "slurm/task.sh"), *args, "env"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_task_per_gpu_each_process_sees_one_gpu(sandbox):
    env, _, _ = sandbox
    slurm = dict(env, SLURM_JOB_ID="4242", SLURM_NTASKS="16", SLURM_PROCID="11", SLURM_LOCALID="3",
                 CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
    seen = _task_env(slurm, "per-gpu", "8")
    assert seen["CUDA_VISIBLE_DEVICES"] == "3" and seen["JAX_LOCAL_DEVICE_IDS"] == "0"
    assert initialize_kwargs(seen) == {}  # JAX takes coordinator and ranks from SLURM_*
    bound = _task_env(dict(slurm, CUDA_VISIBLE_DEVICES="5"), "per-gpu", "8")
    assert bound["CUDA_VISIBLE_DEVICES"] == "5"  # Slurm already bound one GPU to the task
    explicit = _task_env(dict(slurm, JAX_COORDINATOR_ADDRESS="gpu-node-007:8476", JAX_NUM_PROCESSES="16"),
                         "per-gpu", "8")
    assert initialize_kwargs(explicit) == {"coordinator_address": "gpu-node-007:8476", "num_processes": 16,
                                           "process_id": 11, "local_device_ids": [0]}


def test_task_per_node_drives_all_local_gpus(sandbox):
    env, _, _ = sandbox
    seen = _task_env(dict(env, SLURM_LOCALID="0", SLURM_PROCID="1", JAX_COORDINATOR_ADDRESS="n7:8476",
                          JAX_NUM_PROCESSES="2"), "per-node", "4")
    assert initialize_kwargs(seen) == {"coordinator_address": "n7:8476", "num_processes": 2,
                                       "process_id": 1, "local_device_ids": [0, 1, 2, 3]}


# ---- launch.sh and stop.sh against a simulated worker ---------------------------------


FAKE_PYTHON = """#!/usr/bin/env bash
echo "args: $*"
echo "pod: ${JAXAUDIO_TPU_POD:-unset}"
case "$*" in *--exp=quick*) exit 0 ;; esac
trap 'echo "SIGTERM: checkpoint saved"; exit 143' TERM
while :; do sleep 0.05; done
"""


def _wait_for(path: Path, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def test_launch_and_stop_on_a_simulated_worker(tmp_path):
    """A fake gcloud runs each --command in a local 'worker home': the run starts detached,
    records its pid, refuses a second launch, and stop.sh's SIGTERM ends it with 143."""
    home = tmp_path / "home"
    project = home / "jaxaudio"
    (project / "tpu_scripts").mkdir(parents=True)
    (project / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(SCRIPTS / "worker_run.sh", project / "tpu_scripts" / "worker_run.sh")
    _write_exe(project / ".venv" / "bin" / "python", FAKE_PYTHON)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(bin_dir / "gcloud", f"""#!/usr/bin/env bash
[ "$1 $2 $3 $4" = "compute tpus tpu-vm ssh" ] || exit 97
for arg in "$@"; do case "$arg" in --command=*) cmd="${{arg#--command=}}" ;; esac; done
cd "{home}" && HOME="{home}" bash -c "$cmd"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXAUDIO_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    logs = project / "logs"
    pid = None
    try:
        run_script(env, "launch.sh", *V4, "--exp=crnn", "--workdir=gs://b/w")
        pid = int(_wait_for(logs / "train.pid"))
        again = run_script(env, "launch.sh", *V4, "--exp=crnn", "--workdir=gs://b/w", check=False)
        assert again.returncode != 0 and "a run is still going" in again.stderr
        stopped = run_script(env, "stop.sh", *V4_TARGET, "--grace=20")
        assert "stopped" in stopped.stdout
        assert _wait_for(logs / "train.exit") == "143"
        log = (logs / "train.log").read_text()
        assert "args: experiments/run.py --exp=crnn --preset=paper --workdir=gs://b/w" in log
        assert "pod: 1" in log and "SIGTERM: checkpoint saved" in log
        run_script(env, "launch.sh", *V5E, "--exp=quick", "--workdir=gs://b/q")
        deadline = time.monotonic() + 20
        while (logs / "train.exit").read_text().strip() != "0" if (logs / "train.exit").exists() else True:
            assert time.monotonic() < deadline, "the quick run did not finish"
            time.sleep(0.05)
        assert "pod: unset" in (logs / "train.log").read_text()
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _resume_with_script(tmp_path, states, statuses, *extra):
    """Run resume_spot.sh (for real) against a fake gcloud that plays back VM states and run
    states; return (exit code, stderr, the gcloud actions it took in order)."""
    (tmp_path / "states").write_text("".join(f"{s}\n" for s in states))
    (tmp_path / "statuses").write_text("".join(f"{s}\n" for s in statuses))
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(bin_dir / "gcloud", f"""#!/usr/bin/env bash
pop() {{ head -n 1 "$1"; sed -i 1d "$1"; }}
case "$*" in
    *" describe "*) pop "{tmp_path}/states" ;;
    *"echo RUNNING"*) pop "{tmp_path}/statuses" ;;
    *"pip install"*) echo setup >> "{calls}" ;;
    *nohup*) echo launch >> "{calls}" ;;
    *) echo "$4" >> "{calls}" ;;
esac
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXAUDIO_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    result = run_script(env, "resume_spot.sh", *V4, "--exp=crnn", "--workdir=gs://b/w", "--poll-seconds=1",
                        "--source=https://example.com/jaxaudio.git", *extra, check=False)
    return result.returncode, result.stderr, calls.read_text().split() if calls.exists() else []


def test_resume_spot_loop_recreates_relaunches_and_stops_when_done(tmp_path):
    code, err, calls = _resume_with_script(
        tmp_path, ["PREEMPTED", "READY", "READY", "READY"], ["RUNNING", "EXITED 143", "EXITED 0"])
    assert code == 0, err
    assert calls == ["delete", "create", "setup", "launch", "launch"]
    assert "recovery 2/10" in err and "the run finished" in err


def test_resume_spot_loop_stops_on_a_failed_run(tmp_path):
    code, err, calls = _resume_with_script(tmp_path, ["READY"], ["EXITED 1"])
    assert code == 2 and "the run failed (1)" in err and calls == []


def test_resume_spot_loop_gives_up_after_max_retries(tmp_path):
    # Empty state = describe found nothing: the VM is created (recovery 1); preempted again: give up.
    code, err, calls = _resume_with_script(tmp_path, ["", "CREATING", "PREEMPTED"], [], "--max-retries=1")
    assert code == 2 and "gave up after --max-retries=1" in err
    assert calls == ["delete", "create", "setup", "launch"]


# ---- static checks --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
    result = subprocess.run(["shellcheck", *map(str, ALL_SCRIPTS)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
