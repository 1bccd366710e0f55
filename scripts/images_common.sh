# Shared by scripts/check_images.sh and scripts/compose_smoke.sh (sourced, not run): the options
# both take, the tools they need, their log line, the build context of the files git knows, and
# the wait for Docker's healthchecks. The sourcing script sets `repo`, `usage_lines` (the lines
# of its header that --help prints) and defines `own_arg` for its own options: it sets `taken`
# to how many words it consumed, or returns 1 for an unknown one.

base=python:3.11-slim-bookworm
extra_ca=""
jobs=2
tag=check
started=$(date +%s)

parse_args() {
    local taken
    while (($#)); do
        case $1 in
            --base) base=$2; shift 2 ;;
            --extra-ca) extra_ca=$2; shift 2 ;;
            --jobs) jobs=$2; shift 2 ;;
            --tag) tag=$2; shift 2 ;;
            -h|--help) sed -n "${usage_lines}p" "$0"; exit 0 ;;
            *)
                taken=0
                own_arg "$@" || { echo "unknown argument: $1" >&2; exit 2; }
                shift "$taken"
                ;;
        esac
    done
    [[ -z $extra_ca || -s $extra_ca ]] || { echo "no such certificate: $extra_ca" >&2; exit 2; }
}

# The project's interpreter (make install), or python3 where --allow-system-python is given.
find_python() {
    python=${PYTHON:-$repo/.venv/bin/python}
    [[ -x $python ]] && return
    [[ ${1:-} == --allow-system-python ]] && { python=python3; return; }
    echo "missing: $python (make install)" >&2
    exit 2
}

require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
    done
}

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "$(basename "$0" .sh)" "$*"; }

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# The files git knows (tracked, and untracked ones it does not ignore) copied into directory $1:
# what an image is built from and what a project runs from, never a developer's stray files.
copy_tracked_files() {
    mkdir -p "$1"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --no-recursion --ignore-failed-read -T - -cf -) | tar -xf - -C "$1"
}

# Wait until Docker reports every container of "$@" running and healthy (the images'
# HEALTHCHECK: /readyz), for at most $1 seconds; on time out name the others with the last lines
# of their logs and return 1.
wait_healthy() {
    local timeout_s=$1 deadline c state name pending described
    shift
    log "started $# containers; waiting for their healthchecks (up to $timeout_s s)"
    deadline=$(( $(date +%s) + timeout_s ))
    while :; do
        pending=()
        described=()
        for c in "$@"; do
            state=$(docker inspect -f '{{.Name}} {{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")
            if [[ ${state#* } != running/healthy ]]; then
                pending+=("$c")
                described+=("${state#/}")
            fi
        done
        ((${#pending[@]} == 0)) && break
        if (( $(date +%s) > deadline )); then
            log "not healthy: ${described[*]}"
            for c in "${pending[@]}"; do
                name=$(docker inspect -f '{{.Name}}' "$c")
                docker logs --tail 40 "$c" 2>&1 | sed "s|^|  ${name#/}: |"
            done
            return 1
        fi
        sleep 3
    done
    log "all $# containers healthy after $(( $(date +%s) - started )) s"
}
