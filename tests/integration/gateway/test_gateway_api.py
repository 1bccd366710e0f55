"""Gateway API on real NATS + PostgreSQL: auth, limits, errors, studies, save/forward, capture,
health aggregation, live events, settings and echo, deliveries, audit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    CaptureCommand,
    CaptureCommandReply,
    ConvertMedia,
    EchoReply,
    EchoRequest,
    ForwardStudy,
    MediaCaptured,
    Reply,
    ServiceHeartbeat,
    StudySaved,
    WorklistCheckItem,
    WorklistCheckItemReply,
    WorklistItem,
    WorklistQuery,
    WorklistQueryReply,
)
from cinebridge_gateway.bootstrap import ensure_admin
from cinebridge_gateway.catalog_repository import open_search_pool
from cinebridge_gateway.repository import Repository
from cinebridge_gateway.schemas import StudyOut
from cinebridge_gateway.search_repository import RECENT_STUDIES, StudyFilter, build_search
from cinebridge_gateway.security import verify_password
from cinebridge_gateway.settings import GatewaySettings
from cinebridge_testkit import wait_for
from cinebridge_testkit.browser import capture_heartbeat
from pydantic import TypeAdapter

pytestmark = pytest.mark.integration

WORKLIST_ITEM = {
    "patient_name": "DOE^JANE",
    "patient_id": "PID-1",
    "patient_birth_date": "19800102",
    "patient_sex": "F",
    "accession_number": "ACC-1",
    "requested_procedure_id": "RP1",
    "requested_procedure_description": "Colonoscopy",
    "study_instance_uid": "1.2.3.4.5.6",
    "referring_physician_name": "WHO^DR",
    "modality": "ES",
}


class JobTap:
    """Sees every message published on a job subject through a core subscription: JetStream
    delivers stored messages to core subscribers too, and no work-queue consumer is needed
    (which would clash with a service's durable on the same subject)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def start(self, bus: Bus, subject: str) -> None:
        async def on_msg(msg: Any) -> None:
            self.seen.append(json.loads(msg.data))

        await bus.subscribe_events(subject, on_msg)
        await bus.nc.flush()

    def of_study(self, study_id: str) -> list[dict[str, Any]]:
        return [job for job in self.seen if job.get("study_id") == study_id]


async def add_media(pool: asyncpg.Pool, study_id: str, media_root: Any, n: int = 2) -> list[str]:
    ids = []
    for i in range(n):
        media_id = uuid.uuid4()
        rel = f"media/{media_id.hex}.jpg"
        path = media_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8\xff\xe0fakejpeg" + bytes([i]))
        await pool.execute(
            """INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime)
               VALUES ($1, $2, 'or1', 'cam1', 'snapshot', $3, 10, 'x', 'image/jpeg')""",
            media_id,
            uuid.UUID(study_id),
            rel,
        )
        ids.append(str(media_id))
    return ids


async def test_unauthenticated_calls_are_refused(gateway: Any) -> None:
    async with gateway.client() as client:
        for method, path in [
            ("GET", "/api/v1/studies"),
            ("GET", "/api/health"),
            ("POST", "/api/v1/studies"),
            ("GET", "/api/events"),
            ("GET", "/api/v1/settings/station"),
            ("GET", "/api/v1/ops/summary"),
            ("POST", "/api/v1/rooms/or1/sources/cam1/snapshot"),
        ]:
            reply = await client.request(method, path, json={})
            assert reply.status_code == 401, (path, reply.text)
            assert reply.json()["error"]["code"] == "unauthenticated"
        bad = await client.post("/api/v1/auth/login", json={"username": "admin", "password": "x"})
        assert bad.status_code == 401
        assert bad.json() == {
            "error": {"code": "bad_credentials", "message": "wrong user name or password"}
        }
        for _ in range(5):  # five failures for one name, then it must wait
            await client.post("/api/v1/auth/login", json={"username": "ghost", "password": "x"})
        throttled = await client.post(
            "/api/v1/auth/login", json={"username": "ghost", "password": "x"}
        )
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
        bearer = await client.get("/api/v1/studies", headers={"Authorization": "Bearer cbt_nope"})
        assert bearer.status_code == 401


async def test_session_cookie_needs_csrf_header_and_expires(gateway: Any, admin: Any) -> None:
    assert (await admin.get("/api/v1/auth/me")).json()["role"] == "administrator"
    cookie = admin.cookies.get("cb_session")
    async with gateway.client(cookies={"cb_session": cookie}) as no_csrf:
        assert (await no_csrf.get("/api/v1/studies")).status_code == 200
        refused = await no_csrf.post("/api/v1/studies", json={"origin": "form"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"
    pool = gateway.ctx.pool
    await pool.execute("UPDATE gateway_sessions SET expires_at = now() - interval '1 second'")

    async def refused() -> httpx.Response | None:
        # Within the gateway's short principal cache (5 s) the session may still be honoured.
        reply = await admin.get("/api/v1/studies")
        return reply if reply.status_code == 401 else None

    expired = await wait_for(refused, 10, interval_s=0.5, what="expired session refused")
    assert expired.json()["error"]["code"] == "session_expired"


async def test_body_limit_and_clear_validation_errors(gateway: Any, admin: Any) -> None:
    big = b"x" * (100 * 1024 * 1024)
    try:
        reply = await admin.post(
            "/api/v1/studies", content=big, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "body_too_large"
    except httpx.WriteError:
        pass  # the server answered 413 and closed before the client finished writing

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    streamed = await admin.post(
        "/api/v1/studies", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413

    malformed = await admin.post(
        "/api/v1/studies",
        content=b'{"origin": "form",',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 422
    assert "malformed JSON" in malformed.json()["error"]["message"]

    invalid = await admin.post(
        "/api/v1/studies",
        json={
            "origin": "form",
            "patient": {"patient_name": "A" * 65, "patient_birth_date": "1980-13-01"},
        },
    )
    assert invalid.status_code == 422
    message = invalid.json()["error"]["message"]
    assert "body.patient.patient_name" in message and "64 characters" in message
    assert "YYYYMMDD" in message


async def test_study_lifecycle_with_worklist_edit_rule_and_audit(gateway: Any, admin: Any) -> None:
    form = await admin.post(
        "/api/v1/studies",
        json={
            "origin": "form",
            "room": "or1",
            "patient": {
                "patient_name": "SMITH^JOHN",
                "patient_id": "P100",
                "patient_sex": "M",
                "patient_birth_date": "1970-05-04",
                "modality": "XC",
            },
        },
    )
    assert form.status_code == 201, form.text
    assert form.json()["patient_birth_date"] == "19700504"
    assert form.json()["modality"] == "XC"  # the patient form's Modality (a CS, checked)
    bad = await admin.post(
        "/api/v1/studies", json={"origin": "form", "patient": {"modality": "X\\C"}}
    )
    assert bad.status_code == 422 and "modality" in bad.text, bad.text

    wl = await admin.post(
        "/api/v1/studies",
        json={"origin": "worklist", "room": "or1", "worklist_item": WORKLIST_ITEM},
    )
    assert wl.status_code == 201, wl.text
    wl_study = wl.json()
    assert wl_study["study_instance_uid"] == "1.2.3.4.5.6"
    assert wl_study["study_id"] == "RP1" and wl_study["study_description"] == "Colonoscopy"
    again = await admin.post(
        "/api/v1/studies", json={"origin": "worklist", "worklist_item": WORKLIST_ITEM}
    )
    assert again.status_code == 409

    local = await admin.post(
        "/api/v1/studies", json={"origin": "local", "from_study_id": form.json()["id"]}
    )
    assert local.json()["patient_id"] == "P100"
    assert local.json()["study_instance_uid"] != form.json()["study_instance_uid"]

    # Statement §8.1.5: editing a worklist study regenerates its UID and drops "New" attributes.
    edited = await admin.patch(
        f"/api/v1/studies/{wl_study['id']}", json={"patient_name": "DOE^JANET"}
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["edited"] is True
    assert edited.json()["study_instance_uid"] != "1.2.3.4.5.6"
    row = await gateway.ctx.pool.fetchrow(
        "SELECT worklist_item, modality FROM studies WHERE id = $1", uuid.UUID(wl_study["id"])
    )
    assert row["worklist_item"] is None and row["modality"] == "ES"  # the procedure's

    found = (await admin.get("/api/v1/studies", params={"q": "doe"})).json()
    assert [s["id"] for s in found] == [wl_study["id"]]
    assert found[0]["status"] == "non-converted"
    by_pid = (await admin.get("/api/v1/studies", params={"patient_id": "p1*"})).json()
    assert {s["patient_id"] for s in by_pid} == {"P100"}
    listed = (await admin.get("/api/v1/studies")).json()
    assert len(listed) == 3
    # The page is JSON made by PostgreSQL: it must be exactly the documented StudyOut shape.
    pages = TypeAdapter(list[StudyOut]).validate_python(listed)
    assert {str(s.id) for s in pages} >= {wl_study["id"], form.json()["id"]}
    assert set(listed[0]) == set(StudyOut.model_fields)
    # The search's parameters are checked as one model: a bad one answers 422 naming it, as a
    # declared parameter did; an unknown one is ignored; a repeated one counts its last value.
    for params, field in (
        ({"limit": "0"}, "query.limit"),
        ({"offset": "x"}, "query.offset"),
        ({"date_from": "2025-01-01"}, "query.date_from"),
        ({"status": "lost"}, "query.status"),
        ({"accession_number": "A" * 17}, "query.accession_number"),
        ({"ledger": "maybe"}, "query.ledger"),
    ):
        bad = await admin.get("/api/v1/studies", params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert [d["field"] for d in bad.json()["error"]["details"]] == [field], bad.text
    assert len((await admin.get("/api/v1/studies", params={"colour": "red"})).json()) == 3
    last = await admin.get("/api/v1/studies", params=[("limit", "200"), ("limit", "1")])
    assert len(last.json()) == 1
    documented = (await admin.get("/api/v1/openapi.json")).json()
    parameters = documented["paths"]["/api/v1/studies"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == [
        *("q", "patient_id", "accession_number", "date_from", "date_to", "origin"),
        *("status", "room", "limit", "offset", "ledger"),
    ]
    assert parameters[8]["schema"] == {
        "default": 50,
        "maximum": 200,
        "minimum": 1,
        "title": "Limit",
        "type": "integer",
    }

    audit = (await admin.get("/api/v1/audit", params={"study_id": wl_study["id"]})).json()
    assert [a["action"] for a in audit] == ["study_edited", "study_created"]
    assert audit[0]["actor"] == "admin" and audit[0]["detail"]["fields"]


async def test_save_publishes_idempotent_convert_jobs(
    gateway: Any, admin: Any, peer_bus: Bus
) -> None:
    study = (await admin.post("/api/v1/studies", json={"origin": "form"})).json()
    assert (await admin.post(f"/api/v1/studies/{study['id']}/save", json={})).status_code == 409
    media = await add_media(gateway.ctx.pool, study["id"], gateway.settings.media_root)

    converts, forwards = JobTap(), JobTap()
    await converts.start(peer_bus, ConvertMedia.subject)
    await forwards.start(peer_bus, ForwardStudy.subject)
    first = await admin.post(f"/api/v1/studies/{study['id']}/save", json={"iod": "vl"})
    assert first.status_code == 202, first.text

    async def published() -> list[dict[str, Any]] | None:
        return converts.of_study(study["id"]) or None

    await wait_for(published, 10, what="ConvertMedia jobs on CB_JOBS")
    await wait_for(
        lambda: _value(len(converts.of_study(study["id"])) == len(media)),
        10,
        what="one job per media item",
    )
    jobs = converts.of_study(study["id"])
    assert sorted(j["media_id"] for j in jobs) == sorted(media)
    assert {j["iod"] for j in jobs} == {"vl"}
    assert all(j["job_key"].startswith(j["media_id"] + ":vl:") for j in jobs)

    # Save again: converted media are left alone (same key: one outbox row, one Nats-Msg-Id);
    # every other item is asked again (same job key, so the same UIDs; a new message), whether
    # it failed or its job was lost while it was captured or converting.
    await gateway.ctx.pool.execute(
        "UPDATE media SET state = 'converted' WHERE id = $1", uuid.UUID(media[0])
    )
    second = await admin.post(f"/api/v1/studies/{study['id']}/save", json={"iod": "vl"})
    assert second.json()["job_keys"] == first.json()["job_keys"]
    await gateway.ctx.pool.execute(
        "UPDATE media SET state = 'failed' WHERE id = $1", uuid.UUID(media[1])
    )
    await admin.post(f"/api/v1/studies/{study['id']}/save", json={"iod": "vl"})

    async def retried() -> bool:
        return len(converts.of_study(study["id"])) == len(media) + 2

    await wait_for(retried, 10, what="the unconverted media's job sent again twice")
    again = converts.of_study(study["id"])[len(media) :]
    assert [j["media_id"] for j in again] == [media[1], media[1]]
    assert {j["job_key"] for j in again} == {
        j["job_key"] for j in jobs if j["media_id"] == media[1]
    }
    converted_rows = await gateway.ctx.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = $1 AND msg_id LIKE $2",
        ConvertMedia.subject,
        f"convert-{media[0]}:%",
    )
    assert converted_rows == 1
    saved_events = await gateway.ctx.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = $1 "
        "AND convert_from(payload, 'UTF8')::jsonb->>'study_id' = $2",
        StudySaved.subject,
        study["id"],
    )
    assert saved_events == 3  # one per accepted Save; the catalog (capture) records the state

    content = await admin.get(f"/api/v1/media/{media[0]}/content")
    assert content.status_code == 200 and content.content.startswith(b"\xff\xd8")
    assert (await admin.delete(f"/api/v1/media/{media[0]}")).status_code == 428
    assert (
        await admin.delete(f"/api/v1/media/{media[0]}", params={"confirm": "true"})
    ).status_code == 204
    detail = (await admin.get(f"/api/v1/studies/{study['id']}")).json()
    assert [m["id"] for m in detail["media"]] == [media[1]]
    assert (
        await admin.delete(f"/api/v1/media/{media[0]}", params={"confirm": "true"})
    ).status_code == 404  # deleted before
    assert (
        await admin.delete(f"/api/v1/media/{uuid.uuid4()}", params={"confirm": "true"})
    ).status_code == 404

    dest = str(uuid.uuid4())
    fwd = await admin.post(
        f"/api/v1/studies/{study['id']}/forward", json={"destination_ids": [dest]}
    )
    assert fwd.status_code == 202

    async def forwarded() -> list[dict[str, Any]] | None:
        return forwards.of_study(study["id"]) or None

    (job,) = await wait_for(forwarded, 10, what="ForwardStudy job")
    assert job["destination_ids"] == [dest] and job["requested_by"] == "admin"


async def test_capture_actions_go_to_the_rooms_capture_service(admin: Any, peer_bus: Bus) -> None:
    seen: list[CaptureCommand] = []

    async def capture(cmd: CaptureCommand) -> Reply:
        seen.append(cmd)
        if cmd.source == "broken":
            return CaptureCommandReply(ok=False, error="no signal on broken")
        return CaptureCommandReply(media_id=str(uuid.uuid4()), study_id=None)

    await peer_bus.serve(CaptureCommand, capture, subject="cb.rpc.capture.or7.command")
    for room in ("or7", "or8"):  # or8: reported once, its capture service gone since
        await peer_bus.publish_core(capture_heartbeat(room))
    await peer_bus.nc.flush()

    async def rooms_known() -> bool:
        rooms = (await admin.get("/api/health")).json()["instances"]
        return {"or7", "or8"} <= {i["room"] for i in rooms}

    await wait_for(rooms_known, 10, what="rooms or7 and or8 in the health board")
    ok = await admin.post("/api/v1/rooms/or7/sources/cam1/snapshot")
    assert ok.status_code == 200, ok.text
    assert ok.json()["media_id"]
    assert (seen[0].room, seen[0].action, seen[0].requested_by) == ("or7", "snapshot", "admin")
    refused = await admin.post("/api/v1/rooms/or7/sources/broken/record_start")
    assert refused.status_code == 409 and "no signal" in refused.json()["error"]["message"]
    gone = await admin.post("/api/v1/rooms/or8/sources/cam1/snapshot")
    assert gone.status_code == 503, gone.text
    unknown = await admin.post("/api/v1/rooms/or9/sources/cam1/snapshot")
    assert unknown.status_code == 404 and "or9" in unknown.json()["error"]["message"]
    assert (await admin.post("/api/v1/rooms/or7/sources/cam1/explode")).status_code == 422
    assert (await admin.post("/api/v1/rooms/..%2F/sources/cam1/snapshot")).status_code in (404, 422)


async def test_health_aggregates_heartbeats_and_events_stream(
    gateway: Any, admin: Any, peer_bus: Bus
) -> None:
    hb = ServiceHeartbeat(
        service="capture",
        instance="cap-a",
        version="1",
        state="up",
        room="or3",
        started_at=ServiceHeartbeat.model_fields["occurred_at"].default_factory(),
    )  # type: ignore[misc,call-arg]
    await peer_bus.publish_core(hb)

    async def listed() -> dict[str, Any] | None:
        body = (await admin.get("/api/health")).json()
        names = {(i["service"], i["instance"]) for i in body["instances"]}
        return body if {("capture", "cap-a"), ("gateway", "gw-test")} <= names else None

    body = await wait_for(listed, 10, what="heartbeats in /api/health")
    cap = next(i for i in body["instances"] if i["instance"] == "cap-a")
    assert cap["room"] == "or3" and cap["state"] == "up" and cap["last_seen"]

    metrics = await admin.get("/api/v1/services/gateway/gw-test/metrics")
    assert metrics.status_code == 200
    assert (
        'cinebridge_gateway_http_request_duration_seconds_count{method="GET",route="/api/health"'
        in metrics.text
    )
    unknown = await admin.get("/api/v1/services/gateway/nobody/metrics")
    assert unknown.status_code == 404

    event = MediaCaptured(
        media_id="m1",
        study_id="s1",
        room="or3",
        source="cam1",
        kind="snapshot",
        rel_path="media/m1.jpg",
        size=1,
        sha256="x",
        mime="image/jpeg",
    )
    async with admin.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert "retry" in await anext(lines)
        await peer_bus.publish(event)
        async with asyncio.timeout(10):
            async for line in lines:
                if line == "event: cb.evt.media.captured":
                    data = await anext(lines)
                    assert json.loads(data.removeprefix("data: "))["media_id"] == "m1"
                    break


async def test_settings_roles_echo_and_tokens(gateway: Any, admin: Any, peer_bus: Bus) -> None:
    assert (await admin.get("/api/v1/settings/station")).json()["local_ae_title"] == "SPACS"
    put = await admin.put(
        "/api/v1/settings/station",
        json={"station_name": "OR1-TOWER", "character_set": "ISO_IR 100"},
    )
    assert put.status_code == 200 and put.json()["station_name"] == "OR1-TOWER"
    bad = await admin.put("/api/v1/settings/station", json={"character_set": "KLINGON"})
    assert bad.status_code == 422
    # The purge policy (docs/purge.md): a high watermark below the low one is refused, whole.
    policy = {"purge_enabled": True, "purge_retention_days": 7, "purge_low_watermark_percent": 5}
    put = await admin.put("/api/v1/settings/station", json=policy)
    assert put.status_code == 200 and put.json()["purge_retention_days"] == 7, put.text
    crossed = await admin.put("/api/v1/settings/station", json={"purge_high_watermark_percent": 4})
    assert crossed.status_code == 422 and "watermark" in crossed.text, crossed.text
    kept = (await admin.get("/api/v1/settings/station")).json()
    assert (kept["purge_low_watermark_percent"], kept["purge_high_watermark_percent"]) == (5, 15)

    created = await admin.post(
        "/api/v1/users", json={"username": "op1", "password": "op1-secret", "role": "operator"}
    )
    assert created.status_code == 201
    operator = await gateway.login("op1", "op1-secret")
    forbidden = await operator.put("/api/v1/settings/station", json={"station_name": "X"})
    assert forbidden.status_code == 403
    await operator.aclose()

    async def echo(req: EchoRequest) -> Reply:
        return EchoReply(
            reachable=req.port == 104,
            rtt_ms=1.5,
            reason=None if req.port == 104 else "connection refused",
        )

    await peer_bus.serve(EchoRequest, echo)
    await peer_bus.nc.flush()
    ok = await admin.post(
        "/api/v1/settings/echo", json={"ae_title": "PACS", "host": "127.0.0.1", "port": 104}
    )
    assert ok.json() == {"reachable": True, "rtt_ms": 1.5, "reason": None}
    down = await admin.post(
        "/api/v1/settings/echo", json={"ae_title": "PACS", "host": "127.0.0.1", "port": 105}
    )
    assert down.json()["reachable"] is False and down.json()["reason"] == "connection refused"

    token = (await admin.post("/api/v1/tokens", json={"name": "grafana"})).json()
    async with gateway.client(headers={"Authorization": f"Bearer {token['token']}"}) as ops:
        assert (await ops.get("/api/health")).status_code == 200
        assert (await ops.get("/api/v1/ops/summary")).status_code == 200
        assert (await admin.delete(f"/api/v1/tokens/{token['id']}")).status_code == 204
        assert (await ops.get("/api/health")).status_code == 401
    actions = [a["action"] for a in (await admin.get("/api/v1/audit")).json()]
    assert {"settings_changed", "user_created", "token_created", "token_revoked"} <= set(actions)


async def test_reconcile_links_a_begun_study_to_a_worklist_item(
    admin: Any, peer_bus: Bus, db_pool: asyncpg.Pool
) -> None:
    """The gateway has the worklist service check the item, then asks the study catalog's
    owner (capture's catalog handlers, which every gateway test serves) to apply it."""
    checked: list[WorklistItem] = []

    async def check_item(req: WorklistCheckItem) -> Reply:
        checked.append(req.item)
        if req.item.accession_number == "BAD":
            return WorklistCheckItemReply(ok=False, error="the item's dataset is malformed")
        return WorklistCheckItemReply(item=req.item)

    await peer_bus.serve(WorklistCheckItem, check_item)
    study = (await admin.post("/api/v1/studies", json={"origin": "form"})).json()
    ok = await admin.post(
        f"/api/v1/studies/{study['id']}/reconcile", json={"worklist_item": WORKLIST_ITEM}
    )
    assert ok.status_code == 200, ok.text
    linked = ok.json()
    assert (linked["study_instance_uid"], linked["origin"]) == ("1.2.3.4.5.6", "worklist")
    assert (linked["patient_name"], linked["accession_number"]) == ("DOE^JANE", "ACC-1")
    assert [i.accession_number for i in checked] == ["ACC-1"]
    other = (await admin.post("/api/v1/studies", json={"origin": "form"})).json()
    taken = await admin.post(
        f"/api/v1/studies/{other['id']}/reconcile", json={"worklist_item": WORKLIST_ITEM}
    )
    assert taken.status_code == 409 and "already has Study Instance UID" in taken.text
    refused = await admin.post(
        f"/api/v1/studies/{other['id']}/reconcile",
        json={"worklist_item": {**WORKLIST_ITEM, "accession_number": "BAD"}},
    )
    assert refused.status_code == 409 and "malformed" in refused.json()["error"]["message"]
    audit = (await admin.get("/api/v1/audit", params={"study_id": study["id"]})).json()
    assert audit[0]["action"] == "study_reconciled"
    row = await db_pool.fetchrow("SELECT origin FROM studies WHERE id = $1", uuid.UUID(other["id"]))
    assert row["origin"] == "form"


async def test_worklist_search_relays_to_the_worklist_service(admin: Any, peer_bus: Bus) -> None:
    async def query(q: WorklistQuery) -> Reply:
        assert q.patient_name == "DOE*"
        return WorklistQueryReply(items=[WORKLIST_ITEM])  # type: ignore[list-item]

    await peer_bus.serve(WorklistQuery, query)
    await peer_bus.nc.flush()
    reply = await admin.post("/api/v1/worklist/query", json={"patient_name": "DOE*"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["items"][0]["accession_number"] == "ACC-1"


async def test_deliveries_per_instance_and_study_status(gateway: Any, admin: Any) -> None:
    study = (await admin.post("/api/v1/studies", json={"origin": "form"})).json()
    pool = gateway.ctx.pool
    media = await add_media(pool, study["id"], gateway.settings.media_root, n=1)
    await pool.execute("UPDATE media SET state = 'converted' WHERE id = $1", uuid.UUID(media[0]))
    assert (await admin.get(f"/api/v1/studies/{study['id']}")).json()["status"] == "converted"
    dest, inst, delivery = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO destinations (id, name, ae_title, host, port) "
        "VALUES ($1, 'PACS', 'PACS', '127.0.0.1', 104)",
        dest,
    )
    await pool.execute(
        "INSERT INTO outgoing_instances (id, study_id, sop_instance_uid, sop_class_uid, "
        "transfer_syntax_uid, rel_path, size, sha256) VALUES ($1, $2, '1.2.3', '1.2.840.10008."
        "5.1.4.1.1.7', '1.2.840.10008.1.2.4.50', 'dicom/x.dcm', 1, 'x')",
        inst,
        uuid.UUID(study["id"]),
    )
    await pool.execute(
        "INSERT INTO deliveries (id, instance_id, destination_id, study_id, state, "
        "attempts) VALUES ($1, $2, $3, $4, 'sent', 2)",
        delivery,
        inst,
        dest,
        uuid.UUID(study["id"]),
    )
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, outcome, "
        "status_code) VALUES ($1, 1, now(), 'failed-retrying', 42752), "
        "($1, 2, now(), 'sent', 0)",
        delivery,
    )
    detail = (await admin.get(f"/api/v1/studies/{study['id']}")).json()
    assert detail["status"] == "sent"
    assert detail["deliveries"][0]["destination_name"] == "PACS"
    assert detail["deliveries"][0]["sop_instance_uid"] == "1.2.3"
    attempts = (await admin.get(f"/api/v1/deliveries/{delivery}/attempts")).json()
    assert [a["outcome"] for a in attempts] == ["failed-retrying", "sent"]
    listed = (await admin.get("/api/v1/studies", params={"status": "sent"})).json()
    assert [s["id"] for s in listed] == [study["id"]]
    # One more media item, not converted yet: the study is not `sent` any more.
    await add_media(pool, study["id"], gateway.settings.media_root, n=1)
    assert (await admin.get(f"/api/v1/studies/{study['id']}")).json()["status"] == "non-converted"
    assert (await admin.get("/api/v1/studies", params={"status": "sent"})).json() == []


async def test_study_commitment_badge_and_the_ops_list_of_uncommitted_studies(
    gateway: Any, admin: Any
) -> None:
    """Storage Commitment (PS3.4 Annex J) as the UI sees it: one badge per study over its
    deliveries to destinations that require commitment; the ops page lists the studies not
    committed CB_GATEWAY_COMMITMENT_OVERDUE_S (default 1 h) after they were sent."""
    study = (await admin.post("/api/v1/studies", json={"origin": "form"})).json()
    sid = uuid.UUID(study["id"])
    pool = gateway.ctx.pool
    archive, plain = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO destinations (id, name, ae_title, host, port, commitment_required) "
        "VALUES ($1, 'ARCHIVE', 'ARCHIVE', '127.0.0.1', 104, true), "
        "($2, 'PLAIN', 'PLAIN', '127.0.0.1', 105, false)",
        archive,
        plain,
    )
    deliveries = []
    for n in range(2):
        inst = uuid.uuid4()
        await pool.execute(
            "INSERT INTO outgoing_instances (id, study_id, sop_instance_uid, sop_class_uid, "
            "transfer_syntax_uid, rel_path, size, sha256) VALUES ($1, $2, $3, "
            "'1.2.840.10008.5.1.4.1.1.7', '1.2.840.10008.1.2.4.50', 'dicom/x.dcm', 1, 'x')",
            inst,
            sid,
            f"1.2.3.{n}",
        )
        for dest in (archive, plain):
            delivery = uuid.uuid4()
            deliveries.append((delivery, dest))
            await pool.execute(
                "INSERT INTO deliveries (id, instance_id, destination_id, study_id, state, "
                "delivered_at) VALUES ($1, $2, $3, $4, 'sent', now() - interval '2 hours')",
                delivery,
                inst,
                dest,
                sid,
            )

    async def badge() -> str | None:
        detail = (await admin.get(f"/api/v1/studies/{study['id']}")).json()
        listed = (await admin.get("/api/v1/studies", params={"q": ""})).json()
        [row] = [r for r in listed if r["id"] == study["id"]]
        assert row["commitment"] == detail["commitment"]
        return detail["commitment"]  # type: ignore[no-any-return]

    async def set_commitment(value: str) -> None:
        await pool.execute(
            "UPDATE deliveries SET commitment = $1 WHERE destination_id = $2", value, archive
        )

    assert await badge() == "sent"  # stored, not asked yet
    overdue = (await admin.get("/api/v1/ops/summary")).json()["uncommitted"]
    assert [(u["study_id"], u["destination"], u["instances"]) for u in overdue] == [
        (study["id"], "ARCHIVE", 2)
    ]
    await set_commitment("requested")
    assert await badge() == "requested"
    await set_commitment("unsupported")
    assert await badge() == "unsupported"
    assert (await admin.get("/api/v1/ops/summary")).json()["uncommitted"] == []
    await set_commitment("failed")
    assert await badge() == "commit-failed"
    await set_commitment("committed")
    assert await badge() == "committed"
    # The archive failed one instance: it is sent again, the study is not committed meanwhile.
    resent = next(d for d, dest in deliveries if dest == archive)
    await pool.execute(
        "UPDATE deliveries SET state = 'queued', commitment = NULL, commitment_requests = 1"
        " WHERE id = $1",
        resent,
    )
    assert await badge() == "requested"
    await pool.execute(
        "UPDATE deliveries SET state = 'sent', commitment = 'committed' WHERE id = $1", resent
    )
    assert await badge() == "committed"
    assert (await admin.get("/api/v1/ops/summary")).json()["uncommitted"] == []
    detail = (await admin.get(f"/api/v1/studies/{study['id']}")).json()
    by_destination = {d["destination_name"]: d["commitment"] for d in detail["deliveries"]}
    assert by_destination == {"ARCHIVE": "committed", "PLAIN": None}


async def test_local_search_includes_studies_received_by_the_scp(gateway: Any, admin: Any) -> None:
    pool = gateway.ctx.pool
    received = uuid.uuid4()
    await pool.execute(
        "INSERT INTO received_studies (id, study_instance_uid, patient_name, patient_id, "
        "patient_birth_date, study_date) VALUES ($1, '1.2.9.9', 'EARLIER^PAT', 'P-OLD', "
        "'19500101', '20250101')",
        received,
    )
    series = uuid.uuid4()
    await pool.execute(
        "INSERT INTO received_series (id, study_id, series_instance_uid) "
        "VALUES ($1, $2, '1.2.9.9.1')",
        series,
        received,
    )
    await pool.execute(
        "INSERT INTO received_instances (id, study_id, series_id, sop_instance_uid, "
        "sop_class_uid, transfer_syntax_uid, rel_path, size, sha256, calling_ae) VALUES ($1, $2, "
        "$3, '1.2.9.9.1.1', '1.2.840.10008.5.1.4.1.1.7', '1.2.840.10008.1.2.1', 'received/x.dcm', "
        "1, $4, 'MODALITY')",
        uuid.uuid4(),
        received,
        series,
        "0" * 64,
    )
    await admin.post(
        "/api/v1/studies", json={"origin": "form", "patient": {"patient_name": "EARNEST^X"}}
    )
    both = (await admin.get("/api/v1/studies", params={"q": "ear"})).json()
    assert {(s["patient_name"], s["status"], s["media_count"]) for s in both} == {
        ("EARLIER^PAT", "received", 1),
        ("EARNEST^X", "non-converted", 0),
    }
    # The ops page counts what the SCP's read model (received_totals) says was received.
    summary = (await admin.get("/api/v1/ops/summary")).json()
    assert summary["received"] == {"instances": 1, "last_24h": 1}
    only = (await admin.get("/api/v1/studies", params={"status": "received"})).json()
    assert [s["id"] for s in only] == [str(received)]
    dated = (await admin.get("/api/v1/studies", params={"date_to": "20251231"})).json()
    assert [s["id"] for s in dated] == [str(received)]
    new = await admin.post(
        "/api/v1/studies", json={"origin": "local", "from_study_id": str(received)}
    )
    assert new.status_code == 201, new.text
    assert (new.json()["patient_id"], new.json()["origin"]) == ("P-OLD", "local")


async def test_first_start_creates_the_admin_once(db_pool: asyncpg.Pool, capsys: Any) -> None:
    settings = GatewaySettings(gateway_admin_password=None)
    repo = Repository(db_pool)
    password = await ensure_admin(repo, settings)
    assert password and password in capsys.readouterr().err
    user = await repo.user_by_name("admin")
    assert user and user["role"] == "administrator"
    assert verify_password(user["password_hash"], password)
    assert await ensure_admin(repo, settings) is None  # never again once a user exists
    with pytest.raises(ValueError, match="placeholder"):
        GatewaySettings(gateway_admin_password="changeme")


async def _value(ok: bool) -> bool:
    return ok


async def test_a_study_received_back_by_the_own_scp_is_one_row_marked_as_such(
    gateway: Any, admin: Any
) -> None:
    """The embedded run sends to the station's own SCP: the study comes back with the same
    Study Instance UID and must not be listed as a second study."""
    created = await admin.post(
        "/api/v1/studies", json={"origin": "form", "patient": {"patient_name": "ROUNDTRIP^R"}}
    )
    assert created.status_code == 201, created.text
    local = created.json()
    await gateway.ctx.pool.execute(
        "INSERT INTO received_studies (id, study_instance_uid, patient_name, patient_id) "
        "VALUES ($1, $2, 'ROUNDTRIP^R', $3)",
        uuid.uuid4(),
        local["study_instance_uid"],
        local["patient_id"],
    )
    rows = (await admin.get("/api/v1/studies", params={"q": "roundtrip"})).json()
    assert [(r["id"], r["origin"], r["received_back"]) for r in rows] == [
        (local["id"], "form", True)
    ]
    received = (await admin.get("/api/v1/studies", params={"status": "received"})).json()
    assert local["study_instance_uid"] not in {r["study_instance_uid"] for r in received}


async def test_a_search_finds_old_and_common_matches_alike(gateway: Any, admin: Any) -> None:
    """Accessions grow with time: an old accession's matches lie together far behind the newest
    studies, a common name's among them. Each way of finding the page (search_repository
    `_matches_page`: few matches, the newest studies, every match) gives what a plain filter and
    sort of every study gives, planned with the values or as the cached generic plan."""
    pool = gateway.ctx.pool
    await pool.execute(
        """INSERT INTO studies (id, study_instance_uid, origin, patient_name, patient_id,
                                accession_number, study_date, created_at)
           SELECT gen_random_uuid(), '2.25.' || (777000 + g)::text, 'form',
                  'SPARSE^P' || (g % 7), 'SP' || g, 'SPA' || lpad(g::text, 5, '0'),
                  to_char(date '2020-01-01' + g, 'YYYYMMDD'), now() - make_interval(mins => g)
           FROM generate_series(1, $1) g""",
        RECENT_STUDIES + 1000,
    )
    await pool.execute("ANALYZE studies")
    every = await pool.fetch(
        "SELECT id, patient_name, accession_number, study_date, created_at FROM studies"
    )

    def expected(f: StudyFilter, prefix: str, column: str) -> list[uuid.UUID]:
        hits = [
            r
            for r in every
            if r[column].lower().startswith(prefix)
            and r["study_date"] >= (f.date_from or "")
            and (not f.date_to or "" < r["study_date"] <= f.date_to)
        ]
        hits.sort(key=lambda r: r["created_at"], reverse=True)
        return [r["id"] for r in hits[f.offset : f.offset + f.limit]]

    cases = [
        (StudyFilter(q="SPA029"), "spa029", "accession_number"),  # 100, all far back
        (StudyFilter(q="sparse^p3", limit=20, offset=40), "sparse^p3", "patient_name"),
        (
            StudyFilter(accession_number="SPA0001*", date_from="20200115"),
            "spa0001",
            "accession_number",
        ),
        (StudyFilter(q="nobody"), "nobody", "patient_name"),
        (StudyFilter(q="SPA02", limit=30), "spa02", "accession_number"),  # 1,000 far back
        (StudyFilter(q="?PARSE^P3", limit=40), "sparse^p3", "patient_name"),  # no range
        # Dates alone: 6 counted on the date index, then 2,900 (the newest hold a page).
        (StudyFilter(date_from="20200105", date_to="20200110"), "", "patient_name"),
        (StudyFilter(date_from="20200201", limit=60, offset=10), "", "patient_name"),
    ]
    # Three rounds: a statement run more than five times may be given a generic plan; the
    # gateway's search pool plans each one generically from the first run.
    dsn = gateway.ctx.settings.database_url.get_secret_value()
    search_pool = await open_search_pool(dsn, 1, "cinebridge-test-search", 60.0)
    try:
        assert await search_pool.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        for f, prefix, column in cases * 3:
            built = build_search(f, with_deliveries=True, with_received=True)
            assert built is not None
            for way in (pool, search_pool):
                found = [r["id"] for r in await way.fetch(built[0], *built[1])]
                assert found == expected(f, prefix, column), f
    finally:
        await search_pool.close()
    rare = (await admin.get("/api/v1/studies", params={"q": "SPA029", "limit": 200})).json()
    assert [r["accession_number"] for r in rare] == [f"SPA029{n:02d}" for n in range(100)]
