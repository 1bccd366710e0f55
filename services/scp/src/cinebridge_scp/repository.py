"""All SQL of the Storage SCP: the received_* index (migrations 101, R_scp_index_instance)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Literal

import asyncpg
from cinebridge_common.messages import InstanceReceived

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
    instance_id = str(uuid.uuid4())
    attrs = {name: facts[name] for name in TAGS if name != "charset"}  # every key, "" if absent
    attrs.update(
        instance_id=instance_id,
        study_row_id=str(uuid.uuid4()),
        series_row_id=str(uuid.uuid4()),
        transfer_syntax_uid=facts.transfer_syntax_uid,
        calling_ae=facts.calling_ae,
        source_address=facts.source_address,
        rel_path=facts.rel_path,
        size=str(facts.size),
        sha256=facts.sha256,
    )
    fresh, replacing = (_event(facts, instance_id, replaced=r) for r in (False, True))
    args = (
        attrs,
        duplicates == "keep-first",
        f"scp.received.{instance_id}",
        InstanceReceived.subject,
        fresh.to_bytes(),
        replacing.to_bytes(),
        None,  # no NOTIFY: the relays' 1 s poll publishes received instances in batches
    )
    row = await pool.fetchrow(_INDEX_SQL, *args)
    assert row is not None
    return IndexOutcome(
        str(row["instance_id"]),
        replaced_rel_path=row["replaced_rel_path"],
        kept_existing=row["kept"],
    )


_INDEX_SQL = "SELECT * FROM scp_index_instance($1, $2, $3, $4, $5, $6, $7)"


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
