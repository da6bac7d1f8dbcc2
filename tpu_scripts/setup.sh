#!/usr/bin/env bash
# Put the project on every worker of a TPU VM and install it into a virtual environment.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_SUMMARY="On every worker (--worker=all): fetch the project (git clone of a URL, or a tarball
of a local folder copied with 'gcloud compute tpus tpu-vm scp'), make a virtual environment
in REMOTE_DIR/.venv and run pip install -e '.[EXTRAS]'. Safe to run again."
add_tpu_target_flags
flag source "$PROJECT_ROOT" "a git URL (https://, ssh://, git@host:path) to clone, or a local folder to copy"
flag ref origin/HEAD "with a git URL: the commit, tag or origin/BRANCH to check out"
flag remote-dir jaxaudio "project folder on each worker, relative to the remote home"
flag python python3 "Python interpreter on the workers that makes the venv"
flag extras tpu "pip extras to install (pyproject optional-dependencies)"
flag worker all "which workers: all, one index, or a list such as 1,3"
flag tarball "" "with a local folder: where to write the tarball; empty: \${TMPDIR:-/tmp}/jaxaudio-NAME.tar.gz"
parse_flags "$@"
project_args

is_git_url() {
    [[ "$1" =~ ^(https?|ssh|git|file)://|^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+: ]]
}

TARGET=("$JAXAUDIO_NAME" "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" "--worker=$JAXAUDIO_WORKER")
DIR_Q="$(printf '%q' "$JAXAUDIO_REMOTE_DIR")"
PY_Q="$(printf '%q' "$JAXAUDIO_PYTHON")"

if is_git_url "$JAXAUDIO_SOURCE"; then
    FETCH="if [ -d $DIR_Q/.git ]; then git -C $DIR_Q fetch --quiet origin; \
else git clone --quiet $(printf '%q' "$JAXAUDIO_SOURCE") $DIR_Q; fi; \
git -C $DIR_Q checkout --quiet --detach $(printf '%q' "$JAXAUDIO_REF")"
else
    [[ -d "$JAXAUDIO_SOURCE" ]] || die "--source must be a git URL or an existing folder (got '$JAXAUDIO_SOURCE')"
    [[ -f "$JAXAUDIO_SOURCE/pyproject.toml" ]] || die "--source=$JAXAUDIO_SOURCE has no pyproject.toml"
    TARBALL="${JAXAUDIO_TARBALL:-${TMPDIR:-/tmp}/jaxaudio-$JAXAUDIO_NAME.tar.gz}"
    run tar -czf "$TARBALL" --exclude=.git --exclude=.venv --exclude=__pycache__ \
        --exclude=workdirs -C "$JAXAUDIO_SOURCE" .
    run gcloud compute tpus tpu-vm scp "$TARBALL" "$JAXAUDIO_NAME:jaxaudio-src.tar.gz" \
        "--zone=$JAXAUDIO_ZONE" "${PROJECT_ARGS[@]}" "--worker=$JAXAUDIO_WORKER"
    FETCH="mkdir -p $DIR_Q; tar -xzf jaxaudio-src.tar.gz -C $DIR_Q; rm -f jaxaudio-src.tar.gz"
fi

# python3-venv is missing on some TPU images; apt may be busy right after boot, hence the lock wait.
INSTALL="cd $DIR_Q; \
$PY_Q -m venv .venv || { sudo apt-get -o DPkg::Lock::Timeout=600 update -qq \
&& sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv && $PY_Q -m venv --clear .venv; }; \
.venv/bin/pip install --quiet --upgrade pip; \
.venv/bin/pip install --quiet -e $(printf '%q' ".[$JAXAUDIO_EXTRAS]"); \
echo \"\$(hostname): installed jaxaudio in \$PWD/.venv\""

run gcloud compute tpus tpu-vm ssh "${TARGET[@]}" "--command=set -e; $FETCH; $INSTALL"
