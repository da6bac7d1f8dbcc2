#!/usr/bin/env bash
# Show the training log of worker 0 (default) or of every worker.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_SUMMARY="Print the last --tail-lines lines of REMOTE_DIR/LOG_DIR/$RUN_LOG and keep following it
(Ctrl-C to leave; the run goes on). With --worker=all every line is prefixed by its host."
add_tpu_target_flags
flag worker 0 "which worker: 0 (process 0 logs the metrics), another index, or all"
flag tail-lines 100 "how many existing lines to show first"
flag_bool once "print the lines and exit instead of following"
flag remote-dir jaxaudio "project folder on each worker (as in setup.sh)"
flag log-dir logs "log folder relative to --remote-dir (as in launch.sh)"
parse_flags "$@"
project_args
require_nonneg_int tail-lines "$JAXAUDIO_TAIL_LINES"

FOLLOW=" -F"
if [[ "$JAXAUDIO_ONCE" == 1 ]]; then FOLLOW=""; fi
REMOTE="tail -n $JAXAUDIO_TAIL_LINES$FOLLOW $(printf '%q' "$JAXAUDIO_REMOTE_DIR/$JAXAUDIO_LOG_DIR/$RUN_LOG")"
if [[ ! "$JAXAUDIO_WORKER" =~ ^[0-9]+$ ]]; then
    REMOTE="$REMOTE | sed -u \"s/^/[\$(hostname)] /\""
fi

run gcloud compute tpus tpu-vm ssh "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" \
    "--worker=$JAXAUDIO_WORKER" "--command=$REMOTE"
