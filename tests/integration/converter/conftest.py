"""A running converter (app.run) on the session NATS/PostgreSQL, and helpers to feed it media."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import subprocess
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.db import create_pool
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import ConvertMedia
from cinebridge_common.store import MediaStore
from cinebridge_converter import app
from cinebridge_converter.settings import ConverterSettings
from cinebridge_testkit import require_tool, stop_process, wait_for_sync
from nats.aio.msg import Msg
from pydicom import dcmread


@dataclass
class RunningConverter:
    pool: asyncpg.Pool
    bus: Bus
    store: MediaStore
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def record_events(self) -> None:
        """Keep every event from now on in `events`, by subject."""

        async def on_event(msg: Msg) -> None:
            self.events.setdefault(msg.subject, []).append(json.loads(msg.data))

        await self.bus.subscribe_events("cb.evt.>", on_event)

    async def add_study(self, **values: Any) -> str:
        study_id = str(uuid.uuid4())
        row = {
            "study_instance_uid": f"2.25.{uuid.uuid4().int}",
            "origin": "unscheduled",
            "patient_name": "Doe^Jane",
            "patient_id": "P-1",
            **values,
        }
        columns = ", ".join(["id", *row])
        marks = ", ".join(f"${i}" for i in range(1, len(row) + 2))
        await self.pool.execute(
            f"INSERT INTO studies ({columns}) VALUES ({marks})", uuid.UUID(study_id), *row.values()
        )
        return study_id

    async def add_media(self, study_id: str, source: Path, kind: str, name: str = "tower-1") -> str:
        ext = source.suffix.lstrip(".").lower() or "bin"
        rel = self.store.new_relative("media", ext)
        sha = self.store.write_bytes(rel, source.read_bytes())
        media_id = str(uuid.uuid4())
        await self.pool.execute(
            """INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime)
               VALUES ($1, $2, 'room1', $3, $4, $5, $6, $7, 'application/octet-stream')""",
            uuid.UUID(media_id),
            uuid.UUID(study_id),
            name,
            kind,
            rel,
            source.stat().st_size,
            sha,
        )
        return media_id

    async def submit(
        self, media_id: str, study_id: str, *, msg_id: str | None = None, **options: Any
    ) -> ConvertMedia:
        job = ConvertMedia(
            job_key=f"{media_id}:{json.dumps(options, sort_keys=True)}",
            media_id=media_id,
            study_id=study_id,
            **options,
        )
        await self.bus.publish(job, msg_id=msg_id or job.job_key)
        return job

    async def outcome(self, media_id: str) -> dict[str, Any]:
        """The converter's own record of the item's job: `state` is `converted` or `failed`
        (with the reason in `error`), `open` while a job is in hand, `none` before any. The
        catalog's `media.state` follows from the events, in capture, which these tests do not run.
        """
        row = await self.pool.fetchrow(
            "SELECT outcome, last_error FROM converter_jobs WHERE media_id = $1",
            uuid.UUID(media_id),
        )
        if row is None:
            return {"state": "none", "error": None}
        return {"state": row["outcome"] or "open", "error": row["last_error"]}

    async def instances(self, media_id: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM instances WHERE media_id = $1 ORDER BY part", uuid.UUID(media_id)
        )


@pytest.fixture
def make_settings(nats_url: str, database_url: str, tmp_path: Path) -> Any:
    def make(**extra: Any) -> ConverterSettings:
        values: dict[str, Any] = {
            "nats_url": nats_url,
            "database_url": database_url,
            "media_root": tmp_path / "media",
            "instance_id": f"test-{uuid.uuid4().hex[:6]}",
            "converter_x264_preset": "ultrafast",
            "converter_ack_wait_s": 10.0,
            **extra,
        }
        return ConverterSettings(**values)

    return make


@pytest.fixture
async def client(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[RunningConverter]:
    """Database, bus and media store as the converter sees them, and every event it emits."""
    pool = await create_pool(database_url)
    bus = await Bus.connect(nats_url, "converter-test")
    await bus.ensure_streams()
    # The session's JetStream keeps the work queue across tests: start each test empty.
    await _purge_jobs(bus)
    running = RunningConverter(pool, bus, MediaStore(tmp_path / "media"))
    await running.record_events()
    try:
        yield running
    finally:
        await bus.close()
        await pool.close()


@pytest.fixture
async def converter(
    client: RunningConverter, make_settings: Any
) -> AsyncIterator[RunningConverter]:
    """A converter service (app.run) working for `client`."""
    task = asyncio.create_task(app.run(make_settings()))
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 15)


async def _purge_jobs(bus: Bus) -> None:
    with contextlib.suppress(Exception):
        await bus.js.delete_consumer("CB_JOBS", "converter-convert")
    with contextlib.suppress(Exception):
        await bus.js.purge_stream("CB_JOBS", subject="cb.job.converter.>")


@dataclass
class Orthanc:
    """An Orthanc with its own storage, DICOM and REST on loopback ports."""

    proc: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as r:
            body: bytes = r.read()
            return body

    def store_and_fetch(self, path: Path) -> bytes:
        """C-STORE `path` with DCMTK storescu proposing exactly its transfer syntax (no
        conversion), then the data set of the file Orthanc serves back (after its own meta)."""
        ts = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        sent = subprocess.run(
            [
                require_tool("storescu"),
                "-R",
                PROPOSE[ts],
                "-aec",
                "ORTHANC",
                "127.0.0.1",
                str(self.dicom_port),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"TCP_NODELAY": "1"},
        )
        assert sent.returncode == 0, sent.stderr
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/tools/lookup", data=uid.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            [hit] = json.loads(response.read())
        return self.data_set(self.get(f"/instances/{hit['ID']}/file"))

    @staticmethod
    def data_set(part10: bytes) -> bytes:
        """The data set after the File Meta group (Orthanc writes its own meta information)."""
        # Group 0002 is explicit VR LE: walk its elements to find where the data set starts.
        pos = 132
        while part10[pos : pos + 2] == b"\x02\x00":
            vr = part10[pos + 4 : pos + 6]
            if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
                pos += 12 + int.from_bytes(part10[pos + 8 : pos + 12], "little")
            else:
                pos += 8 + int.from_bytes(part10[pos + 6 : pos + 8], "little")
        return part10[pos:]


#: storescu's option proposing exactly the file's transfer syntax (no conversion).
PROPOSE = {
    "1.2.840.10008.1.2.4.102": "-xn",
    "1.2.840.10008.1.2.4.103": "-xl",
    "1.2.840.10008.1.2.4.100": "-xm",
    "1.2.840.10008.1.2.4.101": "-xh",
    "1.2.840.10008.1.2.4.50": "-xy",
}


@pytest.fixture
def orthanc(tmp_path: Path) -> Any:
    binary = require_tool("Orthanc")
    dicom_port, http_port = free_port(), free_port()
    work = tmp_path / "orthanc"
    work.mkdir()
    config = {
        "Name": "converter-test",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomCheckCalledAet": False,
        "StorageCompression": False,
        "OverwriteInstances": True,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "ab")
    proc = subprocess.Popen(
        [binary, str(work / "orthanc.json")], stdout=log, stderr=log, env={"TCP_NODELAY": "1"}
    )
    peer = Orthanc(proc, dicom_port, http_port)

    def up() -> bool:
        try:
            return bool(peer.get("/system"))
        except OSError:
            return False

    try:
        wait_for_sync(up, 30, 0.2, what="Orthanc REST")
        yield peer
    finally:
        stop_process(proc)
        log.close()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
