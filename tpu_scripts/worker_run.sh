#!/usr/bin/env bash
# Runs ON a TPU worker (started by launch.sh): run a command, record its pid and exit code.
#
#   worker_run.sh PID_FILE EXIT_FILE COMMAND [ARGS...]
#
# The command runs as a child so that PID_FILE names it exactly: stop.sh sends SIGTERM to
# that pid (the run saves a checkpoint and exits 143), and resume_spot.sh reads EXIT_FILE
# to tell a finished run (0) from a preempted (143) or failed one.
set -uo pipefail

if (($# < 3)); then
    echo "usage: $(basename "$0") PID_FILE EXIT_FILE COMMAND [ARGS...]" >&2
    exit 2
fi
pid_file="$1"
exit_file="$2"
shift 2
rm -f "$exit_file"
"$@" &
child=$!
echo "$child" > "$pid_file"
wait "$child"
code=$?
echo "$code" > "$exit_file"
echo "$(date -u +%FT%TZ) $(hostname): run ended with exit code $code"
exit "$code"
