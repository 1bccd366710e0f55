#!/usr/bin/env bash
# Compose smoke test (README, "Checking the images"): docker-compose.yml brought up as hospital IT
# runs it, with the smoke profile deploy/compose.smoke.yml on top (host networking, stand-in NATS
# and PostgreSQL images, the station's own SCP as default destination), then one clinical flow
# through the gateway's HTTP API. Not part of `make test`: it needs a Docker engine and minutes.
#
# 1. builds the six service images and the two stand-ins with scripts/check_images.sh
#    --build-only --stand-ins (skipped with --no-build: the images of --tag must exist);
# 2. copies the files git knows into a temporary project directory, writes its .env with
#    generated secrets, picks free loopback ports for every listener (CB_SMOKE_*) and merges the
#    two files with `compose config`, dropping the published ports (meaningless, and refused by
#    Docker, with host networking) and naming the host network as the default one;
# 3. `docker compose up -d`, and waits until Docker reports each of the eight containers healthy;
# 4. logs in, creates a study in room1, takes a snapshot of the test-pattern source, saves the
#    study, and waits until its delivery to the local SCP is `sent` and the study shows in the
#    local search as received back through the SCP (statement §4.1.3 LOCAL); fetches the
#    conformance statement (every DICOM service answered) and its PDF;
# 5. runs `cinebridge status` and `cinebridge statement --format pdf` inside the gateway
#    container with an API token it creates;
# 6. `docker compose down -v` (containers, volumes) and removes its temporary files.
#
# Usage: scripts/compose_smoke.sh [--base IMAGE] [--extra-ca PEM] [--jobs N] [--tag TAG]
#                                 [--no-build] [--keep]
# --keep leaves the project up (and says how to take it down). Exit status 0 only when every
# step passed; the last line says how long it took. `docker compose` (v2) or `docker-compose`
# (v1.29+) is used, whichever is installed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/images_common.sh
source "$repo/scripts/images_common.sh"
usage_lines=2,22
build=1
keep=0
health_timeout_s=300
flow_timeout_s=180

own_arg() {
    case $1 in
        --no-build) build=0; taken=1 ;;
        --keep) keep=1; taken=1 ;;
        *) return 1 ;;
    esac
}
parse_args "$@"

find_python
require_tools docker
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_cmd=(docker-compose)
else
    echo "missing: docker compose (plugin) or docker-compose" >&2
    exit 2
fi

work=$(mktemp -d /tmp/cinebridge-smoke.XXXXXX)
project=cbsmoke$(basename "$work" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
project_dir=$work/project
up=0

compose() {
    "${compose_cmd[@]}" -p "$project" -f "$work/compose.yml" "$@"
}

cleanup() {
    local rc=$?
    if ((up)); then
        if ((rc != 0)); then
            compose ps 2>&1 | sed 's/^/  /' || true
            compose logs --no-color --tail 30 2>&1 | sed 's/^/  /' || true
        fi
        if ((keep)); then
            log "left up: ${compose_cmd[*]} -p $project -f $work/compose.yml down -v"
        else
            compose down -v --remove-orphans >"$work/down.log" 2>&1 \
                || { log "compose down failed:"; cat "$work/down.log"; }
        fi
    fi
    ((keep && up)) || rm -rf "$work"
    log "finished rc=$rc in $(( $(date +%s) - started )) s"
}
trap cleanup EXIT

# --- 1. images --------------------------------------------------------------------------------
images=(scp worklist converter sender capture gateway smoke-nats smoke-postgres)
if ((build)); then
    build_args=(--build-only --stand-ins --base "$base" --jobs "$jobs" --tag "$tag")
    [[ -n $extra_ca ]] && build_args+=(--extra-ca "$extra_ca")
    "$repo/scripts/check_images.sh" "${build_args[@]}"
fi
for s in "${images[@]}"; do
    docker image inspect "cinebridge-$s:$tag" >/dev/null 2>&1 \
        || { echo "no image cinebridge-$s:$tag (run without --no-build)" >&2; exit 2; }
done

# --- 2. project directory, .env, ports --------------------------------------------------------
copy_tracked_files "$project_dir"
admin_password=$(secret)
umask 077
cat >"$project_dir/.env" <<EOF
CB_POSTGRES_PASSWORD=$(secret)
CB_SECRET_KEY=$(secret)
CB_GATEWAY_ADMIN_PASSWORD=$admin_password
EOF
umask 022
ports=$("$python" -c 'from cinebridge_common.embedded import free_port
for name in ("NATS", "NATS_HTTP", "POSTGRES", "SCP", "PREVIEW", "GATEWAY", "SCP_HEALTH",
             "WORKLIST_HEALTH", "CONVERTER_HEALTH", "SENDER_HEALTH", "CAPTURE_HEALTH",
             "GATEWAY_HEALTH"):
    print(f"CB_SMOKE_{name}_PORT={free_port()}")')
while read -r assignment; do export "${assignment?}"; done <<<"$ports"
export CB_SMOKE_TAG=$tag
# The two files merged as Compose merges them; then what host networking cannot have: published
# ports (Docker refuses them beside network_mode host) and a network of the project's own (the
# default one would be a new bridge; `host` is named instead, so none is created).
(cd "$project_dir" && "${compose_cmd[@]}" -p "$project" \
    -f docker-compose.yml -f deploy/compose.smoke.yml config) >"$work/merged.yml"
"$python" - "$work/merged.yml" "$work/compose.yml" <<'PY'
import sys

import yaml

merged = yaml.safe_load(open(sys.argv[1]))
for service in merged["services"].values():
    if service.get("network_mode") == "host":
        service.pop("ports", None)
merged["networks"] = {"default": {"name": "host", "external": True}}
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(merged, f, sort_keys=False)
PY
log "project $project in $project_dir; gateway on 127.0.0.1:$CB_SMOKE_GATEWAY_PORT," \
    "SCP on 127.0.0.1:$CB_SMOKE_SCP_PORT"

# --- 3. up, healthchecks ----------------------------------------------------------------------
up=1
compose up -d --no-build >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
mapfile -t containers < <(compose ps -q)
((${#containers[@]} == ${#images[@]})) \
    || { log "expected ${#images[@]} containers, compose started ${#containers[@]}"; exit 1; }
wait_healthy "$health_timeout_s" "${containers[@]}"

# --- 4. one flow through the gateway's API ----------------------------------------------------
token_file=$work/token
"$python" - "http://127.0.0.1:$CB_SMOKE_GATEWAY_PORT" "$admin_password" "$flow_timeout_s" \
    "$token_file" <<'PY'
"""Study, snapshot, Save: delivered to the local SCP and indexed there; the statement and its
PDF; an API token for step 5."""
import sys
import time
import uuid

import httpx

url, password, timeout_s, token_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
patient_id = f"SMOKE-{uuid.uuid4().hex[:8].upper()}"
with httpx.Client(base_url=url, timeout=30) as api:
    login = api.post("/api/v1/auth/login", json={"username": "admin", "password": password})
    login.raise_for_status()
    api.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    study = api.post(
        "/api/v1/rooms/room1/study",
        json={"origin": "form", "patient": {"patient_name": "SMOKE^COMPOSE", "patient_id": patient_id}},
    )
    study.raise_for_status()
    study_id = study.json()["study"]["id"]
    snap = api.post("/api/v1/rooms/room1/sources/endo/snapshot")
    snap.raise_for_status()
    body = snap.json()
    assert body["ok"] and body["study_id"] == study_id, body
    api.post(f"/api/v1/studies/{study_id}/save", json={}).raise_for_status()
    print(f"study {study_id} ({patient_id}): snapshot {body['media_id']} saved", flush=True)
    deadline = time.monotonic() + timeout_s
    deliveries: list = []
    rows: list = []
    while time.monotonic() < deadline:
        deliveries = api.get(f"/api/v1/studies/{study_id}/deliveries").json()
        rows = api.get("/api/v1/studies", params={"patient_id": patient_id}).json()
        sent = [d for d in deliveries if d["destination_name"] == "local-scp" and d["state"] == "sent"]
        if sent and any(r.get("received_back") for r in rows):
            print(f"delivered to local-scp: {sent[0]['sop_instance_uid']}; received back by the SCP")
            break
        time.sleep(2)
    else:
        sys.exit(f"not delivered within {timeout_s:.0f} s: deliveries {deliveries}, search {rows}")
    statement = api.get("/api/v1/statement").json()
    assert statement["missing"] == [], statement["missing"]
    pdf = api.get("/api/v1/statement.pdf")
    pdf.raise_for_status()
    assert pdf.content.startswith(b"%PDF-"), pdf.content[:20]
    print(f"conformance statement from {len(statement['services'])} services; PDF {len(pdf.content)} bytes")
    token = api.post("/api/v1/tokens", json={"name": f"smoke-{patient_id}", "role": "administrator"})
    token.raise_for_status()
    with open(token_file, "w") as f:
        f.write(token.json()["token"])
PY
log "flow passed: study, snapshot, Save, delivery to the local SCP"

# --- 5. the admin CLI inside the gateway container --------------------------------------------
token=$(cat "$token_file")
compose exec -T -e "CINEBRIDGE_TOKEN=$token" gateway cinebridge status | sed 's/^/  /'
compose exec -T -e "CINEBRIDGE_TOKEN=$token" gateway \
    cinebridge statement --format pdf -o /tmp/statement.pdf | sed 's/^/  /'
log "OK: docker-compose.yml up with the smoke profile, ${#containers[@]} containers healthy;" \
    "a snapshot saved and delivered to the local SCP; cinebridge status in the gateway container"
