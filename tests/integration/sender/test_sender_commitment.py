"""Storage Commitment Push Model SCU end to end (PS3.4 Annex J, IHE RAD-10): the sender as a
process, the station's SCP in this process (it receives the reports an archive sends on a new
association), real archives.

Orthanc (its built-in Storage Commitment SCP reports on a new association to the AE it knows
by the calling AE title): every instance committed; an instance deleted from Orthanc comes back
in the Failed SOP Sequence, is sent again and then committed. pynetdicom answering on the same
association, after its N-ACTION-RSP and before it; never answering (time-out, asked again, then
commit-failed and shown so); down when commitment is asked (asked again, nothing a purge may
take, committed once it is back); an archive without
the SOP class (unsupported, the delivery stays sent); the sender killed between the N-ACTION
and the report (the report reaches the SCP while it is down and is applied after restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats, free_port
from cinebridge_common.messages import (
    CommitmentStatusReply,
    CommitmentStatusRequest,
    CommittedStudiesReply,
    CommittedStudiesRequest,
    Destination,
    DestinationReply,
    DestinationUpsert,
    InstanceCreated,
)
from cinebridge_scp.app import ScpApp
from cinebridge_scp.settings import ScpSettings
from cinebridge_testkit import wait_for
from cinebridge_testkit.commitment_peers import report_on_new_association
from cinebridge_testkit.sender_harness import SenderHarness, delivery_counts, tool, wait_states
from cinebridge_testkit.storage_peers import CommitmentScp, OrthancPeer, ScriptedScp

pytestmark = pytest.mark.integration

STATION_AE = "CINEBRIDGE"
#: Short waits so that the time-out cases finish in seconds.
COMMIT_ENV = {"CB_SENDER_COMMITMENT_SAME_ASSOCIATION_WAIT_S": "1"}


@contextlib.asynccontextmanager
async def station_scp(nats: EmbeddedNats, database_url: str, tmp_path: Path) -> AsyncIterator[int]:
    """The station's own SCP (AE CINEBRIDGE) on a free port: where archives send reports."""
    settings = ScpSettings(
        nats_url=nats.url,
        database_url=database_url,
        media_root=tmp_path / "scp-media",
        scp_port=free_port(),
        health_port=0,
        instance_id="scp-commitment-test",
    )
    app = ScpApp(settings)
    task = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: _ready(app, task), 60, 0.05, what="the station's SCP listening")
        yield settings.scp_port
    finally:
        if app.ctx is not None:
            app.ctx.stop.set()
        await asyncio.wait_for(task, 30)


async def _ready(app: ScpApp, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
    return app.listener is not None


def destination(name: str, ae: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ae_title": ae,
        "host": "127.0.0.1",
        "port": port,
        "calling_ae_title": STATION_AE,
        "commitment_required": True,
        **extra,
    }


async def commitments(pool: asyncpg.Pool) -> dict[str | None, int]:
    return await delivery_counts(pool, "commitment")


async def wait_commitments(
    pool: asyncpg.Pool,
    expected: dict[str | None, int],
    harness: SenderHarness,
    timeout_s: float = 90,
) -> None:
    await wait_states(pool, expected, timeout_s, harness, column="commitment")


@contextlib.asynccontextmanager
async def orthanc_reporting_to_station(
    nats: EmbeddedNats, database_url: str, tmp_path: Path, calling_ae: str = STATION_AE
) -> AsyncIterator[OrthancPeer]:
    """Orthanc as the archive, its Storage Commitment SCP reporting on a new association to
    `calling_ae` at the station's SCP, which runs for as long."""
    async with station_scp(nats, database_url, tmp_path) as scp_port:
        orthanc = OrthancPeer(
            tool("Orthanc"),
            tmp_path / "orthanc",
            free_port(),
            free_port(),
            modalities={"station": [calling_ae, "127.0.0.1", scp_port]},
        )
        orthanc.start()
        try:
            yield orthanc
        finally:
            orthanc.stop()


async def start_and_announce(
    harness: SenderHarness, bus: Bus, dest: dict[str, Any], n: int
) -> list[InstanceCreated]:
    """The sender started with `dest` as its one destination, and a study of `n` instances."""
    harness.start([dest], **COMMIT_ENV)
    msgs = harness.make(n)
    await harness.announce(bus, msgs)
    return msgs


async def stored_then_commitment_required(
    harness: SenderHarness, bus: Bus, pool: asyncpg.Pool, dest: dict[str, Any], n: int
) -> list[InstanceCreated]:
    """A study stored at `dest` without commitment; the archive then changed by the caller
    (an instance deleted, the archive stopped) before `require_commitment`."""
    harness.start([{**dest, "commitment_required": False}], **COMMIT_ENV)
    await harness.answering()
    msgs = harness.make(n)
    await harness.announce(bus, msgs)
    await wait_states(pool, {"sent": n}, 60, harness)
    assert await commitments(pool) == {None: n}
    return msgs


async def require_commitment(bus: Bus, pool: asyncpg.Pool, dest: dict[str, Any]) -> None:
    """The destination edited to require commitment, as the settings page does."""
    row_id = await pool.fetchval("SELECT id::text FROM destinations WHERE name = $1", dest["name"])
    changed = Destination(**{**dest, "commitment_required": True, "id": row_id})
    reply = await bus.request(DestinationUpsert(destination=changed), DestinationReply)
    assert reply.ok and reply.destination is not None, reply.error
    assert reply.destination.commitment_required


async def transactions_where(pool: asyncpg.Pool, condition: str, n: int) -> bool:
    sql = f"SELECT count(*) FROM commitment_transactions WHERE {condition}"
    return int(await pool.fetchval(sql)) == n


async def test_orthanc_commits_every_instance(
    harness: SenderHarness,
    bus: Bus,
    db_pool: asyncpg.Pool,
    own_nats: EmbeddedNats,
    database_url: str,
    tmp_path: Path,
) -> None:
    # The station calls as SPACS (statement Table 25), its SCP is CINEBRIDGE: Orthanc reports
    # to the AE it knows, SPACS, at the SCP's address, and the SCP takes it.
    orthanc = orthanc_reporting_to_station(own_nats, database_url, tmp_path, "SPACS")
    async with orthanc as archive:
        dest = destination("orthanc", "ORTHANC", archive.dicom_port, calling_ae_title="SPACS")
        msgs = await start_and_announce(harness, bus, dest, 3)
        await wait_commitments(db_pool, {"committed": 3}, harness)
    # What a purge policy asks, and the study's badge, over the bus.
    study = msgs[0].study_id
    committed = await bus.request(CommittedStudiesRequest(), CommittedStudiesReply)
    assert committed.study_ids == [study]
    assert committed.instances == {study: 3}
    assert study in committed.committed_at
    # Asked about given studies (as a purge asks about its candidates).
    other = str(uuid.uuid4())
    asked = CommittedStudiesRequest(study_ids=[other, study])
    assert (await bus.request(asked, CommittedStudiesReply)).study_ids == [study]
    alone = CommittedStudiesRequest(study_ids=[other])
    assert (await bus.request(alone, CommittedStudiesReply)).study_ids == []
    status = await bus.request(CommitmentStatusRequest(study_ids=[study]), CommitmentStatusReply)
    assert [(s.destination, s.state, s.instances, s.committed) for s in status.studies] == [
        ("orthanc", "committed", 3, 3)
    ]
    txns = await db_pool.fetch("SELECT state, request FROM commitment_transactions")
    assert [(t["state"], t["request"]) for t in txns] == [("answered", 1)]
    assert await delivery_counts(db_pool, "state") == {"sent": 3}


async def test_orthanc_failed_instance_is_sent_again_then_committed(
    harness: SenderHarness,
    bus: Bus,
    db_pool: asyncpg.Pool,
    own_nats: EmbeddedNats,
    database_url: str,
    tmp_path: Path,
) -> None:
    async with orthanc_reporting_to_station(own_nats, database_url, tmp_path) as orthanc:
        dest = destination("orthanc", "ORTHANC", orthanc.dicom_port)
        msgs = await stored_then_commitment_required(harness, bus, db_pool, dest, 3)
        gone = msgs[1].sop_instance_uid
        orthanc.delete_instance(gone)
        assert orthanc.instance_count() == 2
        await require_commitment(bus, db_pool, dest)
        # Failed SOP Sequence (0112) → stored again → asked again → committed.
        await wait_commitments(db_pool, {"committed": 3}, harness)
        assert orthanc.instance_count() == 3
    resent = await db_pool.fetchrow(
        """SELECT d.generation, d.commitment_requests, d.commitment_reason
           FROM deliveries d JOIN outgoing_instances i ON i.id = d.instance_id
           WHERE i.sop_instance_uid = $1""",
        gone,
    )
    # Stored twice (generation 0 and 1), asked twice: 0112 the first time, committed after.
    assert resent["generation"] == 1 and resent["commitment_requests"] == 2
    assert resent["commitment_reason"] is None
    states = await db_pool.fetch("SELECT state FROM commitment_transactions ORDER BY created_at")
    assert [s["state"] for s in states] == ["answered", "answered"]


@pytest.mark.parametrize("report_first", [False, True], ids=["after", "before-the-response"])
async def test_pynetdicom_reports_on_the_same_association(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, report_first: bool
) -> None:
    # Before the N-ACTION-RSP too: PS3.4 J.3.3 does not order the two.
    with CommitmentScp(report_first=report_first) as archive:
        dest = destination("pynetdicom", archive.ae_title, archive.port)
        msgs = await start_and_announce(harness, bus, dest, 4)
        await wait_commitments(db_pool, {"committed": 4}, harness)
    assert len(archive.requests) == 1
    assert {str(i.ReferencedSOPInstanceUID) for i in archive.requests[0].ReferencedSOPSequence} == {
        m.sop_instance_uid for m in msgs
    }
    assert archive.reports_answered == [0x0000]


async def test_no_report_is_asked_again_then_shown_commit_failed(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    with CommitmentScp(report=False) as archive:
        dest = destination(
            "silent", archive.ae_title, archive.port, commitment_timeout_s=1, commitment_retries=1
        )
        msgs = await start_and_announce(harness, bus, dest, 2)
        await wait_commitments(db_pool, {"failed": 2}, harness)
    # Asked twice (the first request and one retry), each a new Transaction UID.
    uids = {str(r.TransactionUID) for r in archive.requests}
    assert len(archive.requests) == 2 and len(uids) == 2
    rows = await db_pool.fetch("SELECT state, commitment_reason FROM deliveries")
    assert {r["state"] for r in rows} == {"sent"}  # delivered all the same
    assert {r["commitment_reason"] for r in rows} == {"no N-EVENT-REPORT after 2 requests"}
    txns = await db_pool.fetch("SELECT state FROM commitment_transactions ORDER BY request")
    assert [t["state"] for t in txns] == ["superseded", "failed"]
    # Shown: the study's badge says commit-failed, and it is not one a purge may take.
    study = msgs[0].study_id
    status = await bus.request(CommitmentStatusRequest(study_ids=[study]), CommitmentStatusReply)
    assert [(s.destination, s.state, s.committed) for s in status.studies] == [
        ("silent", "commit-failed", 0)
    ]
    assert (await bus.request(CommittedStudiesRequest(), CommittedStudiesReply)).study_ids == []


async def test_archive_down_during_commitment_is_asked_again_until_it_answers(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    port = free_port()
    archive = CommitmentScp()
    archive.start(port)
    dest = destination("flaky", archive.ae_title, port)
    with archive:
        await stored_then_commitment_required(harness, bus, db_pool, dest, 2)
    # The archive is down when commitment is asked for: retried with backoff, shown, nothing
    # committed; the study is not one a purge may take.
    await require_commitment(bus, db_pool, dest)
    await wait_for(
        lambda: transactions_where(
            db_pool, "state = 'pending' AND attempts >= 2 AND last_error IS NOT NULL", 1
        ),
        60,
        what="the N-ACTION tried twice and the failure recorded",
    )
    assert await commitments(db_pool) == {"requested": 2}
    reply = await bus.request(CommittedStudiesRequest(), CommittedStudiesReply)
    assert reply.study_ids == []
    back = CommitmentScp()
    back.start(port)
    with back:
        await wait_commitments(db_pool, {"committed": 2}, harness)
    assert len(back.requests) == 1


async def test_an_archive_without_the_sop_class_is_unsupported_not_failed(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    with ScriptedScp() as archive:
        dest = destination("plain", archive.ae_title, archive.port)
        await start_and_announce(harness, bus, dest, 2)
        await wait_commitments(db_pool, {"unsupported": 2}, harness)
    assert await delivery_counts(db_pool, "state") == {"sent": 2}


async def test_sender_killed_before_the_report_applies_it_after_restart(
    harness: SenderHarness,
    bus: Bus,
    db_pool: asyncpg.Pool,
    own_nats: EmbeddedNats,
    database_url: str,
    tmp_path: Path,
) -> None:
    async with station_scp(own_nats, database_url, tmp_path) as scp_port:
        with CommitmentScp(report=False) as archive:
            dest = destination("later", archive.ae_title, archive.port, commitment_timeout_s=3600)
            msgs = await start_and_announce(harness, bus, dest, 3)
            await wait_for(
                lambda: transactions_where(db_pool, "state = 'requested'", 1),
                90,
                what="the N-ACTION answered",
            )
            harness.kill()
        uid = await db_pool.fetchval("SELECT transaction_uid FROM commitment_transactions")
        refs = [(m.sop_class_uid, m.sop_instance_uid) for m in msgs]
        # The archive's report on a new association to the station's SCP (PS3.4 J.3.3).
        reported = await asyncio.to_thread(
            report_on_new_association, scp_port, STATION_AE, uid, refs, calling_ae="COMMIT"
        )
        assert reported == 0x0000
        assert await commitments(db_pool) == {"requested": 3}  # nobody applied it yet
        harness.start()
        await wait_commitments(db_pool, {"committed": 3}, harness)
    assert uuid.UUID(str(await db_pool.fetchval("SELECT study_id FROM commitment_transactions")))
