"""A service started alone on a new station, as its production image runs it (its own
migrations only): another owner's read model it reads does not exist yet, and it says whose
start it waits for — health detail, and 503 from the gateway's pages — instead of failing; once
that owner has run its migrations, the same requests work (docs/architecture.md)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cinebridge_common.db import (
    available_migrations,
    create_pool,
    migrate,
    repeatable_migrations,
)
from cinebridge_common.embedded import EmbeddedPostgres, free_port
from cinebridge_testkit import stop_process, wait_for
from cinebridge_testkit.databases import create_database, drop_database
from cinebridge_testkit.images import image_command, image_site

pytestmark = pytest.mark.integration

PASSWORD = "alone-Password-1"
STUDY = "5f6a3c1e-0c61-4a57-9a51-2f0f3b7f1a01"
#: Pages that read other owners' read models: the local search (the catalog, the converter's
#: and the sender's read models, the SCP's index), a study and its deliveries.
PAGES = ("/api/v1/studies", f"/api/v1/studies/{STUDY}", f"/api/v1/studies/{STUDY}/deliveries")
#: Pages made to work while parts of the station are away: they answer without those models.
PARTIAL_PAGES = ("/api/v1/rooms", "/api/v1/ops/summary", "/api/v1/ops/purge")
CONVERTER_WAIT = (
    "waiting for converter to start (its read model converted_instances does not exist yet)"
)


@pytest.fixture
async def empty_station(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A database no service has migrated yet."""
    name = await create_database(postgres, "alone")
    yield postgres.dsn_for(name)
    await drop_database(postgres, name)


@contextmanager
def image_process(
    tmp_path: Path, distribution: str, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    site = image_site(tmp_path, distribution)
    log_path = tmp_path / f"{distribution}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            image_command(site, distribution.replace("-", "_")),
            env={**os.environ, **env},
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
    try:
        yield proc, log_path
    finally:
        stop_process(proc, 20)


def _base_env(nats_url: str, database_url: str, media: Path, health_port: int) -> dict[str, str]:
    media.mkdir(exist_ok=True)
    return {
        "CB_NATS_URL": nats_url,
        "CB_DATABASE_URL": database_url,
        "CB_MEDIA_ROOT": str(media),
        "CB_HEALTH_HOST": "127.0.0.1",
        "CB_HEALTH_PORT": str(health_port),
        "CB_INSTANCE_ID": "alone",
        "CB_LOG_LEVEL": "INFO",
    }


async def _health(
    proc: subprocess.Popen[bytes], log_path: Path, port: int, until: Any
) -> dict[str, Any]:
    """The service's /healthz body once `until(body)` holds (the process must stay up)."""

    async def check() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise AssertionError(f"the service exited:\n{log_path.read_text()[-4000:]}")
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                body: dict[str, Any] = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
        except httpx.HTTPError:
            return None
        return body if until(body) else None

    return await wait_for(check, 120, 0.25, "the service's health")


async def _applied(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations")
    finally:
        await conn.close()
    return {r["name"] for r in rows}


def _image_files(owner: str) -> set[str]:
    """The numbered migrations an image of `owner` installs: the common ones and its own."""
    return {name for _, name, _ in available_migrations({"common", owner})}


async def _owners_start(database_url: str, owners: set[str] | None = None) -> None:
    """What the other owners' first start does to the schema: their migrations (every owner's
    when `owners` is None)."""
    pool = await create_pool(database_url)
    try:
        await migrate(pool, available_migrations(owners), repeatable_migrations(owners))
    finally:
        await pool.close()


async def _catalog_study(database_url: str) -> None:
    """A study in the catalog's table (common migration 002), as a capture run would leave."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO studies (id, study_instance_uid, origin) VALUES ($1, '1.2.3.4', 'form')",
            uuid.UUID(STUDY),
        )
    finally:
        await conn.close()


def _waiting(body: dict[str, Any]) -> str:
    return str(body.get("detail", {}).get("read_models", ""))


async def test_gateway_alone_waits_for_the_owners_of_its_read_models(
    tmp_path: Path, nats_url: str, empty_station: str
) -> None:
    health_port, http_port = free_port(), free_port()
    env = _base_env(nats_url, empty_station, tmp_path / "media", health_port)
    env |= {
        "CB_GATEWAY_HOST": "127.0.0.1",
        "CB_GATEWAY_PORT": str(http_port),
        "CB_GATEWAY_ADMIN_PASSWORD": PASSWORD,
    }
    with image_process(tmp_path, "cinebridge-gateway", env) as (proc, log_path):
        body = await _health(proc, log_path, health_port, lambda b: b["ready"] and _waiting(b))
        # Only the common migrations and the gateway's own ran: the image's schema.
        assert await _applied(empty_station) == _image_files("gateway")
        await _catalog_study(empty_station)
        waiting = _waiting(body)
        for owner, view in [
            ("capture", "capture_served_rooms"),
            ("converter", "converted_instances"),
            ("sender", "delivery_states"),
            ("scp", "received_study_index"),
            ("worklist", "mpps_step_states"),
        ]:
            assert f"waiting for {owner} to start (its read model" in waiting, waiting
            assert view in waiting, waiting
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as api:
            login = await api.post(
                "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            for path in PAGES:
                reply = await api.get(path)
                assert reply.status_code == 503, (path, reply.text)
                error = reply.json()["error"]
                assert error["code"] == "read_model_missing", (path, error)
                assert error["message"].startswith("waiting for "), (path, error)
                assert "does not exist yet" in error["message"], (path, error)
            for path in PARTIAL_PAGES:
                reply = await api.get(path)
                assert reply.status_code in (200, 503), (path, reply.text)
            # The room list is complete without capture's view: no room was ever served.
            reply = await api.get("/api/v1/rooms")
            assert (reply.status_code, reply.json()) == (200, []), reply.text

            await _owners_start(empty_station)
            await _health(proc, log_path, health_port, lambda b: b["ready"] and not _waiting(b))
            for path in PAGES + PARTIAL_PAGES[:2]:  # the purge page asks the sender, not running
                reply = await api.get(path)
                assert reply.status_code == 200, (path, reply.text)
    assert "Traceback" not in log_path.read_text()


async def test_capture_alone_waits_for_the_converter_before_its_purge(
    tmp_path: Path, nats_url: str, empty_station: str
) -> None:
    health_port = free_port()
    env = _base_env(nats_url, empty_station, tmp_path / "media", health_port)
    env |= {
        "CB_CAPTURE_ROOM": "alone",
        "CB_CAPTURE_SOURCES": json.dumps(
            [{"name": "pattern", "url": "lavfi:testsrc2=size=160x120:rate=5"}]
        ),
        "CB_CAPTURE_PREVIEW_HOST": "127.0.0.1",
        "CB_CAPTURE_PREVIEW_PORT": str(free_port()),
        "CB_CAPTURE_PURGE_INTERVAL_S": "0.5",
    }
    with image_process(tmp_path, "cinebridge-capture", env) as (proc, log_path):
        body = await _health(proc, log_path, health_port, lambda b: b["ready"] and _waiting(b))
        assert await _applied(empty_station) == _image_files("capture")
        assert _waiting(body) == CONVERTER_WAIT
        # The settings' table comes with the gateway: its first start, then purge enabled on its
        # settings page and a saved, converted study. The planner would count the study's
        # instances in the converter's read model, and waits instead.
        await _owners_start(empty_station, {"common", "gateway"})
        await _purgeable_study(empty_station)

        async def planner_waits() -> str | None:
            log = log_path.read_text()
            return log if "purge planner waiting" in log else None

        log = await wait_for(planner_waits, 120, 0.25, "the purge planner's wait")
        assert CONVERTER_WAIT in log, log[-4000:]
        assert "periodic task failed" not in log, log[-4000:]
        await _owners_start(empty_station)
        await _health(proc, log_path, health_port, lambda b: b["ready"] and not _waiting(b))
    assert "Traceback" not in log_path.read_text()


async def _purgeable_study(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO station_settings (key, value) VALUES ('purge_enabled', 'true')"
        )
        await conn.execute(
            """INSERT INTO studies (id, study_instance_uid, origin, state)
               VALUES ($1, '1.2.3.5', 'form', 'saved')""",
            uuid.UUID(STUDY),
        )
        await conn.execute(
            """INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime,
                                  state)
               VALUES ($1, $2, 'alone', 'pattern', 'snapshot', 'media/x.jpg', 1, '', 'image/jpeg',
                       'converted')""",
            uuid.uuid4(),
            uuid.UUID(STUDY),
        )
    finally:
        await conn.close()
