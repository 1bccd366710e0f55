#!/usr/bin/env bash
# Build the six service images and boot them as a station would run them (README, "Checking the
# images"). Not part of `make test`: it needs a Docker engine and takes minutes.
#
# 1. builds services/<svc>/Dockerfile for scp, worklist, converter, sender, capture and gateway
#    from a clean build context (the files git knows, plus --extra-ca as
#    deploy/ca-certificates/extra-ca.crt), FROM --base (default python:3.11-slim-bookworm);
# 2. starts a NATS server (JetStream) and a PostgreSQL cluster of its own on free loopback ports
#    (or uses --nats-url / --database-url);
# 3. runs one container per image with host networking, each on its own health/DICOM/HTTP port,
#    and waits until Docker reports every container "healthy" (the images' HEALTHCHECK: /readyz);
# 4. checks that every container runs as a non-root user and carries no test suite under /app,
#    that the SCP answers C-ECHO (DCMTK echoscu, PS3.4 Annex A) and that the gateway's
#    conformance statement has the part of every DICOM service (they answer over the bus);
# 5. removes the containers, the servers it started and its temporary files (images are kept:
#    --remove-images removes them too).
#
# --build-only stops after step 1; --stand-ins also builds cinebridge-smoke-nats and
# cinebridge-smoke-postgres from deploy/smoke/ (the registry's NATS and PostgreSQL images, for
# scripts/compose_smoke.sh where none can be pulled).
#
# Usage: scripts/check_images.sh [--base IMAGE] [--extra-ca PEM] [--jobs N] [--tag TAG]
#                               [--nats-url URL] [--database-url DSN] [--remove-images]
#                               [--build-only] [--stand-ins]
# Exit status 0 only when every step passed; the last line says how long it took.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/images_common.sh
source "$repo/scripts/images_common.sh"
usage_lines=2,25
services=(scp worklist converter sender capture gateway)
nats_url=""
database_url=""
remove_images=0
build_only=0
stand_ins=0
health_timeout_s=240

own_arg() {
    case $1 in
        --nats-url) nats_url=$2; taken=2 ;;
        --database-url) database_url=$2; taken=2 ;;
        --remove-images) remove_images=1; taken=1 ;;
        --build-only) build_only=1; taken=1 ;;
        --stand-ins) stand_ins=1; taken=1 ;;
        *) return 1 ;;
    esac
}
parse_args "$@"

find_python --allow-system-python
tools=(docker "$python")
((build_only)) || tools+=(echoscu curl)
require_tools "${tools[@]}"
# The legacy builder when the engine has no BuildKit client plugin (both honour --network host).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

work=$(mktemp -d /tmp/cinebridge-check.XXXXXX)
containers=()
images=()
nats_pid=""
own_pg=0

cleanup() {
    local rc=$?
    for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    [[ -n $nats_pid ]] && kill "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null
    if ((own_pg)); then
        "$python" -c 'import sys; from pathlib import Path
from cinebridge_common.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1]), int(sys.argv[2])); pg.init(); pg.stop()' \
            "$work/pg" "$pg_port" || true
    fi
    if ((remove_images)); then
        for s in "${images[@]}"; do docker rmi "cinebridge-${s%%=*}:$tag" >/dev/null 2>&1 || true; done
    fi
    rm -rf "$work"
    log "finished rc=$rc in $(( $(date +%s) - started )) s"
}
trap cleanup EXIT

free_port() {
    "$python" -c 'from cinebridge_common.embedded import free_port; print(free_port())'
}

# --- 1. build ---------------------------------------------------------------------------------
context=$work/context
copy_tracked_files "$context"
if [[ -n $extra_ca ]]; then
    cp "$extra_ca" "$context/deploy/ca-certificates/extra-ca.crt"
fi
# name=Dockerfile; the image is cinebridge-<name>:<tag>.
for s in "${services[@]}"; do images+=("$s=services/$s/Dockerfile"); done
((stand_ins)) && images+=(smoke-nats=deploy/smoke/nats.Dockerfile
    smoke-postgres=deploy/smoke/postgres.Dockerfile)
log "building ${#images[@]} images from $base ($jobs at a time)"
build_one() {
    local s=${1%%=*} dockerfile=${1#*=}
    docker build --network host --build-arg "BASE_IMAGE=$base" \
        -f "$context/$dockerfile" -t "cinebridge-$s:$tag" "$context" \
        >"$work/build-$s.log" 2>&1 || { echo "build of $s failed:"; tail -n 30 "$work/build-$s.log"; return 1; }
    echo "built cinebridge-$s:$tag"
}
export -f build_one
export base context tag work
build_started=$(date +%s)
printf '%s\n' "${images[@]}" | xargs -P "$jobs" -I{} bash -c 'build_one "$@"' _ {}
log "images built in $(( $(date +%s) - build_started )) s"
((build_only)) && exit 0

# --- 2. NATS and PostgreSQL -------------------------------------------------------------------
if [[ -z $nats_url ]]; then
    nats_port=$(free_port)
    nats_bin=$("$python" -c 'from cinebridge_common.embedded import nats_server_binary as b; print(b())')
    mkdir -p "$work/nats"
    # JetStream as deploy/nats.conf configures it (fsync always, a fixed storage limit).
    printf 'listen: "127.0.0.1:%s"\njetstream {\n  store_dir: "%s"\n  sync_interval: always\n  max_file_store: 4GB\n}\n' \
        "$nats_port" "$work/nats" >"$work/nats.conf"
    "$nats_bin" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
    nats_pid=$!
    nats_url=nats://127.0.0.1:$nats_port
fi
if [[ -z $database_url ]]; then
    pg_port=$(free_port)
    own_pg=1
    database_url=$("$python" -c 'import sys; from pathlib import Path
from cinebridge_common.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1]), int(sys.argv[2])); pg.start(); print(pg.dsn)' \
        "$work/pg" "$pg_port")
fi
log "NATS $nats_url, PostgreSQL $database_url"

# --- 3. one container per image, host networking ----------------------------------------------
mkdir -p "$work/media"
chown 10001 "$work/media" 2>/dev/null || chmod 0777 "$work/media"
scp_port=$(free_port)
gateway_port=$(free_port)
preview_port=$(free_port)
secret=$(secret)
common_env=(
    -e "CB_NATS_URL=$nats_url" -e "CB_DATABASE_URL=$database_url" -e CB_MEDIA_ROOT=/media
    -e CB_HEALTH_HOST=127.0.0.1 -e "CB_SECRET_KEY=$secret"
)
run_id=$(basename "$work" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
for s in "${services[@]}"; do
    extra=(-e "CB_HEALTH_PORT=$(free_port)")
    case $s in
        scp) extra+=(-e CB_SCP_HOST=127.0.0.1 -e "CB_SCP_PORT=$scp_port") ;;
        capture) extra+=(-e CB_CAPTURE_ROOM=room1
            -e 'CB_CAPTURE_SOURCES=[{"name":"endo","url":"lavfi:testsrc2=size=640x360:rate=25"}]'
            -e CB_CAPTURE_PREVIEW_HOST=127.0.0.1 -e "CB_CAPTURE_PREVIEW_PORT=$preview_port") ;;
        gateway) extra+=(-e CB_GATEWAY_HOST=127.0.0.1 -e "CB_GATEWAY_PORT=$gateway_port"
            -e "CB_GATEWAY_ADMIN_PASSWORD=$secret"
            -e "CB_GATEWAY_PREVIEW_UPSTREAMS={\"room1\": \"http://127.0.0.1:$preview_port\"}") ;;
    esac
    name=cb-check-$run_id-$s
    docker run -d --name "$name" --network host -v "$work/media:/media" \
        "${common_env[@]}" "${extra[@]}" "cinebridge-$s:$tag" >/dev/null
    containers+=("$name")
done
wait_healthy "$health_timeout_s" "${containers[@]}"

# --- 4. non-root, no test suites, C-ECHO ------------------------------------------------------
for c in "${containers[@]}"; do
    uid=$(docker exec "$c" id -u)
    user=$(docker inspect -f '{{.Config.User}}' "$c")
    if [[ $uid == 0 || -z $user || $user == root || $user == 0 ]]; then
        log "$c runs as root (uid $uid, USER '$user')"
        exit 1
    fi
    # The members' sources copied for the install must come without their tests (.dockerignore).
    tests=$(docker exec "$c" find /app \( -name tests -o -name 'test_*.py' -o -name conftest.py \))
    if [[ -n $tests ]]; then
        log "$c carries test code: $(echo "$tests" | head -n 5 | tr '\n' ' ')"
        exit 1
    fi
    log "$c: uid $uid (USER $user), $(docker inspect -f '{{.State.Health.Status}}' "$c")"
done
echoscu -to 10 -aet CHECKIMAGES -aec CINEBRIDGE 127.0.0.1 "$scp_port"
log "C-ECHO to CINEBRIDGE@127.0.0.1:$scp_port: success"

# --- 5. the conformance statement, which needs every DICOM service to answer over the bus -----
gateway=http://127.0.0.1:$gateway_port
curl -fsS -c "$work/cookies" -H 'Content-Type: application/json' \
    -d "{\"username\": \"admin\", \"password\": \"$secret\"}" "$gateway/api/v1/auth/login" >/dev/null
curl -fsS -b "$work/cookies" "$gateway/api/v1/statement" >"$work/statement.json"
"$python" - "$work/statement.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
if data["missing"]:
    sys.exit(f"statement incomplete: {data['missing']}")
print("statement from", ", ".join(s["service"] for s in data["services"]))
PY
log "OK: ${#services[@]} images built from $base, healthy, non-root; the SCP answers C-ECHO;"\
    "the gateway's conformance statement has every service's part"
