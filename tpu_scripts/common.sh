# shellcheck shell=bash disable=SC2034  # defines variables for the scripts that source it
# Shared helpers for the launch scripts: flag parsing, the dry-run aware `run`, validation.
#
# Every flag --some-name is stored in the shell variable JAXAUDIO_SOME_NAME, and an
# environment variable of that name supplies its default (the flag wins). Boolean flags take
# no value (--spot) and accept 1/0/true/false from the environment. With --dry-run every
# command that would touch a cloud or cluster is printed, one per line on stdout, in a form a
# shell can run as is; nothing is executed. Notes go to stderr so stdout stays runnable.

set -euo pipefail

TPU_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT_ROOT="$(cd "$TPU_SCRIPTS_DIR/.." && pwd)"
export TPU_SCRIPTS_DIR PROJECT_ROOT

_FLAG_NAMES=()
_FLAG_KINDS=()
_FLAG_DEFAULTS=()
_FLAG_HELPS=()
PASSTHROUGH=()
SCRIPT_SUMMARY=""
PASSTHROUGH_HELP=""

die() {
    echo "error: $*" >&2
    exit 2
}

note() {
    echo "$(basename "$0"): $*" >&2
}

flag_var() {
    # --accelerator-type -> JAXAUDIO_ACCELERATOR_TYPE
    local name="${1//-/_}"
    echo "JAXAUDIO_${name^^}"
}

flag() {
    # flag NAME DEFAULT HELP: a flag that takes a value.
    _FLAG_NAMES+=("$1"); _FLAG_KINDS+=(value); _FLAG_DEFAULTS+=("$2"); _FLAG_HELPS+=("$3")
}

flag_required() {
    # flag_required NAME HELP: a value flag that must be given (flag or environment).
    _FLAG_NAMES+=("$1"); _FLAG_KINDS+=(required); _FLAG_DEFAULTS+=(""); _FLAG_HELPS+=("$2")
}

flag_bool() {
    # flag_bool NAME HELP: off unless given; --no-NAME turns it off again.
    _FLAG_NAMES+=("$1"); _FLAG_KINDS+=(bool); _FLAG_DEFAULTS+=(0); _FLAG_HELPS+=("$2")
}

flag_list() {
    # flag_list NAME HELP: repeatable; values collect in the array JAXAUDIO_NAME.
    _FLAG_NAMES+=("$1"); _FLAG_KINDS+=(list); _FLAG_DEFAULTS+=(""); _FLAG_HELPS+=("$2")
}

usage() {
    local i name kind default var
    echo "usage: $(basename "$0") [flags]${PASSTHROUGH_HELP:+ [-- ARGS...]}"
    echo
    echo "$SCRIPT_SUMMARY"
    echo
    echo "flags (each also read from the environment variable shown; the flag wins):"
    for i in "${!_FLAG_NAMES[@]}"; do
        name="${_FLAG_NAMES[$i]}"; kind="${_FLAG_KINDS[$i]}"; default="${_FLAG_DEFAULTS[$i]}"
        var="$(flag_var "$name")"
        case "$kind" in
            bool) printf '  --%s\n      %s [env %s=1]\n' "$name" "${_FLAG_HELPS[$i]}" "$var" ;;
            list) printf '  --%s=VALUE (repeatable)\n      %s\n' "$name" "${_FLAG_HELPS[$i]}" ;;
            required) printf '  --%s=VALUE (required)\n      %s [env %s]\n' "$name" "${_FLAG_HELPS[$i]}" "$var" ;;
            *) printf '  --%s=VALUE\n      %s [env %s; default: %s]\n' "$name" "${_FLAG_HELPS[$i]}" "$var" "${default:-<empty>}" ;;
        esac
    done
    echo "  --help"
    echo "      print this help and exit"
    if [[ -n "$PASSTHROUGH_HELP" ]]; then
        echo
        echo "after --: $PASSTHROUGH_HELP"
    fi
}

_as_bool() {
    # _as_bool WHAT VALUE -> 0 or 1
    case "${2,,}" in
        1|true|yes|on) echo 1 ;;
        ""|0|false|no|off) echo 0 ;;
        *) die "$1 must be 0 or 1, got '$2'" ;;
    esac
}

_flag_index() {
    local i
    for i in "${!_FLAG_NAMES[@]}"; do
        if [[ "${_FLAG_NAMES[$i]}" == "$1" ]]; then echo "$i"; return 0; fi
    done
    return 1
}

parse_flags() {
    # parse_flags "$@": fill every JAXAUDIO_* variable from flags, the environment, defaults.
    local i name kind var arg value index
    for i in "${!_FLAG_NAMES[@]}"; do
        name="${_FLAG_NAMES[$i]}"; kind="${_FLAG_KINDS[$i]}"; var="$(flag_var "$name")"
        case "$kind" in
            bool) value="$(_as_bool "$var" "${!var:-0}")"; printf -v "$var" '%s' "$value" ;;
            list) unset "$var"; declare -g -a "$var"; local -n _list="$var"; _list=(); unset -n _list ;;
            *) printf -v "$var" '%s' "${!var:-${_FLAG_DEFAULTS[$i]}}" ;;
        esac
    done
    while (($#)); do
        arg="$1"; shift
        case "$arg" in
            --) PASSTHROUGH=("$@"); break ;;
            -h|--help) usage; exit 0 ;;
            --*) ;;
            *) die "unexpected argument '$arg' (flags look like --name=VALUE; see --help)" ;;
        esac
        name="${arg#--}"; name="${name%%=*}"
        if index="$(_flag_index "$name")"; then
            kind="${_FLAG_KINDS[$index]}"; var="$(flag_var "$name")"
            if [[ "$kind" == bool ]]; then
                if [[ "$arg" == *=* ]]; then value="${arg#*=}"; else value=1; fi
                value="$(_as_bool "--$name" "$value")"
                printf -v "$var" '%s' "$value"
                continue
            fi
            if [[ "$arg" == *=* ]]; then
                value="${arg#*=}"
            elif (($#)); then
                value="$1"; shift
            else
                die "--$name needs a value (--$name=VALUE)"
            fi
            if [[ "$kind" == list ]]; then
                # shellcheck disable=SC2178  # a nameref to the array, not a string
                local -n _list="$var"; _list+=("$value"); unset -n _list
            else
                printf -v "$var" '%s' "$value"
            fi
        elif [[ "$name" == no-* ]] && index="$(_flag_index "${name#no-}")" \
                && [[ "${_FLAG_KINDS[$index]}" == bool ]]; then
            printf -v "$(flag_var "${name#no-}")" '%s' 0
        else
            die "unknown flag --$name (see --help)"
        fi
    done
    if ((${#PASSTHROUGH[@]})) && [[ -z "$PASSTHROUGH_HELP" ]]; then
        die "$(basename "$0") takes no arguments after --"
    fi
    for i in "${!_FLAG_NAMES[@]}"; do
        if [[ "${_FLAG_KINDS[$i]}" == required ]]; then
            var="$(flag_var "${_FLAG_NAMES[$i]}")"
            [[ -n "${!var}" ]] || die "--${_FLAG_NAMES[$i]} is required (or set $var); see --help"
        fi
    done
}

quote_arg() {
    # Print one argument so that a shell reads it back unchanged (single quotes when needed).
    local arg="$1"
    if [[ -n "$arg" && "$arg" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
        printf '%s' "$arg"
    else
        printf "'%s'" "${arg//\'/\'\\\'\'}"
    fi
}

quote_cmd() {
    local out="" arg
    for arg in "$@"; do
        out+="${out:+ }$(quote_arg "$arg")"
    done
    printf '%s\n' "$out"
}

run() {
    # Run a command, or print it under --dry-run.
    if [[ "${JAXAUDIO_DRY_RUN:-0}" == 1 ]]; then
        quote_cmd "$@"
    else
        "$@"
    fi
}

require_one_of() {
    # require_one_of FLAG VALUE ALLOWED...
    local flag="$1" value="$2" allowed
    shift 2
    for allowed in "$@"; do
        [[ "$value" == "$allowed" ]] && return 0
    done
    die "--$flag must be one of: $* (got '$value')"
}

require_positive_int() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--$1 must be a positive integer (got '$2')"
}

require_nonneg_int() {
    [[ "$2" =~ ^[0-9]+$ ]] || die "--$1 must be a non-negative integer (got '$2')"
}

# ---- Cloud TPU specifics -------------------------------------------------------------

add_tpu_target_flags() {
    # The flags every TPU script shares: which VM, where.
    flag_required name "TPU VM name (also the queued-resource id and node id with --queued)"
    flag_required zone "zone, e.g. us-central2-b (v4) or us-west4-a (v5e)"
    flag project "" "GCP project; empty: gcloud's configured core/project"
    flag_bool dry-run "print the commands instead of running them (never contacts the cloud)"
}

project_args() {
    # Sets PROJECT_ARGS to (--project=P) or () for gcloud calls.
    PROJECT_ARGS=()
    if [[ -n "$JAXAUDIO_PROJECT" ]]; then PROJECT_ARGS=("--project=$JAXAUDIO_PROJECT"); fi
}

validate_accelerator_type() {
    [[ "$1" =~ ^(v2|v3|v4|v5p|v5litepod|v6e)-[0-9]+$ ]] \
        || die "--accelerator-type must look like v5litepod-8, v4-32, v5p-16 or v6e-8 (got '$1')"
}

default_runtime_version() {
    # The TPU software version Google recommends for JAX on each generation.
    case "${1%-*}" in
        v6e) echo v2-alpha-tpuv6e ;;
        v5p) echo v2-alpha-tpuv5 ;;
        v5litepod) echo v2-alpha-tpuv5-lite ;;
        v2|v3|v4) echo tpu-ubuntu2204-base ;;
        *) die "no default runtime for --accelerator-type=$1; pass --runtime-version" ;;
    esac
}

is_multi_host() {
    # A slice spans several TPU VMs once it has more than 8 chips (v5e, v6e) or more than
    # 8 TensorCores (v2, v3, v4, v5p name slices by cores): v4-8 and v5litepod-8 are one host.
    local count="${1##*-}"
    ((count > 8))
}

# Where launch.sh keeps its files on each worker, relative to --remote-dir.
RUN_LOG=train.log
RUN_PID=train.pid
RUN_EXIT=train.exit
