#!/usr/bin/env bash
# Create a Cloud TPU VM or pod slice, directly or through a queued resource.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_SUMMARY="Create a TPU VM (one host) or pod slice (several hosts). Without --queued it calls
'gcloud compute tpus tpu-vm create', which returns once the VM is READY; with --queued it
asks for a queued resource (id = node id = --name), which waits in a queue for capacity."
PASSTHROUGH_HELP="extra gcloud flags, passed unchanged (e.g. -- --network=my-net --service-account=...)"
add_tpu_target_flags
flag accelerator-type v5litepod-8 "slice type: v5litepod-8 (v5e, one host), v4-32 (four hosts), v5p-16, v6e-8, ..."
flag runtime-version "" "TPU software version; empty: v2-alpha-tpuv6e (v6e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv5-lite (v5e), tpu-ubuntu2204-base (v2-v4)"
flag_bool spot "spot capacity: cheaper, can be preempted at any time (see resume_spot.sh)"
flag_bool queued "create through 'gcloud compute tpus queued-resources create'"
flag_bool best-effort "with --queued: the best-effort tier (only in 'gcloud alpha'; excludes --spot)"
flag_bool wait "with --queued: poll until the queued resource is ACTIVE (fail on FAILED/SUSPENDED)"
flag wait-timeout 3600 "with --wait: give up after this many seconds"
flag poll-seconds 30 "with --wait: seconds between state checks"
parse_flags "$@"

validate_accelerator_type "$JAXAUDIO_ACCELERATOR_TYPE"
RUNTIME_VERSION="${JAXAUDIO_RUNTIME_VERSION:-$(default_runtime_version "$JAXAUDIO_ACCELERATOR_TYPE")}"
if [[ "$JAXAUDIO_BEST_EFFORT" == 1 ]]; then
    [[ "$JAXAUDIO_QUEUED" == 1 ]] || die "--best-effort needs --queued"
    [[ "$JAXAUDIO_SPOT" == 0 ]] || die "--best-effort and --spot exclude each other"
fi
if [[ "$JAXAUDIO_WAIT" == 1 && "$JAXAUDIO_QUEUED" == 0 ]]; then
    die "--wait needs --queued (a direct create already waits until the VM is ready)"
fi
require_positive_int wait-timeout "$JAXAUDIO_WAIT_TIMEOUT"
require_positive_int poll-seconds "$JAXAUDIO_POLL_SECONDS"
project_args

CAPACITY_ARGS=()
if [[ "$JAXAUDIO_SPOT" == 1 ]]; then CAPACITY_ARGS=(--spot); fi
if [[ "$JAXAUDIO_BEST_EFFORT" == 1 ]]; then CAPACITY_ARGS=(--best-effort); fi

if [[ "$JAXAUDIO_QUEUED" == 0 ]]; then
    run gcloud compute tpus tpu-vm create "$JAXAUDIO_NAME" \
        "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" \
        "--accelerator-type=$JAXAUDIO_ACCELERATOR_TYPE" "--version=$RUNTIME_VERSION" \
        "${CAPACITY_ARGS[@]}" "${PASSTHROUGH[@]}"
    exit 0
fi

GCLOUD_TRACK=()
if [[ "$JAXAUDIO_BEST_EFFORT" == 1 ]]; then GCLOUD_TRACK=(alpha); fi
run gcloud "${GCLOUD_TRACK[@]}" compute tpus queued-resources create "$JAXAUDIO_NAME" \
    "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" \
    "--accelerator-type=$JAXAUDIO_ACCELERATOR_TYPE" "--runtime-version=$RUNTIME_VERSION" \
    "--node-id=$JAXAUDIO_NAME" "${CAPACITY_ARGS[@]}" "${PASSTHROUGH[@]}"

if [[ "$JAXAUDIO_WAIT" == 1 ]]; then
    DESCRIBE=(gcloud compute tpus queued-resources describe "$JAXAUDIO_NAME"
              "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" "--format=value(state.state)")
    if [[ "$JAXAUDIO_DRY_RUN" == 1 ]]; then
        quote_cmd "${DESCRIBE[@]}"
        note "dry run: would repeat the line above every ${JAXAUDIO_POLL_SECONDS}s until ACTIVE"
        exit 0
    fi
    deadline=$((SECONDS + JAXAUDIO_WAIT_TIMEOUT))
    while :; do
        state="$("${DESCRIBE[@]}")" || state=UNKNOWN
        case "$state" in
            ACTIVE) note "queued resource $JAXAUDIO_NAME is ACTIVE"; exit 0 ;;
            FAILED|SUSPENDED|SUSPENDING|DELETING) die "queued resource $JAXAUDIO_NAME is $state" ;;
        esac
        ((SECONDS < deadline)) || die "queued resource $JAXAUDIO_NAME still $state after --wait-timeout=${JAXAUDIO_WAIT_TIMEOUT}s"
        note "queued resource $JAXAUDIO_NAME is $state; checking again in ${JAXAUDIO_POLL_SECONDS}s"
        sleep "$JAXAUDIO_POLL_SECONDS"
    done
fi
