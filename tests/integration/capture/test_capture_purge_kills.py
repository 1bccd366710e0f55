"""Each service SIGKILLed in the middle of a purge (docs/purge.md "Who does what"): the real
process, killed at the point that matters, leaves the ledger consistent and nothing purged that
is not committed; its restart finishes the purge, audited exactly once.

A process is stopped at its point by a lock the test holds in PostgreSQL on the rows or table
its next statement needs (the service itself is unchanged): the test waits until that statement
is waiting on the lock (`pg_stat_activity`), SIGKILLs the process, and releases the lock. No
assertion depends on timing: every wait is on an observable state, with a generous bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from cinebridge_capture.purge import SenderUnavailable, purge_once
from cinebridge_common.embedded import free_port, wait_port
from cinebridge_testkit import wait_for

from .purge_station import ADMIN_PASSWORD, SMALL, ServiceProcess, Station, Study

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@contextlib.asynccontextmanager
async def holding(pool: asyncpg.Pool, sql: str, *args: Any) -> AsyncIterator[None]:
    """A transaction of the test's holding the locks `sql` takes, rolled back on leaving."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(sql, *args)
            yield
        finally:
            await tx.rollback()


async def blocked_on(pool: asyncpg.Pool, statement: str) -> None:
    """Until a session waits on a lock in a statement starting with `statement`."""

    async def waiting() -> bool:
        n = await pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE wait_event_type = 'Lock' AND ltrim(query) LIKE $1 || '%'""",
            statement,
        )
        return bool(n)

    await wait_for(waiting, 180, 0.1, what=f"a statement {statement!r} waiting on the lock")


async def journal(station: Station, study: Study) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await station.pool.fetchrow(
        """SELECT media_removed_at, dicom_removed_at, finished_at FROM capture_purges
           WHERE study_id = $1""",
        study.uuid,
    )
    return row


async def marked(station: Station, study: Study) -> tuple[int, int]:
    """(media rows, instance rows) of the study marked purged."""
    row = await station.pool.fetchrow(
        """SELECT (SELECT count(*) FROM media WHERE study_id = $1 AND purged_at IS NOT NULL) AS m,
                  (SELECT count(*) FROM instances WHERE study_id = $1
                   AND purged_at IS NOT NULL) AS i""",
        study.uuid,
    )
    assert row is not None
    return int(row["m"]), int(row["i"])


async def test_capture_killed_between_removing_media_files_and_marking_them(
    station: Station, capture_factory: Any
) -> None:
    kept, study = await station.kept_and_committed()
    async with holding(
        station.pool, "SELECT 1 FROM media WHERE study_id = $1 FOR UPDATE", study.uuid
    ):
        # A capture process whose planner runs at start: it journals the purge, removes the
        # media files, and waits to mark their rows.
        planner = capture_factory(
            "or2", [{"name": "endo", "url": SMALL}], CB_CAPTURE_PURGE_INTERVAL_S="1"
        )
        await blocked_on(station.pool, "UPDATE media SET purged_at")
        assert not any(station.store.resolve(rel).exists() for rel in study.media_rel)
        planner.kill()
    entry = await journal(station, study)
    assert entry is not None and entry["media_removed_at"] is None, entry
    assert entry["finished_at"] is None and not await station.purged(study)
    assert (await marked(station, study))[0] == 0
    await station.intact(kept)
    # Any capture process finishes it: files found gone, rows marked, study purged, audited.
    capture_factory("or3", [{"name": "endo", "url": SMALL}], CB_CAPTURE_PURGE_INTERVAL_S="1")
    await station.gone(study, "retention")
    await station.intact(kept)


async def test_converter_killed_while_removing_a_study_s_dicom_files(station: Station) -> None:
    kept, study = await station.kept_and_committed()
    await station.stop_converter()
    env = {"CB_CONVERTER_ACK_WAIT_S": "10"}
    converter = ServiceProcess.of(station, "converter", **env)
    converter.start()
    restarted = ServiceProcess.of(station, "converter", **env)
    try:
        dicom = await station.dicom_files(study)
        async with holding(
            station.pool, "SELECT 1 FROM instances WHERE study_id = $1 FOR UPDATE", study.uuid
        ):
            assert (await station.run()).started == [study.study_id]
            await blocked_on(station.pool, "UPDATE instances SET purged_at")
            assert not any(station.store.resolve(rel).exists() for rel in dicom)
            converter.kill()
        entry = await journal(station, study)
        assert entry is not None and entry["dicom_removed_at"] is None, entry
        assert not await station.purged(study)
        assert (await marked(station, study))[1] == 0
        await station.intact(kept)
        # The job was never acknowledged: it comes back to the restarted converter.
        restarted.start()
        await station.gone(study, "retention")
        await station.intact(kept)
    finally:
        converter.stop()
        restarted.stop()


async def test_sender_killed_while_answering_which_studies_are_committed(
    station: Station,
) -> None:
    kept, study = await station.kept_and_committed()
    # The sender's answer reads its destinations first.
    async with holding(station.pool, "LOCK TABLE destinations IN ACCESS EXCLUSIVE MODE"):
        planner = asyncio.create_task(purge_once(station.deps()))
        await blocked_on(station.pool, "WITH req AS (SELECT id FROM destinations")
        station.sender.kill()
        with pytest.raises(SenderUnavailable):
            await asyncio.wait_for(planner, 120)
    assert await station.pool.fetchval("SELECT count(*) FROM capture_purges") == 0
    await station.intact(study)
    await station.intact(kept)
    station.sender.start()
    await station.sender.answering()
    assert (await station.run()).started == [study.study_id]
    await station.gone(study, "retention")
    await station.intact(kept)


async def test_gateway_killed_while_recording_the_purge_audits_it_once(
    station: Station,
) -> None:
    kept, study = await station.kept_and_committed()
    await station.gateway.stop()
    port = free_port()
    env = {"CB_GATEWAY_PORT": str(port), "CB_GATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD}
    gateway = ServiceProcess.of(station, "gateway", **env)
    gateway.start()
    restarted = ServiceProcess.of(station, "gateway", **env)
    audits = "SELECT count(*) FROM gateway_audit_log WHERE study_id = $1 AND action = $2"
    try:
        await asyncio.to_thread(wait_port, port, 120, gateway.proc)
        async with holding(station.pool, "LOCK TABLE gateway_audit_log IN SHARE MODE"):
            assert (await station.run()).started == [study.study_id]
            await wait_for(lambda: station.purged(study), 120, 0.2, what="the study purged")
            await blocked_on(station.pool, "INSERT INTO gateway_audit_log")
            gateway.kill()
        assert await station.pool.fetchval(audits, study.uuid, "study_purged") == 0
        # Never acknowledged: the event comes back to the restarted gateway.
        restarted.start()
        await station.gone(study, "retention")

        async def settled() -> bool:
            info = await station.bus.js.consumer_info("CB_EVENTS", "gateway-audit-study-purged")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_for(settled, 120, 0.2, what="the audit consumer with nothing left")
        assert await station.pool.fetchval(audits, study.uuid, "study_purged") == 1
        await station.intact(kept)
    finally:
        gateway.stop()
        restarted.stop()


async def test_sender_killed_between_the_commitment_request_and_the_report(
    station: Station,
) -> None:
    """The archive answered the N-ACTION and has not sent its N-EVENT-REPORT (PS3.4 J.3.3)
    when the sender is killed: the study is not purgeable until the archive commits it."""
    station.archive.report = False
    study = await station.study()

    async def requested() -> bool:
        state = await station.pool.fetchval(
            "SELECT state FROM commitment_transactions WHERE study_id = $1", study.uuid
        )
        return state == "requested"

    await wait_for(requested, 180, 0.2, what="the N-ACTION answered")
    station.sender.kill()
    await station.policy(purge_enabled=True, purge_retention_days=0)
    with pytest.raises(SenderUnavailable):
        await purge_once(station.deps())
    station.sender.start()
    await station.sender.answering()
    assert (await station.run()).started == []
    ledger = await station.ledger(study)
    assert (ledger["ledger"], ledger["purge"]) == ("sent", "kept-uncommitted"), ledger
    await station.intact(study)
    # The archive commits what is asked again (the destination's commitment time-out).
    station.archive.report = True
    await station.committed(study)
    assert (await station.run()).started == [study.study_id]
    await station.gone(study, "retention")
