"""`cinebridge send` through a running gateway and sender to DCMTK storescp; `cinebridge backup`
taken while deliveries are in flight to a storescp that is down, restored into an empty station
(a new database, an empty media store, a new NATS), where the interrupted deliveries resume and
complete. Real gateway, real sender process, real storescp, real pg_dump/pg_restore."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cinebridge_cli.__main__ import main
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from cinebridge_common.store import MediaStore
from cinebridge_testkit import wait_for
from cinebridge_testkit.databases import create_database
from cinebridge_testkit.instances import dataset_bytes_of, make_instance
from cinebridge_testkit.sender_harness import SenderHarness, delivery_states, tool
from cinebridge_testkit.storage_peers import DcmtkStorescp

from .conftest import RunningGateway, gateway_settings, start_gateway

pytestmark = pytest.mark.integration


@dataclass
class Station:
    """One station: its NATS, database, media store, gateway and sender, and a storescp."""

    nats: EmbeddedNats
    database_url: str
    media: Path
    gateway: RunningGateway
    task: asyncio.Task[None]
    sender: SenderHarness
    storescp: DcmtkStorescp
    admin: httpx.AsyncClient

    async def stop(self) -> None:
        await self.admin.aclose()
        self.gateway.ctx.stop.set()
        await asyncio.wait_for(self.task, 30)
        await asyncio.to_thread(self.sender.stop)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[DcmtkStorescp]:
    peer = DcmtkStorescp(tool("storescp"), tmp_path / "storescp" / "out", free_port())
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture
async def station(
    own_nats: EmbeddedNats, database_url: str, storescp: DcmtkStorescp, tmp_path: Path
) -> AsyncIterator[Station]:
    media = tmp_path / "media"
    gateway, task = await start_gateway(gateway_settings(own_nats.url, database_url, media))
    sender = SenderHarness(own_nats, database_url, MediaStore(media), tmp_path)
    sender.start(
        destinations=[
            {
                "name": "PACS",
                "ae_title": storescp.ae_title,
                "host": "127.0.0.1",
                "port": storescp.port,
                "auto_send": False,
            }
        ]
    )
    admin = await gateway.login()
    st = Station(own_nats, database_url, media, gateway, task, sender, storescp, admin)
    try:
        await until_destination_listed(admin)
        yield st
    finally:
        if not task.done():
            await st.stop()
        sender.stop()


async def until_destination_listed(admin: httpx.AsyncClient) -> None:
    """Until the sender answers the destination list (it seeds PACS at its start)."""

    async def listed() -> bool:
        reply = await admin.get("/api/v1/settings/destinations")
        return reply.status_code == 200 and any(d["name"] == "PACS" for d in reply.json())

    await wait_for(listed, 60, 0.2, what="the sender's destination list with PACS")


async def new_token(admin: httpx.AsyncClient, role: str) -> str:
    reply = await admin.post("/api/v1/tokens", json={"name": f"cli-{role}", "role": role})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["token"])


async def cli(*argv: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await asyncio.to_thread(main, list(argv), out=lines.append)
    return code, "\n".join(lines).splitlines()


async def send(url: str, token: str, files: Iterable[Path], wait_s: int) -> tuple[int, list[str]]:
    """`cinebridge send FILES --to PACS --wait WAIT_S` against the gateway at `url`."""
    return await cli(
        "--url",
        url,
        "--token",
        token,
        "send",
        *map(str, files),
        "--to",
        "PACS",
        "--wait",
        str(wait_s),
    )


def dicom_files(folder: Path, n: int, first_seed: int = 0) -> dict[str, Path]:
    """`n` Part 10 files (JPEG stills of one study): SOP Instance UID -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    study = "2.25." + str(uuid.uuid4().int)
    made = {}
    for seed in range(first_seed, first_seed + n):
        path = folder / f"still{seed}.dcm"
        ds = make_instance(path, kind="jpeg", study_uid=study, seed=seed)
        made[str(ds.SOPInstanceUID)] = path
    return made


async def test_send_files_to_storescp(station: Station, tmp_path: Path) -> None:
    url = station.gateway.url
    operator = await new_token(station.admin, "operator")
    files = dicom_files(tmp_path / "in", 2)
    big = make_instance(tmp_path / "in" / "big.dcm", kind="raw", payload_bytes=5_000_000)
    files[str(big.SOPInstanceUID)] = tmp_path / "in" / "big.dcm"  # several chunks each way
    code, out = await send(url, operator, files.values(), wait_s=120)
    assert code == 0, out
    assert out[-1] == "PACS: 3 of 3 files accepted; 3 sent"
    received = station.storescp.received()
    assert set(received) == set(files)
    for uid, path in files.items():  # the dataset arrives as it was handed in
        assert dataset_bytes_of(received[uid].read_bytes()) == dataset_bytes_of(path.read_bytes())

    # Not Part 10: refused by the gateway with the reason, the rest is still sent; exit 1.
    junk = tmp_path / "in" / "notes.txt"
    junk.write_text("not DICOM")
    more = dicom_files(tmp_path / "more", 1, first_seed=10)
    code, out = await cli(
        "--url",
        url,
        "--token",
        operator,
        "--json",
        "send",
        str(junk),
        *map(str, more.values()),
        "--to",
        "PACS",
        "--wait",
        "120",
    )
    assert code == 1, out
    report = json.loads("\n".join(out))
    assert [f["state"] for f in report["files"]] == ["sent"]
    assert report["refused"][0]["file"] == str(junk)
    assert "PS3.10" in report["refused"][0]["error"]
    assert set(station.storescp.received()) == set(files) | set(more)

    viewer = await new_token(station.admin, "viewer")
    code, _ = await cli("--url", url, "--token", viewer, "send", str(junk), "--to", "PACS")
    assert code == 4
    code, _ = await cli("--url", url, "--token", operator, "send", str(junk), "--to", "NOWHERE")
    assert code == 5
    code, _ = await cli("--url", url, "--token", operator, "send", "/no/such/file", "--to", "PACS")
    assert code == 2

    audit = (await station.admin.get("/api/v1/audit", params={"action": "instance_sent"})).json()
    assert sorted(a["target"] for a in audit) == sorted([*files, *more])
    assert all(a["actor"] == "token:cli-operator" for a in audit)


async def _states(url: str) -> dict[str, int]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        return await delivery_states(pool)
    finally:
        await pool.close()


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_backup_during_deliveries_restores_into_an_empty_station(
    station: Station, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    url = station.gateway.url
    token = await new_token(station.admin, "operator")
    delivered = dicom_files(tmp_path / "first", 2)
    code, out = await send(url, token, delivered.values(), wait_s=120)
    assert code == 0, out
    await _fetch(
        station.database_url,
        """INSERT INTO station_settings (key, value)
        VALUES ('station_name', '"Endoscopy 3"') ON CONFLICT (key) DO UPDATE SET value =
        EXCLUDED.value""",
    )

    # The archive goes down: the next files stay in flight, retried by the running sender.
    station.storescp.stop()
    interrupted = dicom_files(tmp_path / "second", 3, first_seed=20)
    code, out = await send(url, token, interrupted.values(), wait_s=0)
    assert code == 1, out  # not delivered yet

    async def retrying() -> bool:
        states = await _states(station.database_url)
        return (
            states.get("sent") == 2
            and sum(states.values()) == 5
            and not (set(states) - {"sent", "queued", "sending", "failed-retrying"})
            and states.get("failed-retrying", 0) > 0
        )

    await wait_for(retrying, 120, 0.2, what="the new deliveries failing and retrying")

    backup_dir = tmp_path / "backup"
    code, out = await cli(
        "--json",
        "backup",
        str(backup_dir),
        "--database-url",
        station.database_url,
        "--media-root",
        str(station.media),
    )
    assert code == 0, out
    made = json.loads("\n".join(out))
    assert made["files"] >= 5 and made["referenced_files"] == 5
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["tables"]["public.outgoing_instances"] == 5
    assert manifest["station_settings"]["station_name"] == "Endoscopy 3"

    # A station that is not empty is refused, and left as it was.
    code, out = await cli(
        "restore",
        str(backup_dir),
        "--database-url",
        station.database_url,
        "--media-root",
        str(tmp_path / "unused"),
    )
    assert code == 6 and not (tmp_path / "unused").exists()

    before = {str(r["id"]) for r in await _fetch(station.database_url, "SELECT id FROM deliveries")}
    await station.stop()  # the station is lost; a new one is built from the backup

    restored_url = postgres.dsn_for(await create_database(postgres, "restored"))
    restored_media = tmp_path / "restored-media"
    code, out = await cli(
        "restore",
        str(backup_dir),
        "--database-url",
        restored_url,
        "--media-root",
        str(restored_media),
    )
    assert code == 0, out
    assert "verified" in out[-1]

    # Every study, instance, delivery state and setting, and every file with its checksum.
    rows = await _fetch(restored_url, "SELECT id, state FROM deliveries")
    assert {str(r["id"]) for r in rows} == before
    instances = await _fetch(
        restored_url, "SELECT sop_instance_uid, rel_path, sha256 FROM outgoing_instances"
    )
    assert {r["sop_instance_uid"] for r in instances} == set(delivered) | set(interrupted)
    for row in instances:
        data = (restored_media / row["rel_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    settings = await _fetch(
        restored_url, "SELECT value::text AS v FROM station_settings WHERE key = 'station_name'"
    )
    assert json.loads(settings[0]["v"]) == "Endoscopy 3"
    states = await _states(restored_url)
    assert states.get("sent") == 2 and sum(states.values()) == 5  # 3 still to deliver

    # The archive is back; the restored station's sender (new NATS, no seeded destination:
    # PACS comes from the restored database) finishes what was interrupted.
    storescp = DcmtkStorescp(
        tool("storescp"), tmp_path / "storescp2" / "out", station.storescp.port
    )
    storescp.start()
    nats = EmbeddedNats(tmp_path / "nats-restored")
    nats.start()
    sender = SenderHarness(nats, restored_url, MediaStore(restored_media), tmp_path / "s2")
    (tmp_path / "s2").mkdir()
    try:
        sender.start()

        async def all_sent() -> bool:
            return await _states(restored_url) == {"sent": 5}

        try:
            await wait_for(all_sent, 180, 0.5, what="every delivery sent after the restore")
        except AssertionError:
            print(sender.log_text()[-6000:])
            raise
        assert set(storescp.received()) == set(interrupted)
    finally:
        sender.stop()
        storescp.stop()
        nats.stop(kill=True)


async def test_upload_bounds_and_unknown_destination(
    gateway_factory: Any, database_url: str, tmp_path: Path
) -> None:
    gateway = await gateway_factory(gateway_send_max_bytes=1000)
    try:
        destination = uuid.uuid4()
        conn = await asyncpg.connect(database_url)
        try:  # the sender's row, as the sender would have written it
            await conn.execute(
                "INSERT INTO destinations (id, name, ae_title, host, port) "
                "VALUES ($1, 'PACS', 'STORESCP', '127.0.0.1', 104)",
                destination,
            )
        finally:
            await conn.close()
        admin = await gateway.login()
        token = await new_token(admin, "operator")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"}
        async with gateway.client(headers=headers) as client:
            declared = await client.post(f"/api/v1/send/{destination}", content=b"x" * 2000)
            assert declared.status_code == 413, declared.text

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted
                for _ in range(20):
                    yield b"x" * 100

            counted = await client.post(f"/api/v1/send/{destination}", content=chunks())
            assert counted.status_code == 413, counted.text
            junk = await client.post(f"/api/v1/send/{destination}", content=b"x" * 500)
            assert junk.status_code == 422 and "PS3.10" in junk.json()["error"]["message"]
            unknown = await client.post(f"/api/v1/send/{uuid.uuid4()}", content=b"x")
            assert unknown.status_code == 404
        await admin.aclose()
        media = tmp_path / "media"
        assert not (media / "dicom").exists()
        assert MediaStore(media).temp_files() == []
    finally:
        for running, task in gateway_factory.running:
            running.ctx.stop.set()
            await asyncio.wait_for(task, 15)
