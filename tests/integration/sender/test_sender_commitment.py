"""Storage Commitment Push Model SCU end to end (PS3.4 Annex J, IHE RAD-10): the sender as a
process, the station's SCP in this process (it receives the reports an archive sends on a new
association), real archives.

Orthanc (its built-in Storage Commitment SCP reports on a new association to the AE it knows
by the calling AE title): every instance committed; an instance deleted from Orthanc comes back
in the Failed SOP Sequence, is sent again and then committed. pynetdicom answering on the same
association; never answering (time-out, asked again, then commit-failed); an archive without
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
)
from cinebridge_scp.app import ScpApp
from cinebridge_scp.settings import ScpSettings
from cinebridge_testkit import wait_for
from cinebridge_testkit.sender_harness import SenderHarness, tool
from cinebridge_testkit.storage_peers import CommitmentScp, OrthancPeer, ScriptedScp
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_context

pytestmark = pytest.mark.integration

STATION_AE = "CINEBRIDGE"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
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
    rows = await pool.fetch("SELECT commitment, count(*) AS n FROM deliveries GROUP BY 1")
    return {r["commitment"]: int(r["n"]) for r in rows}


async def wait_commitments(
    pool: asyncpg.Pool,
    expected: dict[str | None, int],
    harness: SenderHarness,
    timeout_s: float = 90,
) -> None:
    async def check() -> bool:
        return await commitments(pool) == expected

    try:
        await wait_for(check, timeout_s, 0.2, what=f"commitment states {expected}")
    except AssertionError:
        print(harness.log_text()[-8000:])
        print("now:", await commitments(pool))
        raise


def orthanc_for(tmp_path: Path, scp_port: int, calling_ae: str = STATION_AE) -> OrthancPeer:
    return OrthancPeer(
        tool("Orthanc"),
        tmp_path / "orthanc",
        free_port(),
        free_port(),
        modalities={"station": [calling_ae, "127.0.0.1", scp_port]},
    )


async def test_orthanc_commits_every_instance(
    harness: SenderHarness,
    bus: Bus,
    db_pool: asyncpg.Pool,
    own_nats: EmbeddedNats,
    database_url: str,
    tmp_path: Path,
) -> None:
    async with station_scp(own_nats, database_url, tmp_path) as scp_port:
        # The station calls as SPACS (statement Table 25), its SCP is CINEBRIDGE: Orthanc
        # reports to the AE it knows, SPACS, at the SCP's address, and the SCP takes it.
        orthanc = orthanc_for(tmp_path, scp_port, "SPACS")
        orthanc.start()
        try:
            archive = destination(
                "orthanc", "ORTHANC", orthanc.dicom_port, calling_ae_title="SPACS"
            )
            harness.start([archive], **COMMIT_ENV)
            msgs = harness.make(3)
            await harness.announce(bus, msgs)
            await wait_commitments(db_pool, {"committed": 3}, harness)
        finally:
            orthanc.stop()
        # What a purge policy asks, and the study's badge, over the bus.
        committed = await bus.request(CommittedStudiesRequest(), CommittedStudiesReply)
        assert committed.study_ids == [msgs[0].study_id]
        assert committed.instances == {msgs[0].study_id: 3}
        assert msgs[0].study_id in committed.committed_at
        # Asked about given studies (as a purge asks about its candidates).
        other = str(uuid.uuid4())
        asked = CommittedStudiesRequest(study_ids=[other, msgs[0].study_id])
        assert (await bus.request(asked, CommittedStudiesReply)).study_ids == [msgs[0].study_id]
        alone = CommittedStudiesRequest(study_ids=[other])
        assert (await bus.request(alone, CommittedStudiesReply)).study_ids == []
        status = await bus.request(
            CommitmentStatusRequest(study_ids=[msgs[0].study_id]), CommitmentStatusReply
        )
        assert [(s.destination, s.state, s.instances, s.committed) for s in status.studies] == [
            ("orthanc", "committed", 3, 3)
        ]
    txns = await db_pool.fetch("SELECT state, request FROM commitment_transactions")
    assert [(t["state"], t["request"]) for t in txns] == [("answered", 1)]
    sent = await db_pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 'sent'")
    assert sent == 3


async def test_orthanc_failed_instance_is_sent_again_then_committed(
    harness: SenderHarness,
    bus: Bus,
    db_pool: asyncpg.Pool,
    own_nats: EmbeddedNats,
    database_url: str,
    tmp_path: Path,
) -> None:
    async with station_scp(own_nats, database_url, tmp_path) as scp_port:
        orthanc = orthanc_for(tmp_path, scp_port)
        orthanc.start()
        try:
            # Stored first without commitment, so one instance can be deleted before the ask.
            dest = destination("orthanc", "ORTHANC", orthanc.dicom_port, commitment_required=False)
            harness.start([dest], **COMMIT_ENV)
            await harness.answering()
            msgs = harness.make(3)
            await harness.announce(bus, msgs)
            await wait_commitments(db_pool, {None: 3}, harness)
            await wait_for(
                lambda: _count(db_pool, "SELECT count(*) FROM deliveries WHERE state = 'sent'", 3),
                60,
                what="3 sent",
            )
            gone = msgs[1].sop_instance_uid
            orthanc.delete_instance(gone)
            assert orthanc.instance_count() == 2
            saved = await _upsert(bus, db_pool, {**dest, "commitment_required": True})
            assert saved.commitment_required
            # Failed SOP Sequence (0112) → stored again → asked again → committed.
            await wait_commitments(db_pool, {"committed": 3}, harness)
            assert orthanc.instance_count() == 3
        finally:
            orthanc.stop()
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


async def _count(pool: asyncpg.Pool, sql: str, n: int) -> bool:
    return int(await pool.fetchval(sql)) == n


async def _upsert(bus: Bus, pool: asyncpg.Pool, fields: dict[str, Any]) -> Destination:
    row_id = await pool.fetchval(
        "SELECT id::text FROM destinations WHERE name = $1", fields["name"]
    )
    reply = await bus.request(
        DestinationUpsert(destination=Destination(**{**fields, "id": row_id})), DestinationReply
    )
    assert reply.ok and reply.destination is not None, reply.error
    return reply.destination


async def test_pynetdicom_reports_on_the_same_association(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    with CommitmentScp() as archive:
        harness.start([destination("pynetdicom", archive.ae_title, archive.port)], **COMMIT_ENV)
        msgs = harness.make(4)
        await harness.announce(bus, msgs)
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
        harness.start([dest], **COMMIT_ENV)
        await harness.announce(bus, harness.make(2))
        await wait_commitments(db_pool, {"failed": 2}, harness)
    # Asked twice (the first request and one retry), each a new Transaction UID.
    uids = {str(r.TransactionUID) for r in archive.requests}
    assert len(archive.requests) == 2 and len(uids) == 2
    rows = await db_pool.fetch("SELECT state, commitment_reason FROM deliveries")
    assert {r["state"] for r in rows} == {"sent"}  # delivered all the same
    assert {r["commitment_reason"] for r in rows} == {"no N-EVENT-REPORT after 2 requests"}
    txns = await db_pool.fetch("SELECT state FROM commitment_transactions ORDER BY request")
    assert [t["state"] for t in txns] == ["superseded", "failed"]


async def test_archive_down_during_commitment_is_asked_again_until_it_answers(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    port = free_port()
    archive = CommitmentScp()
    archive.start(port)
    with archive:
        dest = destination("flaky", archive.ae_title, port, commitment_required=False)
        harness.start([dest], **COMMIT_ENV)
        await harness.answering()
        await harness.announce(bus, harness.make(2))
        await wait_for(
            lambda: _count(db_pool, "SELECT count(*) FROM deliveries WHERE state = 'sent'", 2),
            60,
            what="2 sent",
        )
    # The archive is down when commitment is asked for: retried with backoff, shown, nothing
    # committed; the study is not one a purge may take.
    await _upsert(bus, db_pool, {**dest, "commitment_required": True})
    await wait_for(
        lambda: _count(
            db_pool,
            "SELECT count(*) FROM commitment_transactions WHERE state = 'pending'"
            " AND attempts >= 2 AND last_error IS NOT NULL",
            1,
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
        harness.start([destination("plain", archive.ae_title, archive.port)], **COMMIT_ENV)
        await harness.announce(bus, harness.make(2))
        await wait_commitments(db_pool, {"unsupported": 2}, harness)
    states = await db_pool.fetch("SELECT state FROM deliveries")
    assert {s["state"] for s in states} == {"sent"}


def archive_report(port: int, uid: str, refs: list[tuple[str, str]]) -> int:
    """What an archive does after its N-ACTION-RSP: a new association to the station's SCP as
    the SCP of the SOP class (PS3.4 J.3.3), the N-EVENT-REPORT listing every instance."""
    ae = AE(ae_title="COMMIT")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    context = build_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian])
    context.scu_role, context.scp_role = False, True
    assoc = ae.associate("127.0.0.1", port, ae_title=STATION_AE, contexts=[context])
    assert assoc.is_established
    ds = Dataset()
    ds.TransactionUID = uid
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    try:
        status, _ = assoc.send_n_event_report(ds, 1, STORAGE_COMMITMENT, "1.2.840.10008.1.20.1.1")
        return int(status.Status)
    finally:
        assoc.release()


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
            harness.start(
                [destination("later", archive.ae_title, archive.port, commitment_timeout_s=3600)],
                **COMMIT_ENV,
            )
            msgs = harness.make(3)
            await harness.announce(bus, msgs)
            await wait_for(
                lambda: _count(
                    db_pool,
                    "SELECT count(*) FROM commitment_transactions WHERE state = 'requested'",
                    1,
                ),
                90,
                what="the N-ACTION answered",
            )
            harness.kill()
        uid = await db_pool.fetchval("SELECT transaction_uid FROM commitment_transactions")
        refs = [(m.sop_class_uid, m.sop_instance_uid) for m in msgs]
        assert await asyncio.to_thread(archive_report, scp_port, uid, refs) == 0x0000
        assert await commitments(db_pool) == {"requested": 3}  # nobody applied it yet
        harness.start()
        await wait_commitments(db_pool, {"committed": 3}, harness)
    assert uuid.UUID(str(await db_pool.fetchval("SELECT study_id FROM commitment_transactions")))
