#!/usr/bin/env bash
# Stop the run that launch.sh started: SIGTERM (checkpoint, exit 143), then SIGKILL after a grace.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_SUMMARY="Stop the run on every worker: send SIGTERM to the pid in REMOTE_DIR/LOG_DIR/$RUN_PID
(the run saves a checkpoint and exits with 143), wait up to --grace seconds, then SIGKILL
its process group. Launching again with the same --workdir resumes from that checkpoint."
add_tpu_target_flags
flag grace 180 "seconds to wait for the checkpoint before SIGKILL"
flag remote-dir jaxaudio "project folder on each worker (as in setup.sh)"
flag log-dir logs "log folder relative to --remote-dir (as in launch.sh)"
flag worker all "which workers: all, one index, or a list"
parse_flags "$@"
project_args
require_nonneg_int grace "$JAXAUDIO_GRACE"

PID_FILE="$(printf '%q' "$JAXAUDIO_LOG_DIR")/$RUN_PID"
REMOTE="cd $(printf '%q' "$JAXAUDIO_REMOTE_DIR") || exit 0; \
pid=\$(cat $PID_FILE 2>/dev/null) || { echo \"\$(hostname): no run was launched\"; exit 0; }; \
kill -0 \"\$pid\" 2>/dev/null || { echo \"\$(hostname): run \$pid already ended\"; exit 0; }; \
pgid=\$(ps -o pgid= -p \"\$pid\" | tr -d ' '); \
kill -TERM \"\$pid\"; \
for _ in \$(seq $JAXAUDIO_GRACE); do kill -0 \"\$pid\" 2>/dev/null || break; sleep 1; done; \
if kill -0 \"\$pid\" 2>/dev/null; then kill -KILL -- \"-\$pgid\"; \
echo \"\$(hostname): run \$pid killed after ${JAXAUDIO_GRACE}s\"; \
else echo \"\$(hostname): run \$pid stopped\"; fi"

run gcloud compute tpus tpu-vm ssh "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" \
    "--worker=$JAXAUDIO_WORKER" "--command=$REMOTE"
