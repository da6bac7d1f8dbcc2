#!/usr/bin/env bash
# Submit train_gpu.sbatch with sbatch options that match the process layout.
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

SCRIPT_SUMMARY="Submit tpu_scripts/slurm/train_gpu.sbatch: --nodes nodes with --gpus-per-node GPUs each, and
--ntasks-per-node equal to the GPU count (--procs=per-gpu) or 1 (--procs=per-node). The job runs
from the project root (sbatch --chdir) and logs to JOBNAME-JOBID.out there."
PASSTHROUGH_HELP="more arguments for experiments/run.py, e.g. -- --config.stages.train.lr=3e-4"
flag_required exp "experiment name (python experiments/run.py --list)"
flag_required workdir "checkpoints and metrics, on a file system every node shares"
flag preset paper "config preset passed to run.py"
flag nodes 1 "number of nodes"
flag gpus-per-node 8 "GPUs per node"
flag procs per-gpu "per-gpu (one process per GPU) or per-node (one process per node)"
flag coordinator-mode slurm "slurm or explicit (see train_gpu.sbatch --help)"
flag port 8476 "with --coordinator-mode=explicit: coordinator port"
flag time 24:00:00 "wall-clock limit (sbatch --time)"
flag partition "" "sbatch --partition; empty: the cluster default"
flag account "" "sbatch --account; empty: the cluster default"
flag job-name "" "sbatch --job-name; empty: jaxaudio-EXP"
flag python "" "Python with jaxaudio installed; empty: PROJECT/.venv/bin/python"
flag_bool requeue "requeue the job when the run exits 143 (time limit or preemption)"
flag_bool dry-run "print the sbatch command instead of submitting"
parse_flags "$@"
require_positive_int nodes "$JAXAUDIO_NODES"
require_positive_int gpus-per-node "$JAXAUDIO_GPUS_PER_NODE"
require_one_of procs "$JAXAUDIO_PROCS" per-gpu per-node
require_one_of coordinator-mode "$JAXAUDIO_COORDINATOR_MODE" slurm explicit

TASKS_PER_NODE=1
if [[ "$JAXAUDIO_PROCS" == per-gpu ]]; then TASKS_PER_NODE="$JAXAUDIO_GPUS_PER_NODE"; fi
SBATCH=(sbatch "--job-name=${JAXAUDIO_JOB_NAME:-jaxaudio-$JAXAUDIO_EXP}" "--nodes=$JAXAUDIO_NODES"
        "--gpus-per-node=$JAXAUDIO_GPUS_PER_NODE" "--ntasks-per-node=$TASKS_PER_NODE"
        "--time=$JAXAUDIO_TIME" "--chdir=$PROJECT_ROOT")
if [[ -n "$JAXAUDIO_PARTITION" ]]; then SBATCH+=("--partition=$JAXAUDIO_PARTITION"); fi
if [[ -n "$JAXAUDIO_ACCOUNT" ]]; then SBATCH+=("--account=$JAXAUDIO_ACCOUNT"); fi
JOB_ARGS=("--exp=$JAXAUDIO_EXP" "--workdir=$JAXAUDIO_WORKDIR" "--preset=$JAXAUDIO_PRESET"
          "--procs=$JAXAUDIO_PROCS" "--gpus-per-node=$JAXAUDIO_GPUS_PER_NODE"
          "--coordinator-mode=$JAXAUDIO_COORDINATOR_MODE" "--port=$JAXAUDIO_PORT")
if [[ -n "$JAXAUDIO_PYTHON" ]]; then JOB_ARGS+=("--python=$JAXAUDIO_PYTHON"); fi
if [[ "$JAXAUDIO_REQUEUE" == 1 ]]; then JOB_ARGS+=(--requeue); fi
if ((${#PASSTHROUGH[@]})); then JOB_ARGS+=(-- "${PASSTHROUGH[@]}"); fi

run "${SBATCH[@]}" "$TPU_SCRIPTS_DIR/slurm/train_gpu.sbatch" "${JOB_ARGS[@]}"
