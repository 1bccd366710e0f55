"""All SQL of the Storage SCP: the received_* index (migrations 101, R_scp_index_instance) and
the Storage Commitment reports it owes (migration 105)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg
from cinebridge_common import commitment as sc
from cinebridge_common.messages import InstanceReceived

from .commitment import ReportTo
from .ingest import TAGS, IndexOutcome, InstanceFacts

Duplicates = Literal["replace", "keep-first"]


async def open_index_pool(dsn: str, max_size: int = 10) -> asyncpg.Pool:
    """The SCP's own pool for `index_instance`: no session reset on release.

    asyncpg resets every released connection with `SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` — a round trip after every C-STORE's commit, before its outcome
    comes back. Our sessions keep no state (transaction-scoped advisory locks only, no LISTEN,
    no SET, no cursors), so releasing skips it; an open transaction is still rolled back.
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=60,
    )
    assert pool is not None
    return pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    # The received file, fsync'd before the commit, is the record; its row is an index that
    # recover.py rebuilds from it. So a C-STORE need not also wait for PostgreSQL's WAL flush.
    await conn.execute("SET synchronous_commit = off")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook: asyncpg has already ended any transaction; nothing else to reset."""


async def index_instance(
    pool: asyncpg.Pool,
    facts: InstanceFacts,
    duplicates: Duplicates,
) -> IndexOutcome:
    """Index one stored file and enqueue InstanceReceived, atomically, in one round trip.

    `scp_index_instance` (R_scp_index_instance.sql) does what `outbox.enqueue` does inside the same
    statement, because a C-STORE waits on this call: one round trip instead of ten. It sends no
    NOTIFY: a relay woken per instance would publish, update and commit once per instance on
    the event loop that the next C-STORE is waiting for; its 1 s poll publishes in batches.
    A second copy of a SOP Instance UID replaces the first (the old file path comes back for
    deletion after commit) or, with keep-first, changes nothing; never a duplicate row.
    """
    (outcome,) = await index_rows(pool, [IndexRow(facts)], duplicates)
    return outcome


async def index_instances(
    conn: asyncpg.Pool | asyncpg.pool.PoolConnectionProxy,
    facts: Sequence[InstanceFacts],
    duplicates: Duplicates,
) -> list[IndexOutcome]:
    """`index_instance` for several instances in one statement (one round trip), in order."""
    return await index_rows(conn, index_args(facts), duplicates)


def index_args(facts: Sequence[InstanceFacts]) -> list[IndexRow]:
    """The statement's arguments for these instances: ids and events, made before it is sent
    (group_index.py prepares them while the files are still being made durable)."""
    return [IndexRow(f) for f in facts]


async def index_rows(
    conn: asyncpg.Pool | asyncpg.pool.PoolConnectionProxy,
    rows: Sequence[IndexRow],
    duplicates: Duplicates,
) -> list[IndexOutcome]:
    """Index prepared rows in one statement (one round trip), in order.

    Called in the caller's transaction, so that the rows of instances received at the same
    moment on concurrent associations commit together (group_index.py); a second copy of a
    SOP Instance UID in the same call sees the first's row, as it would one statement later.
    """
    if len(rows) == 1:  # one instance (one sender): the plain call, no array to unpack
        (row,) = rows
        one = await conn.fetchrow(
            _INDEX_SQL,
            row.attrs,
            duplicates == "keep-first",
            row.msg_id,
            InstanceReceived.subject,
            row.fresh,
            row.replacing,
            None,  # no NOTIFY: the relays' 1 s poll publishes received instances in batches
        )
        assert one is not None
        return [_outcome(one)]
    results = await conn.fetch(
        _INDEX_MANY_SQL,
        [r.attrs for r in rows],  # jsonb: the pool encodes it (_init_connection)
        duplicates == "keep-first",
        [r.msg_id for r in rows],
        InstanceReceived.subject,
        [r.fresh for r in rows],
        [r.replacing for r in rows],
    )
    assert len(results) == len(rows)
    return [_outcome(r) for r in results]


class IndexRow:
    """The arguments of `scp_index_instance` for one instance: its attributes (every key, ""
    if absent), generated row ids, and its InstanceReceived event as first and as second copy."""

    __slots__ = ("attrs", "fresh", "msg_id", "replacing")

    def __init__(self, facts: InstanceFacts) -> None:
        # The three row ids from one read of the system's random source.
        random = os.urandom(48)
        instance_id, study_row_id, series_row_id = (
            str(uuid.UUID(bytes=random[i : i + 16], version=4)) for i in (0, 16, 32)
        )
        attrs = {name: facts[name] for name in TAGS if name != "charset"}
        attrs.update(
            instance_id=instance_id,
            study_row_id=study_row_id,
            series_row_id=series_row_id,
            transfer_syntax_uid=facts.transfer_syntax_uid,
            calling_ae=facts.calling_ae,
            source_address=facts.source_address,
            rel_path=facts.rel_path,
            size=str(facts.size),
            sha256=facts.sha256,
        )
        self.attrs = attrs
        self.msg_id = f"scp.received.{instance_id}"
        event = _event(facts, instance_id, replaced=False)
        self.fresh = event.to_bytes()
        # The same event as a second copy: validated once, copied with the one field changed.
        self.replacing = event.model_copy(update={"replaced": True}).to_bytes()


def _outcome(row: asyncpg.Record) -> IndexOutcome:
    return IndexOutcome(
        str(row["instance_id"]),
        replaced_rel_path=row["replaced_rel_path"],
        kept_existing=row["kept"],
    )


_INDEX_SQL = "SELECT * FROM scp_index_instance($1, $2, $3, $4, $5, $6, $7)"
#: One call of scp_index_instance per array element, in the arrays' order.
_INDEX_MANY_SQL = """
SELECT r.instance_id, r.replaced_rel_path, r.kept
FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(a, n)
CROSS JOIN LATERAL scp_index_instance(
    x.a, $2, ($3::text[])[x.n], $4, ($5::bytea[])[x.n], ($6::bytea[])[x.n], NULL) AS r
ORDER BY x.n"""


async def indexed_paths(pool: asyncpg.Pool, rel_paths: list[str]) -> set[str]:
    """Which of these stored files have an index row (the recovery sweep's question)."""
    rows = await pool.fetch(
        "SELECT rel_path FROM received_instances WHERE rel_path = ANY($1::text[])", rel_paths
    )
    return {row["rel_path"] for row in rows}


async def path_of(pool: asyncpg.Pool, sop_instance_uid: str) -> str | None:
    """The stored file of an indexed instance, if it is indexed."""
    path: str | None = await pool.fetchval(
        "SELECT rel_path FROM received_instances WHERE sop_instance_uid = $1", sop_instance_uid
    )
    return path


def _event(f: InstanceFacts, instance_id: str, *, replaced: bool) -> InstanceReceived:
    return InstanceReceived(
        instance_id=instance_id,
        sop_instance_uid=f["sop_instance_uid"],
        sop_class_uid=f["sop_class_uid"],
        study_instance_uid=f["study_instance_uid"],
        series_instance_uid=f["series_instance_uid"],
        transfer_syntax_uid=f.transfer_syntax_uid,
        calling_ae=f.calling_ae,
        rel_path=f.rel_path,
        size=f.size,
        sha256=f.sha256,
        replaced=replaced,
    )


async def stored_classes(pool: asyncpg.Pool, sop_instance_uids: Sequence[str]) -> dict[str, str]:
    """SOP Instance UID → SOP Class UID of those indexed: each has a durable file (ingest.py),
    which is what Storage Commitment promises (PS3.4 J.3.2)."""
    rows = await pool.fetch(
        """SELECT sop_instance_uid, sop_class_uid FROM received_instances
           WHERE sop_instance_uid = ANY($1::text[])""",
        list(sop_instance_uids),
    )
    return {r["sop_instance_uid"]: r["sop_class_uid"] for r in rows}


@dataclass(frozen=True)
class OwedReport:
    id: int
    to: ReportTo
    report: sc.Report
    attempts: int


async def owe_report(pool: asyncpg.Pool, to: ReportTo, report: sc.Report, hold_s: float) -> int:
    """Store a report owed on a new association, flushed to the WAL (the index pool commits
    without waiting, open_index_pool), due after `hold_s` unless `report_due` comes first."""
    body = {
        "committed": [[r.sop_class_uid, r.sop_instance_uid] for r in report.committed],
        "failed": [[f.sop_class_uid, f.sop_instance_uid, f.reason] for f in report.failed],
    }
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        row_id: int = await conn.fetchval(
            """INSERT INTO scp_commitment_reports (transaction_uid, requester_ae, host, port,
                   calling_ae, implementation, report, next_attempt_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb,
                       now() + make_interval(secs => $8))
               RETURNING id""",
            report.transaction_uid,
            to.ae_title,
            to.host,
            to.port,
            to.calling_ae,
            [to.implementation_class_uid, to.implementation_version_name],
            body,
            hold_s,
        )
    return row_id


async def report_due(pool: asyncpg.Pool, report_id: int) -> None:
    """Its N-ACTION-RSP went out: the report may go now."""
    await pool.execute(
        """UPDATE scp_commitment_reports SET next_attempt_at = now()
           WHERE id = $1 AND state = 'owed' AND attempts = 0""",
        report_id,
    )


async def claim_reports(pool: asyncpg.Pool, lease_s: float, limit: int) -> list[OwedReport]:
    """Due reports, leased to this process for `lease_s` (several SCP processes share the
    table: SKIP LOCKED and the lease keep each report with one of them at a time)."""
    rows = await pool.fetch(
        """UPDATE scp_commitment_reports r
           SET leased_until = now() + make_interval(secs => $1)
           WHERE r.id IN (
               SELECT id FROM scp_commitment_reports
               WHERE state = 'owed' AND next_attempt_at <= now()
                 AND (leased_until IS NULL OR leased_until < now())
               ORDER BY next_attempt_at LIMIT $2
               FOR UPDATE SKIP LOCKED)
           RETURNING r.*""",
        lease_s,
        limit,
    )
    return [_owed(r) for r in rows]


def _owed(row: asyncpg.Record) -> OwedReport:
    body = row["report"]
    report = sc.Report(row["transaction_uid"])
    report.committed.extend(sc.Reference(c, i) for c, i in body["committed"])
    report.failed.extend(sc.Failure(c, i, int(why)) for c, i, why in body["failed"])
    uid, version = row["implementation"]
    to = ReportTo(row["requester_ae"], row["host"], row["port"], row["calling_ae"], uid, version)
    return OwedReport(row["id"], to, report, row["attempts"])


async def report_sent(pool: asyncpg.Pool, report_id: int, status: int | None) -> None:
    await pool.execute(
        """UPDATE scp_commitment_reports
           SET state = 'sent', attempts = attempts + 1, last_status = $2, leased_until = NULL,
               finished_at = now()
           WHERE id = $1""",
        report_id,
        status,
    )


async def report_not_sent(
    pool: asyncpg.Pool, report_id: int, error: str, retry_s: float | None
) -> None:
    """Tried again after `retry_s`; None: abandoned (kept, with why, for the operator)."""
    await pool.execute(
        """UPDATE scp_commitment_reports
           SET attempts = attempts + 1, last_error = $2, leased_until = NULL,
               state = CASE WHEN $3::float8 IS NULL THEN 'abandoned' ELSE state END,
               finished_at = CASE WHEN $3::float8 IS NULL THEN now() END,
               next_attempt_at = now() + make_interval(secs => coalesce($3::float8, 0))
           WHERE id = $1""",
        report_id,
        error[:500],
        retry_s,
    )


async def owed_reports(pool: asyncpg.Pool, keep_finished_days: int) -> int:
    """Reports still owed; finished ones older than `keep_finished_days` are dropped."""
    await pool.execute(
        """DELETE FROM scp_commitment_reports
           WHERE state <> 'owed' AND finished_at < now() - make_interval(days => $1)""",
        keep_finished_days,
    )
    n: int = await pool.fetchval("SELECT count(*) FROM scp_commitment_reports WHERE state = 'owed'")
    return n
