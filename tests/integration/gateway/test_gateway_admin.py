"""Hospital IT's API: roles (the read-only viewer refused on every write the app has), users,
own password, first-run password, API tokens with expiry, the audit log with filters and CSV,
settings validation (422 naming the field), and the API docs' assets served by the gateway."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    Destination,
    DestinationReply,
    DestinationUpsert,
    EchoReply,
    EchoRequest,
    Reply,
)
from cinebridge_gateway.deps import OWN_ACCOUNT_WRITES

from .conftest import ADMIN_PASSWORD, RunningGateway, gateway_settings, start_gateway

pytestmark = pytest.mark.integration
WRITES = ("post", "put", "patch", "delete")


def fill_path(path: str, params: list[dict[str, Any]]) -> str:
    """A concrete URL for an OpenAPI path: each parameter gets a value its schema accepts."""
    for param in params:
        if param.get("in") != "path":
            continue
        schema = param.get("schema", {})
        if "enum" in schema:
            value = schema["enum"][0]
        elif schema.get("format") == "uuid" or "{36}" in schema.get("pattern", ""):
            value = str(uuid.uuid4())
        else:
            value = "or1"
        path = path.replace("{" + param["name"] + "}", str(value))
    return path


async def make_user(admin: httpx.AsyncClient, name: str, role: str) -> None:
    created = await admin.post(
        "/api/v1/users", json={"username": name, "password": "Initial-Pass-1", "role": role}
    )
    assert created.status_code == 201, created.text
    assert created.json()["must_change_password"] is True, "an administrator's password is one-time"


async def login_changed(gw: RunningGateway, name: str, new: str) -> httpx.AsyncClient:
    """Log in with the one-time password, change it as the UI makes one do."""
    client = await gw.login(name, "Initial-Pass-1")
    me = (await client.get("/api/v1/auth/me")).json()
    assert me["must_change_password"] is True, "a password set by an administrator is one-time"
    blocked = await client.post("/api/v1/studies", json={"origin": "form"})
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "password_change_required"
    changed = await client.post(
        "/api/v1/auth/password",
        json={"current_password": "Initial-Pass-1", "new_password": new},
    )
    assert changed.status_code == 204, changed.text
    assert (await client.get("/api/v1/auth/me")).json()["must_change_password"] is False
    return client


async def test_viewer_is_refused_on_every_write(gateway: RunningGateway, admin: Any) -> None:
    await make_user(admin, "watcher", "viewer")
    viewer = await login_changed(gateway, "watcher", "Watcher-Own-Pass-2")
    token = (await admin.post("/api/v1/tokens", json={"name": "wall", "role": "viewer"})).json()
    bearer = gateway.client(headers={"Authorization": f"Bearer {token['token']}"})
    schema = (await admin.get("/api/v1/openapi.json")).json()
    writes = [
        (method, fill_path(path, op.get("parameters", [])), path)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in WRITES
    ]
    assert len(writes) >= 25, writes  # the app's write routes, every one of them
    checked = 0
    try:
        for method, url, template in writes:
            if template in OWN_ACCOUNT_WRITES or template == "/api/v1/auth/login":
                continue
            for client in (viewer, bearer):
                reply = await client.request(method.upper(), url, json={})
                assert reply.status_code == 403, (method, url, reply.text)
                assert reply.json()["error"]["code"] == "forbidden", (method, url, reply.text)
                checked += 1
        # Reading stays open to the viewer: dashboards and the ops page.
        for path in ("/api/health", "/api/v1/ops/summary", "/api/v1/studies", "/api/v1/audit"):
            assert (await viewer.get(path)).status_code == 200, path
            assert (await bearer.get(path)).status_code == 200, path
        assert (await viewer.post("/api/v1/auth/logout")).status_code == 204
    finally:
        await viewer.aclose()
        await bearer.aclose()
    assert checked == 2 * (len(writes) - 3)


async def test_users_password_and_tokens(gateway: RunningGateway, admin: Any) -> None:
    await make_user(admin, "nurse", "operator")
    nurse = await login_changed(gateway, "nurse", "Nurse-Own-Pass-2")
    try:
        wrong = await nurse.post(
            "/api/v1/auth/password",
            json={"current_password": "not-it-at-all", "new_password": "Whatever-Pass-3"},
        )
        assert wrong.status_code == 403
        # Operators cannot manage users.
        assert (await nurse.get("/api/v1/users")).status_code == 403
        # An administrator's reset: one-time again, the nurse's sessions end.
        reset = await admin.patch("/api/v1/users/nurse", json={"password": "Initial-Pass-1"})
        assert reset.status_code == 200 and reset.json()["must_change_password"] is True
        assert (await nurse.get("/api/v1/auth/me")).status_code == 401
    finally:
        await nurse.aclose()
    nurse = await login_changed(gateway, "nurse", "Nurse-Own-Pass-3")
    await nurse.aclose()
    disabled = await admin.patch("/api/v1/users/nurse", json={"disabled": True})
    assert disabled.json()["disabled"] is True
    refused = await gateway.client().post(
        "/api/v1/auth/login", json={"username": "nurse", "password": "Nurse-Own-Pass-3"}
    )
    assert refused.status_code == 401
    promoted = await admin.patch("/api/v1/users/nurse", json={"role": "viewer"})
    assert promoted.json()["role"] == "viewer"

    # Tokens: shown once, with a role and an expiry; an expired or revoked one is refused.
    made = await admin.post(
        "/api/v1/tokens", json={"name": "ops", "role": "operator", "expires_in_days": 30}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["token"].startswith("cbt_")
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) < dt.timedelta(days=31)
    listed = (await admin.get("/api/v1/tokens")).json()
    assert all(t["token"] is None for t in listed), "a token is shown only when created"
    async with gateway.client(headers={"Authorization": f"Bearer {body['token']}"}) as ops:
        assert (await ops.get("/api/v1/auth/me")).json()["role"] == "operator"
        await gateway.ctx.pool.execute(
            "UPDATE gateway_api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
            uuid.UUID(body["id"]),
        )
        await asyncio.sleep(gateway.settings.gateway_auth_cache_s + 0.5)  # the auth cache TTL
        assert (await ops.get("/api/v1/auth/me")).status_code == 401
    other = (await admin.post("/api/v1/tokens", json={"name": "x"})).json()
    assert other["role"] == "viewer" and other["expires_at"] is None
    assert (await admin.delete(f"/api/v1/tokens/{other['id']}")).status_code == 204
    async with gateway.client(headers={"Authorization": f"Bearer {other['token']}"}) as gone:
        assert (await gone.get("/api/v1/auth/me")).status_code == 401


async def test_audit_log_filters_and_csv(gateway: RunningGateway, admin: Any) -> None:
    for name in ("ROE^RICHARD", "=HYPERLINK^X"):
        made = await admin.post(
            "/api/v1/studies",
            json={"origin": "form", "patient": {"patient_name": name, "patient_id": "P-9"}},
        )
        assert made.status_code == 201, made.text
    await make_user(admin, "clerk", "operator")
    by_action = (await admin.get("/api/v1/audit", params={"action": "study_created"})).json()
    assert {e["patient_name"] for e in by_action} == {"ROE^RICHARD", "=HYPERLINK^X"}
    by_patient = (await admin.get("/api/v1/audit", params={"patient": "roe"})).json()
    assert [e["patient_name"] for e in by_patient] == ["ROE^RICHARD"]
    by_user = (await admin.get("/api/v1/audit", params={"actor": "admin"})).json()
    assert {"login", "study_created", "user_created"} <= {e["action"] for e in by_user}
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert (await admin.get("/api/v1/audit", params={"since": future})).json() == []
    past = (await admin.get("/api/v1/audit", params={"until": future, "actor": "admin"})).json()
    assert len(past) == len(by_user)
    exported = await admin.get("/api/v1/audit.csv", params={"action": "study_created"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["patient_name"] for r in rows) == ["'=HYPERLINK^X", "ROE^RICHARD"]
    assert all(r["actor"] == "admin" and r["action"] == "study_created" for r in rows)


async def test_settings_values_are_checked_field_by_field(
    gateway: RunningGateway, admin: Any, peer_bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    upserts: list[Destination] = []

    async def upsert(msg: DestinationUpsert) -> Reply:
        upserts.append(msg.destination)
        return DestinationReply(destination=msg.destination.model_copy(update={"id": "1"}))

    async def echo(msg: EchoRequest) -> Reply:
        return EchoReply(reachable=False, reason=f"cannot resolve host {msg.host!r}")

    await peer_bus.serve(DestinationUpsert, upsert)
    await peer_bus.serve(EchoRequest, echo)
    await peer_bus.nc.flush()
    good = {"name": "PACS", "ae_title": "PACS", "host": "pacs.local", "port": 104}
    cases = [
        ({"port": 0}, "body.port"),
        ({"port": 70000}, "body.port"),
        ({"ae_title": "BAD\\AE"}, "body.ae_title"),
        ({"ae_title": "A" * 17}, "body.ae_title"),
        ({"calling_ae_title": "X\\Y"}, "body.calling_ae_title"),
        ({"host": "pacs local"}, "body.host"),
        ({"kind": "dicomweb", "base_url": "ftp://pacs.local/dicom-web"}, "body.base_url"),
        ({"kind": "dicomweb", "base_url": "https://u:pw@pacs.local/dw"}, "body.base_url"),
        ({"kind": "dicomweb", "base_url": "https://pacs.local/dw?x=1"}, "body.base_url"),
        ({"kind": "dicomweb", "base_url": "https://pacs.local/dw", "auth": "digest"}, "body.auth"),
        (
            {"kind": "dicomweb", "base_url": "https://pacs.local/", "ca_file": "ca.pem"},
            "body.ca_file",
        ),
        ({"kind": "dicomweb", "ae_title": None}, "body"),
        ({"kind": "dimse", "host": None}, "body"),
        ({"kind": "dicomweb", "base_url": "https://pacs.local/dw", "auth": "basic"}, "body"),
    ]
    caplog.set_level(logging.INFO)
    for change, named in cases:
        reply = await admin.post("/api/v1/settings/destinations", json={**good, **change})
        assert reply.status_code == 422, (change, reply.text)
        error = reply.json()["error"]
        assert error["details"][0]["field"] == named, error
        assert "pattern" not in error["message"], error
    server = {"id": "ris", "host": "ris.local", "port": 70000, "called_ae": "RIS"}
    reply = await admin.post("/api/v1/settings/worklist-servers", json=server)
    assert reply.status_code == 422 and reply.json()["error"]["details"][0]["field"] == "body.port"
    assert upserts == [], "nothing reached the sender"
    # Edit + disable: the same upsert with the id and enabled=false.
    edited = await admin.post(
        "/api/v1/settings/destinations",
        json={**good, "id": str(uuid.UUID(int=7)), "enabled": False},
    )
    assert edited.status_code == 201, edited.text
    assert upserts[-1].enabled is False and upserts[-1].id == str(uuid.UUID(int=7))
    # A STOW-RS destination: the password reaches the sender, no response or log line holds it.
    password = "Never-Echoed-7f3a"
    web = {
        "name": "archive",
        "kind": "dicomweb",
        "base_url": "https://archive.local/dicom-web/",
        "auth": "basic",
        "username": "station",
        "secret": password,
        "ca_file": "/etc/cinebridge/archive-ca.pem",
    }
    saved = await admin.post("/api/v1/settings/destinations", json=web)
    assert saved.status_code == 201, saved.text
    assert (
        upserts[-1].secret == password and upserts[-1].base_url == "https://archive.local/dicom-web"
    )
    assert "secret" not in saved.json() and password not in saved.text
    assert password not in caplog.text and password not in repr(upserts[-1])
    # Echo to an unknown host: the reason, no traceback.
    echoed = await admin.post(
        "/api/v1/settings/echo", json={"ae_title": "X", "host": "no-such-host.invalid", "port": 104}
    )
    assert echoed.status_code == 200
    assert echoed.json() == {
        "reachable": False,
        "rtt_ms": None,
        "reason": "cannot resolve host 'no-such-host.invalid'",
    }
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


async def test_api_docs_are_served_by_the_gateway(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        page = await client.get("/api/v1/docs")
        assert page.status_code == 200
        assert "<script>" not in page.text, "no inline script (CSP default-src 'self')"
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
        assert len(assets) >= 3 and not [a for a in assets if a.startswith("//")]
        for asset in assets:
            reply = await client.get(asset)
            assert reply.status_code == 200 and len(reply.content) > 100, asset


async def test_first_run_password_is_printed_once_and_must_be_changed(
    nats_url: str, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = gateway_settings(nats_url, database_url, tmp_path / "media")
    settings = settings.model_copy(update={"gateway_admin_password": None})
    gw, task = await start_gateway(settings)
    try:
        printed = re.findall(r"one-time password for user 'admin': (\S+)", capsys.readouterr().err)
        assert len(printed) == 1, "printed once"
        admin = await gw.login("admin", printed[0])
        assert (await admin.get("/api/v1/auth/me")).json()["must_change_password"] is True
        changed = await admin.post(
            "/api/v1/auth/password",
            json={"current_password": printed[0], "new_password": ADMIN_PASSWORD},
        )
        assert changed.status_code == 204
        assert (await admin.get("/api/v1/auth/me")).json()["must_change_password"] is False
        await admin.aclose()
    finally:
        gw.ctx.stop.set()
        await asyncio.wait_for(task, 15)
    gw, task = await start_gateway(settings)  # a second start prints nothing
    try:
        assert "one-time password" not in capsys.readouterr().err
    finally:
        gw.ctx.stop.set()
        await asyncio.wait_for(task, 15)
