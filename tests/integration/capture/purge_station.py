"""The station of the local purge policy's integration tests (docs/purge.md), on real
processes: capture (a room, the study catalog, the planner), the converter (its DICOM files),
the sender (Storage Commitment with a pynetdicom archive, PS3.4 Annex J), NATS and PostgreSQL,
and the gateway (the audit, the hold and ledger routes). Studies are captured, saved and
converted as a Save does. The converter and the gateway run in the test's process; the fault
tests run them as processes of their own (`ServiceProcess`) to SIGKILL them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cinebridge_capture.purge import PurgeDeps, PurgeRun, purge_once
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats
from cinebridge_common.messages import (
    CommittedStudiesReply,
    CommittedStudiesRequest,
    ConvertMedia,
    SetRoomStudy,
    SetRoomStudyReply,
    StudySaved,
)
from cinebridge_common.messages.purge import MediaStoreLow
from cinebridge_common.store import MediaStore
from cinebridge_converter import app as converter_app
from cinebridge_converter.settings import ConverterSettings
from cinebridge_gateway import app as gateway_app
from cinebridge_gateway.settings import GatewaySettings
from cinebridge_testkit import stop_process, wait_for
from cinebridge_testkit.browser import ADMIN_PASSWORD, ui_page
from cinebridge_testkit.sender_harness import SenderHarness
from cinebridge_testkit.storage_peers import CommitmentScp
from playwright.async_api import Page

SMALL = "lavfi:testsrc2=size=320x240:rate=10"
ROOM = "or1"


@dataclass
class Study:
    study_id: str
    media_rel: list[str] = field(default_factory=list)

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(self.study_id)


@dataclass
class Station:
    client: Any
    pool: asyncpg.Pool
    store: MediaStore
    sender: SenderHarness
    archive: CommitmentScp
    capture: Any
    converter_settings: ConverterSettings
    admin: httpx.AsyncClient
    gateway: GatewayRun
    tmp: Path
    converter: asyncio.Task[None] | None = None
    low_events: list[MediaStoreLow] = field(default_factory=list)

    @property
    def bus(self) -> Bus:
        bus: Bus = self.client.bus
        return bus

    def deps(self) -> PurgeDeps:
        # One candidate per page: a committed study behind an uncommitted one is still found.
        return PurgeDeps(self.pool, self.store, self.bus, batch=1)

    async def ledger(self, study: Study) -> dict[str, Any]:
        reply = await self.admin.get(f"/api/v1/studies/{study.study_id}/ledger")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    async def ops(self) -> dict[str, Any]:
        reply = await self.admin.get("/api/v1/ops/purge")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    @contextlib.asynccontextmanager
    async def browser(self) -> AsyncIterator[Page]:
        """The web UI in headless Chromium (Debian's), logged in as the administrator."""
        async with ui_page(str(self.admin.base_url).rstrip("/")) as page:
            yield page

    def start_converter(self) -> None:
        self.converter = asyncio.create_task(converter_app.run(self.converter_settings))

    async def stop_converter(self) -> None:
        if self.converter is not None:
            self.converter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.converter, 30)
            self.converter = None

    async def study(self, *, send: bool = True, snapshots: int = 1) -> Study:
        """A study captured, saved and converted as the gateway's Save does; sent when `send`."""
        left = await self.bus.request(SetRoomStudy(room=ROOM, study_id=None), SetRoomStudyReply)
        assert left.ok, left.error
        study: Study | None = None
        for _ in range(snapshots):
            kw = {"study_id": study.study_id} if study else {}
            shot = await self.client.command(ROOM, "endo", "snapshot", **kw)
            assert shot.ok, shot.error
            study = study or Study(str(shot.study_id))
            job = ConvertMedia(
                job_key=f"convert:{shot.media_id}",
                media_id=str(shot.media_id),
                study_id=study.study_id,
                auto_send=send,
            )
            await self.bus.publish(job, msg_id=job.job_key)
        assert study is not None
        saved = StudySaved(study_id=study.study_id, by="nurse")
        await self.bus.publish(saved, msg_id=f"saved:{study.study_id}")
        study.media_rel = [
            r["rel_path"]
            for r in await self.pool.fetch(
                "SELECT rel_path FROM media WHERE study_id = $1", study.uuid
            )
        ]
        await wait_for(lambda: self._converted(study, snapshots), 120, 0.2, what="conversion")
        return study

    async def _converted(self, study: Study, n: int) -> bool:
        row = await self.pool.fetchrow(
            """SELECT s.state, count(*) FILTER (WHERE m.state = 'converted') AS done
               FROM studies s JOIN media m ON m.study_id = s.id WHERE s.id = $1
               GROUP BY s.state""",
            study.uuid,
        )
        return row is not None and row["state"] == "saved" and row["done"] == n

    async def kept_and_committed(self, retention_days: float = 0) -> tuple[Study, Study]:
        """A study never sent (kept: nothing of it may be touched) and one of two snapshots
        committed, the room's current study; the policy on with this retention."""
        kept = await self.study(send=False)
        study = await self.study(snapshots=2)
        await self.committed(study)
        await self.policy(purge_enabled=True, purge_retention_days=retention_days)
        return kept, study

    async def committed(self, *studies: Study) -> None:
        """Wait until the sender lists every one as committed (asked as the planner asks)."""
        ids = [s.study_id for s in studies]

        async def listed() -> bool:
            request = CommittedStudiesRequest(study_ids=ids)
            try:
                reply = await self.bus.request(request, CommittedStudiesReply, 5)
            except Exception:
                return False
            return reply.ok and set(reply.study_ids) == set(ids)

        await wait_for(listed, 180, 0.3, what=f"studies {ids} committed")

    async def policy(self, **values: Any) -> None:
        """The station settings the gateway's settings page writes."""
        for key, value in values.items():
            await self.pool.execute(
                """INSERT INTO station_settings (key, value) VALUES ($1, $2)
                   ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
                key,
                value,
            )

    async def run(self) -> PurgeRun:
        """One planner run of this test's own (the capture process may hold the lock)."""

        async def locked() -> PurgeRun | None:
            run = await purge_once(self.deps())
            return run if run.locked else None

        return await wait_for(locked, 60, 0.2, what="a planner run holding the lock")

    async def purged(self, study: Study) -> bool:
        at = await self.pool.fetchval("SELECT purged_at FROM studies WHERE id = $1", study.uuid)
        return at is not None

    async def dicom_files(self, study: Study) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT rel_path FROM instances WHERE study_id = $1", study.uuid
        )
        return [r["rel_path"] for r in rows]

    async def intact(self, study: Study) -> None:
        """Every file of the study on disk, nothing of it marked purged."""
        assert not await self.purged(study)
        files = study.media_rel + await self.dicom_files(study)
        assert len(files) >= 2
        assert all(self.store.resolve(rel).is_file() for rel in files), files
        marked = await self.pool.fetchval(
            """SELECT (SELECT count(*) FROM media WHERE study_id = $1 AND purged_at IS NOT NULL)
                    + (SELECT count(*) FROM instances WHERE study_id = $1
                       AND purged_at IS NOT NULL)""",
            study.uuid,
        )
        assert marked == 0

    async def gone(self, study: Study, reason: str) -> None:
        """Every file of the study removed, rows marked, announced and audited once."""
        await wait_for(lambda: self.purged(study), 120, 0.2, what=f"study {study.study_id} purged")
        dicom = await self.dicom_files(study)
        assert dicom and study.media_rel
        assert not any(self.store.resolve(rel).exists() for rel in study.media_rel + dicom)
        left = await self.pool.fetchval(
            """SELECT (SELECT count(*) FROM media WHERE study_id = $1 AND purged_at IS NULL)
                    + (SELECT count(*) FROM instances WHERE study_id = $1 AND purged_at IS NULL)""",
            study.uuid,
        )
        assert left == 0

        async def audited() -> asyncpg.Record | None:
            rows = await self.pool.fetch(
                """SELECT actor, detail FROM gateway_audit_log
                   WHERE study_id = $1 AND action = 'study_purged'""",
                study.uuid,
            )
            return rows[0] if len(rows) == 1 else None

        row = await wait_for(audited, 60, 0.2, what="the purge audited")
        assert row["actor"] == "purge-policy"
        detail = row["detail"]
        assert detail["reason"] == reason
        assert detail["media_files"] == len(study.media_rel)
        assert detail["instances"] == len(dicom)
        assert detail["media_bytes"] > 0 and detail["instance_bytes"] > 0


@dataclass
class GatewayRun:
    """The gateway (app.run) on a free port: the audit consumer, the hold and ledger routes."""

    settings: GatewaySettings
    task: asyncio.Task[None] | None = None
    url: str = ""

    @classmethod
    def of(cls, nats: EmbeddedNats, database_url: str, store: MediaStore) -> GatewayRun:
        return cls(
            GatewaySettings(
                nats_url=nats.url,
                database_url=database_url,
                media_root=store.root,
                gateway_port=0,
                gateway_admin_password=ADMIN_PASSWORD,
                instance_id=f"gw-purge-{uuid.uuid4().hex[:6]}",
            )
        )

    async def start(self) -> str:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(
            gateway_app.run(self.settings, on_started=lambda _c, url: started.set_result(url))
        )
        waiters: set[asyncio.Future[Any]] = {self.task, started}
        await asyncio.wait(waiters, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()
        self.url = await asyncio.wait_for(started, 1)
        return self.url

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, 15)
            self.task = None


@contextlib.asynccontextmanager
async def logged_in(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as admin:
        reply = await admin.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert reply.status_code == 200, reply.text
        admin.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
        yield admin


@contextlib.asynccontextmanager
async def open_station(
    capture_factory: Any,
    client: Any,
    nats_server: EmbeddedNats,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
) -> AsyncIterator[Station]:
    """The station of the purge tests (the `station` fixture of conftest.py). Whatever was
    started is stopped, also when the setup itself fails."""
    store = MediaStore(tmp_path / "media")
    async with contextlib.AsyncExitStack() as stack:
        archive = CommitmentScp()
        archive.start()
        stack.callback(archive.stop)
        sender = SenderHarness(nats_server, database_url, store, tmp_path)
        destination = {
            "name": "archive",
            "ae_title": archive.ae_title,
            "host": "127.0.0.1",
            "port": archive.port,
            "commitment_required": True,
            # An N-EVENT-REPORT that does not come is asked for again this soon (PS3.4 J.3.3).
            "commitment_timeout_s": 15,
        }
        sender.start([destination], CB_SENDER_COMMITMENT_SAME_ASSOCIATION_WAIT_S="5")
        stack.callback(sender.stop)
        # Secondary Capture: the SOP class the scripted archive stores (statement's profile).
        await db_pool.execute(
            "INSERT INTO station_settings (key, value) VALUES ('iod', '\"videostation\"')"
        )
        capture = capture_factory(
            ROOM, [{"name": "endo", "url": SMALL}], CB_CAPTURE_PURGE_INTERVAL_S="3600"
        )
        converter_settings = ConverterSettings(
            nats_url=nats_server.url,
            database_url=database_url,
            media_root=tmp_path / "media",
            instance_id=f"test-converter-{uuid.uuid4().hex[:6]}",
            converter_ack_wait_s=10.0,
        )
        await client.bus.js.purge_stream("CB_JOBS", subject="cb.job.converter.>")
        gateway = GatewayRun.of(nats_server, database_url, store)
        stack.push_async_callback(gateway.stop)
        admin = await stack.enter_async_context(logged_in(await gateway.start()))
        st = Station(
            client,
            db_pool,
            store,
            sender,
            archive,
            capture,
            converter_settings,
            admin,
            gateway,
            tmp_path,
        )
        st.start_converter()
        stack.push_async_callback(st.stop_converter)

        async def on_low(msg: Any) -> None:
            st.low_events.append(MediaStoreLow.from_bytes(msg.data))

        await client.bus.subscribe_events(MediaStoreLow.subject, on_low)
        # A process coming up (imports, database, bus, first frames): as generous a bound as
        # the sender's below, not a measure of how fast it starts.
        await client.wait_signal(capture, timeout_s=120)
        await sender.answering()
        yield st


@dataclass
class ServiceProcess:
    """`python -m cinebridge_<service>` on the station's NATS, database and media store, to be
    SIGKILLed where a test needs it (its output goes to `<tmp>/<name>.log`)."""

    service: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def of(cls, station: Station, service: str, **env: str) -> ServiceProcess:
        settings = station.converter_settings
        base = {
            "CB_NATS_URL": settings.nats_url,
            "CB_DATABASE_URL": settings.database_url.get_secret_value(),
            "CB_MEDIA_ROOT": str(station.store.root),
            "CB_INSTANCE_ID": f"{service}-kill-{uuid.uuid4().hex[:6]}",
            "CB_HEALTH_PORT": "0",
            "CB_LOG_LEVEL": "INFO",
        }
        return cls(service, {**base, **env}, station.tmp / f"{service}.log")

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"cinebridge_{self.service}"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
            )

    def kill(self) -> None:
        """SIGKILL: no handler, no clean-up, no ack; its database sessions end."""
        assert self.proc is not None and self.proc.poll() is None, self.log()
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
