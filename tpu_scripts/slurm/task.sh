#!/usr/bin/env bash
# Runs once per srun task (started by train_gpu.sbatch): choose the GPUs this process drives,
# then exec the command.
#
#   task.sh per-gpu|per-node GPUS_PER_NODE COMMAND [ARGS...]
#
# per-gpu:  this task keeps one GPU visible, the SLURM_LOCALID-th of the node's (CUDA then calls
#           it device 0, hence JAX_LOCAL_DEVICE_IDS=0). A task Slurm already bound to a single
#           GPU keeps that one.
# per-node: the one task on the node drives all GPUS_PER_NODE GPUs. JAX's own Slurm detection
#           would otherwise pick only GPU SLURM_LOCALID (= 0), hence JAX_LOCAL_DEVICE_IDS.
# With an explicit coordinator (JAX_COORDINATOR_ADDRESS), the process id is the Slurm rank.
set -euo pipefail

if (($# < 3)); then
    echo "usage: $(basename "$0") per-gpu|per-node GPUS_PER_NODE COMMAND [ARGS...]" >&2
    exit 2
fi
procs="$1"
gpus_per_node="$2"
shift 2
: "${SLURM_LOCALID:?task.sh runs under srun (SLURM_LOCALID is unset)}"

case "$procs" in
    per-gpu)
        visible=()
        if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then IFS=, read -ra visible <<< "$CUDA_VISIBLE_DEVICES"; fi
        if ((${#visible[@]} == 0)); then
            export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"
        elif ((${#visible[@]} > 1)); then
            ((SLURM_LOCALID < ${#visible[@]})) \
                || { echo "task.sh: local task $SLURM_LOCALID but only GPUs $CUDA_VISIBLE_DEVICES are visible" >&2; exit 2; }
            export CUDA_VISIBLE_DEVICES="${visible[$SLURM_LOCALID]}"
        fi
        export JAX_LOCAL_DEVICE_IDS=0
        ;;
    per-node)
        JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((gpus_per_node - 1)))"
        export JAX_LOCAL_DEVICE_IDS
        ;;
    *)
        echo "task.sh: first argument must be per-gpu or per-node (got '$procs')" >&2
        exit 2
        ;;
esac
if [[ -n "${JAX_COORDINATOR_ADDRESS:-}" ]]; then
    export JAX_PROCESS_ID="${SLURM_PROCID:?SLURM_PROCID is unset}"
fi
exec "$@"
