#!/usr/bin/env bash
# Delete a TPU VM, or a queued resource together with its nodes.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_SUMMARY="Delete the TPU VM --name (gcloud compute tpus tpu-vm delete), or with --queued the queued
resource --name and its nodes (gcloud compute tpus queued-resources delete --force).
The GCS workdir is kept. gcloud asks for confirmation unless --yes is given."
add_tpu_target_flags
flag_bool queued "the VM was made with create.sh --queued"
flag_bool yes "do not ask for confirmation (gcloud --quiet)"
parse_flags "$@"
project_args

QUIET=()
if [[ "$JAXAUDIO_YES" == 1 ]]; then QUIET=(--quiet); fi
if [[ "$JAXAUDIO_QUEUED" == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" \
        "${PROJECT_ARGS[@]}" --force "${QUIET[@]}"
else
    run gcloud compute tpus tpu-vm delete "$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" \
        "${PROJECT_ARGS[@]}" "${QUIET[@]}"
fi
