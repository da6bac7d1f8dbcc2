#!/usr/bin/env bash
# Keep a training run going on spot TPU capacity: re-create, set up and relaunch after preemption.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_SUMMARY="Watch a spot TPU VM (or spot queued resource with --queued) and the run on it, every
--poll-seconds. If the VM is PREEMPTED, TERMINATED, SUSPENDED, FAILED or gone: delete it,
create it again (--spot), run setup.sh and launch.sh with the same --workdir, so the run resumes
from its last checkpoint. If the VM is up but the run ended with 143 (preempted), relaunch it;
if the run never started, set up and launch. Stops when the run exits 0, fails with any other
code, or after --max-retries recoveries. Works from nothing: a missing VM is simply created.
With --dry-run it prints one iteration, assuming the VM was preempted."
PASSTHROUGH_HELP="more arguments for experiments/run.py (as in launch.sh)"
add_tpu_target_flags
flag_required exp "experiment name (as in launch.sh)"
flag_required workdir "gs:// workdir shared by all hosts and all attempts (as in launch.sh)"
flag preset paper "config preset (as in launch.sh)"
flag_list env "extra environment for the run, KEY=VALUE (as in launch.sh)"
flag accelerator-type v5litepod-8 "slice type (as in create.sh)"
flag runtime-version "" "TPU software version; empty: create.sh's default for the generation"
flag_bool queued "use a spot queued resource instead of a spot TPU VM"
flag source "$PROJECT_ROOT" "project to install (as in setup.sh)"
flag ref origin/HEAD "with a git URL --source: what to check out (as in setup.sh)"
flag remote-dir jaxaudio "project folder on each worker (as in setup.sh)"
flag python python3 "Python on the workers (as in setup.sh)"
flag extras tpu "pip extras (as in setup.sh)"
flag log-dir logs "log folder relative to --remote-dir (as in launch.sh)"
flag max-retries 10 "give up after this many recoveries (re-creations plus relaunches)"
flag poll-seconds 300 "seconds between checks"
flag wait-timeout 3600 "with --queued: how long to wait for capacity per attempt"
parse_flags "$@"
project_args
validate_accelerator_type "$JAXAUDIO_ACCELERATOR_TYPE"
require_nonneg_int max-retries "$JAXAUDIO_MAX_RETRIES"
require_positive_int poll-seconds "$JAXAUDIO_POLL_SECONDS"
[[ "$JAXAUDIO_WORKDIR" == gs://* ]] \
    || die "--workdir must be a gs:// path: the VM's own disk is lost when it is preempted (got '$JAXAUDIO_WORKDIR')"

TARGET=("--name=$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}")
if [[ "$JAXAUDIO_DRY_RUN" == 1 ]]; then TARGET+=(--dry-run); fi
QUEUED=()
if [[ "$JAXAUDIO_QUEUED" == 1 ]]; then QUEUED=(--queued); fi
CREATE=("$TPU_SCRIPTS_DIR/create.sh" "${TARGET[@]}" --spot "${QUEUED[@]}"
        "--accelerator-type=$JAXAUDIO_ACCELERATOR_TYPE")
if [[ -n "$JAXAUDIO_RUNTIME_VERSION" ]]; then CREATE+=("--runtime-version=$JAXAUDIO_RUNTIME_VERSION"); fi
if [[ "$JAXAUDIO_QUEUED" == 1 ]]; then CREATE+=(--wait "--wait-timeout=$JAXAUDIO_WAIT_TIMEOUT"); fi
DELETE=("$TPU_SCRIPTS_DIR/delete.sh" "${TARGET[@]}" "${QUEUED[@]}" --yes)
SETUP=("$TPU_SCRIPTS_DIR/setup.sh" "${TARGET[@]}" "--source=$JAXAUDIO_SOURCE" "--ref=$JAXAUDIO_REF"
       "--remote-dir=$JAXAUDIO_REMOTE_DIR" "--python=$JAXAUDIO_PYTHON" "--extras=$JAXAUDIO_EXTRAS")
LAUNCH=("$TPU_SCRIPTS_DIR/launch.sh" "${TARGET[@]}" "--exp=$JAXAUDIO_EXP" "--workdir=$JAXAUDIO_WORKDIR"
        "--preset=$JAXAUDIO_PRESET" "--accelerator-type=$JAXAUDIO_ACCELERATOR_TYPE"
        "--remote-dir=$JAXAUDIO_REMOTE_DIR" "--log-dir=$JAXAUDIO_LOG_DIR")
for pair in "${JAXAUDIO_ENV[@]}"; do LAUNCH+=("--env=$pair"); done
LAUNCH+=(-- "${PASSTHROUGH[@]}")

if [[ "$JAXAUDIO_QUEUED" == 1 ]]; then
    DESCRIBE=(gcloud compute tpus queued-resources describe "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE"
              "${PROJECT_ARGS[@]}" "--format=value(state.state)")
else
    DESCRIBE=(gcloud compute tpus tpu-vm describe "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE"
              "${PROJECT_ARGS[@]}" "--format=value(state)")
fi
LOG_Q="$(printf '%q' "$JAXAUDIO_LOG_DIR")"
STATUS_REMOTE="cd $(printf '%q' "$JAXAUDIO_REMOTE_DIR") 2>/dev/null || { echo NOT_STARTED; exit 0; }; \
if [ -f $LOG_Q/$RUN_PID ] && kill -0 \"\$(cat $LOG_Q/$RUN_PID)\" 2>/dev/null; then echo RUNNING; \
elif [ -f $LOG_Q/$RUN_EXIT ]; then echo \"EXITED \$(cat $LOG_Q/$RUN_EXIT)\"; else echo NOT_STARTED; fi"
STATUS=(gcloud compute tpus tpu-vm ssh "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}"
        --worker=0 "--command=$STATUS_REMOTE")

recreate() {
    "${DELETE[@]}" || note "delete failed (nothing to delete?); creating anyway"
    "${CREATE[@]}" && "${SETUP[@]}" && "${LAUNCH[@]}"
}

if [[ "$JAXAUDIO_DRY_RUN" == 1 ]]; then
    quote_cmd "${DESCRIBE[@]}"
    note "dry run: one iteration as if the state were PREEMPTED (VM up: '${STATUS[*]:0:6} --worker=0' reads the run's exit code)"
    recreate
    note "dry run: would check again every ${JAXAUDIO_POLL_SECONDS}s, at most ${JAXAUDIO_MAX_RETRIES} recoveries"
    exit 0
fi

recoveries=0
count_recovery() {
    recoveries=$((recoveries + 1))
    ((recoveries <= JAXAUDIO_MAX_RETRIES)) || die "gave up after --max-retries=$JAXAUDIO_MAX_RETRIES recoveries"
    note "recovery $recoveries/$JAXAUDIO_MAX_RETRIES: $1"
}

while :; do
    state="$("${DESCRIBE[@]}" 2>/dev/null)" || state=MISSING
    case "${state:-MISSING}" in
        READY|ACTIVE)
            run_status="$("${STATUS[@]}" 2>/dev/null | tail -n 1)" || run_status=UNREACHABLE
            case "$run_status" in
                RUNNING) ;;
                "EXITED 0") note "the run finished"; exit 0 ;;
                "EXITED 143")
                    count_recovery "the run was interrupted (exit 143); relaunching"
                    "${LAUNCH[@]}" || note "launch failed; will retry" ;;
                EXITED*) die "the run failed (${run_status#EXITED }); see logs.sh --name=$JAXAUDIO_NAME --once" ;;
                NOT_STARTED)
                    count_recovery "no run on the VM yet; setting up and launching"
                    { "${SETUP[@]}" && "${LAUNCH[@]}"; } || note "setup or launch failed; will retry" ;;
                *) note "could not read the run's state ($run_status); checking again later" ;;
            esac ;;
        PREEMPTED|TERMINATED|SUSPENDED|SUSPENDING|FAILED|MISSING)
            count_recovery "the VM is ${state:-MISSING}; re-creating it"
            recreate || note "re-creation failed; will retry" ;;
        *) note "the VM is $state; waiting" ;;
    esac
    sleep "$JAXAUDIO_POLL_SECONDS"
done
