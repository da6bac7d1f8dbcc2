#!/usr/bin/env bash
# Start experiments/run.py on every worker of a TPU VM at once, detached from the ssh session.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_SUMMARY="Start 'python experiments/run.py --exp=EXP --preset=PRESET --workdir=WORKDIR' on all
workers at the same time (one gcloud ssh --worker=all), under nohup + setsid so it outlives
the ssh session. Each worker appends to its own REMOTE_DIR/LOG_DIR/$RUN_LOG and records the
pid in $RUN_PID and, when the run ends, its exit code in $RUN_EXIT (143: preempted, resumable).
Multi-host slices (more than 8 chips/cores) get JAXAUDIO_TPU_POD=1 so every worker joins
jax.distributed. The same --workdir resumes from its last checkpoint."
PASSTHROUGH_HELP="more arguments for experiments/run.py, e.g. -- --config.stages.train.lr=3e-4 --data_dir=gs://b/desed"
add_tpu_target_flags
flag_required exp "experiment name (python experiments/run.py --list)"
flag_required workdir "checkpoints and metrics; a gs:// path all workers share (required for multi-host)"
flag preset paper "config preset passed to run.py"
flag accelerator-type v5litepod-8 "slice type; decides whether JAXAUDIO_TPU_POD=1 is set (same env as create.sh)"
flag_list env "extra environment for the run, KEY=VALUE (e.g. --env=XLA_FLAGS=...)"
flag remote-dir jaxaudio "project folder on each worker (as in setup.sh)"
flag log-dir logs "folder for the log, pid and exit files, relative to --remote-dir"
flag worker all "which workers: all (needed for multi-host), one index, or a list"
parse_flags "$@"
project_args
validate_accelerator_type "$JAXAUDIO_ACCELERATOR_TYPE"

RUN_ENV=(PYTHONUNBUFFERED=1)
if is_multi_host "$JAXAUDIO_ACCELERATOR_TYPE"; then
    [[ "$JAXAUDIO_WORKDIR" == gs://* ]] \
        || die "--workdir must be a gs:// path that all hosts of $JAXAUDIO_ACCELERATOR_TYPE share (got '$JAXAUDIO_WORKDIR')"
    [[ "$JAXAUDIO_WORKER" == all ]] \
        || die "--worker must be all on multi-host $JAXAUDIO_ACCELERATOR_TYPE: every host runs one process"
    RUN_ENV+=(JAXAUDIO_TPU_POD=1)
elif [[ "$JAXAUDIO_WORKDIR" != gs://* ]]; then
    note "warning: --workdir=$JAXAUDIO_WORKDIR is on the VM's disk; it is lost with the VM (use gs:// to resume after preemption)"
fi
for pair in "${JAXAUDIO_ENV[@]}"; do
    [[ "$pair" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env must look like KEY=VALUE (got '$pair')"
    RUN_ENV+=("${pair%%=*}=$(printf '%q' "${pair#*=}")")
done

RUN_ARGS=(experiments/run.py "--exp=$JAXAUDIO_EXP" "--preset=$JAXAUDIO_PRESET" "--workdir=$JAXAUDIO_WORKDIR" "${PASSTHROUGH[@]}")
LOG_Q="$(printf '%q' "$JAXAUDIO_LOG_DIR")"
DIR_Q="$(printf '%q' "$JAXAUDIO_REMOTE_DIR")"
PID_FILE="$LOG_Q/$RUN_PID"
RUN_CMD="bash tpu_scripts/worker_run.sh $PID_FILE $LOG_Q/$RUN_EXIT .venv/bin/python $(printf '%q ' "${RUN_ARGS[@]}")"
REMOTE="set -e; cd $DIR_Q; \
test -x .venv/bin/python || { echo \"\$(hostname): no \$PWD/.venv; run setup.sh first\" >&2; exit 1; }; \
mkdir -p $LOG_Q; \
if [ -f $PID_FILE ] && kill -0 \"\$(cat $PID_FILE)\" 2>/dev/null; then \
echo \"\$(hostname): a run is still going (pid \$(cat $PID_FILE)); stop.sh it first\" >&2; exit 1; fi; \
rm -f $PID_FILE $LOG_Q/$RUN_EXIT; \
${RUN_ENV[*]} nohup setsid ${RUN_CMD}>> $LOG_Q/$RUN_LOG 2>&1 < /dev/null & \
echo \"\$(hostname): started; log \$PWD/$LOG_Q/$RUN_LOG\""

run gcloud compute tpus tpu-vm ssh "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" \
    "--worker=$JAXAUDIO_WORKER" "--command=$REMOTE"
