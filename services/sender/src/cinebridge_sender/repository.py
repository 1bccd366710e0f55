"""All of the sender's SQL: destinations, outgoing instances, deliveries and their attempts.

Every state change of a delivery enqueues its `DeliveryStateChanged` (and, when a new send is
needed, its `SendInstance` job) in the same transaction (transactional outbox).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cinebridge_common import outbox
from cinebridge_common.messages import (
    DeliveryStateChanged,
    Destination,
    InstanceCreated,
    SendInstance,
)
from cinebridge_common.messages.sender import DeliveryState

#: A connection, whether taken from the pool or not.
Conn = asyncpg.Connection | PoolConnectionProxy
#: A pool or a connection: for single statements.
Db = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy

TERMINAL = ("sent", "warning", "failed-permanent")
#: Called in the transaction that records a delivery as stored: (conn, destination, study).
OnStored = Callable[[Conn, uuid.UUID, uuid.UUID | None], Awaitable[object]]

_DEST_COLUMNS = (
    "id, name, kind, ae_title, host, port, calling_ae_title, tls, profile, enabled, auto_send, "
    "max_associations, base_url, auth, username, secret IS NOT NULL AS secret_set, tls_verify, "
    "ca_file, commitment_required, commitment_timeout_s, commitment_retries"
)


def _destination(row: asyncpg.Record) -> Destination:
    data = dict(row)
    data["id"] = str(data["id"])
    return Destination.model_validate(data)


async def list_destinations(conn: Db) -> list[Destination]:
    rows = await conn.fetch(f"SELECT {_DEST_COLUMNS} FROM destinations ORDER BY name")
    return [_destination(r) for r in rows]


async def get_destination(conn: Db, destination_id: str) -> Destination | None:
    row = await conn.fetchrow(
        f"SELECT {_DEST_COLUMNS} FROM destinations WHERE id = $1", uuid.UUID(destination_id)
    )
    return _destination(row) if row else None


async def destination_secret(conn: Db, destination_id: str) -> str | None:
    """The password or token of a DICOMweb destination: read only to send, never replied."""
    value = await conn.fetchval(
        "SELECT secret FROM destinations WHERE id = $1", uuid.UUID(destination_id)
    )
    return str(value) if value is not None else None


async def secret_kept(conn: Db, d: Destination) -> bool:
    """Whether the destination being saved (by id, else by name) already holds a secret."""
    if d.id is not None:
        found = await conn.fetchval(
            "SELECT secret IS NOT NULL FROM destinations WHERE id = $1", uuid.UUID(d.id)
        )
    else:
        found = await conn.fetchval(
            "SELECT secret IS NOT NULL FROM destinations WHERE name = $1", d.name
        )
    return bool(found)


async def upsert_destination(conn: Db, d: Destination) -> Destination:
    """Insert, or update by id (when given) else by name. A secret left out (None) keeps the
    stored one, so an edit need not retype it; authentication `none` clears it."""
    values = (
        d.name,
        d.ae_title,
        d.host,
        d.port,
        d.calling_ae_title,
        d.tls,
        d.profile,
        d.enabled,
        d.auto_send,
        d.max_associations,
        d.kind,
        d.base_url,
        d.auth,
        d.username,
        d.secret,
        d.tls_verify,
        d.ca_file,
        d.commitment_required,
        d.commitment_timeout_s,
        d.commitment_retries,
    )
    if d.id is not None:
        row = await conn.fetchrow(
            f"""UPDATE destinations SET name = $2, ae_title = $3, host = $4, port = $5,
                   calling_ae_title = $6, tls = $7, profile = $8, enabled = $9, auto_send = $10,
                   max_associations = $11, kind = $12, base_url = $13, auth = $14,
                   username = $15,
                   secret = CASE WHEN $14 = 'none' THEN NULL ELSE coalesce($16, secret) END,
                   tls_verify = $17, ca_file = $18, commitment_required = $19,
                   commitment_timeout_s = $20, commitment_retries = $21, updated_at = now()
                WHERE id = $1 RETURNING {_DEST_COLUMNS}""",
            uuid.UUID(d.id),
            *values,
        )
        if row is None:
            raise LookupError(f"destination {d.id} does not exist")
        return _destination(row)
    row = await conn.fetchrow(
        f"""INSERT INTO destinations (id, name, ae_title, host, port, calling_ae_title, tls,
                                      profile, enabled, auto_send, max_associations, kind,
                                      base_url, auth, username, secret, tls_verify, ca_file,
                                      commitment_required, commitment_timeout_s,
                                      commitment_retries)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                    CASE WHEN $14 = 'none' THEN NULL ELSE $16 END, $17, $18, $19, $20, $21)
            ON CONFLICT (name) DO UPDATE SET ae_title = $3, host = $4, port = $5,
                calling_ae_title = $6, tls = $7, profile = $8, enabled = $9, auto_send = $10,
                max_associations = $11, kind = $12, base_url = $13, auth = $14,
                username = $15,
                secret = CASE WHEN $14 = 'none' THEN NULL
                              ELSE coalesce($16, destinations.secret) END,
                tls_verify = $17, ca_file = $18, commitment_required = $19,
                commitment_timeout_s = $20, commitment_retries = $21, updated_at = now()
            RETURNING {_DEST_COLUMNS}""",
        uuid.uuid4(),
        *values,
    )
    assert row is not None
    return _destination(row)


async def delete_destination(conn: Db, destination_id: str) -> bool:
    result = await conn.execute("DELETE FROM destinations WHERE id = $1", uuid.UUID(destination_id))
    return bool(result.endswith(" 1"))


# -- instances and deliveries -----------------------------------------------------------------


async def record_instance(conn: Conn, msg: InstanceCreated) -> None:
    await conn.execute(
        """INSERT INTO outgoing_instances (id, study_id, sop_instance_uid, sop_class_uid,
                                           transfer_syntax_uid, rel_path, size, sha256)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO NOTHING""",
        uuid.UUID(msg.instance_id),
        _uuid_or_none(msg.study_id),
        msg.sop_instance_uid,
        msg.sop_class_uid,
        msg.transfer_syntax_uid,
        msg.rel_path,
        msg.size,
        msg.sha256,
    )


async def existing_destination_ids(conn: Conn, wanted: Sequence[str]) -> list[uuid.UUID]:
    """The named destinations that still exist (one deleted since is simply not sent to)."""
    keys = [key for key in map(_uuid_or_none, wanted) if key is not None]
    rows = await conn.fetch(
        "SELECT id FROM destinations WHERE id = ANY($1::uuid[]) ORDER BY name", keys
    )
    return [r["id"] for r in rows]


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def auto_send_destination_ids(conn: Conn) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT id FROM destinations WHERE enabled AND auto_send ORDER BY name")
    return [r["id"] for r in rows]


async def instance_ids(
    conn: Conn, study_id: str | None, instance_id: str | None
) -> list[uuid.UUID]:
    if instance_id:
        rows = await conn.fetch(
            "SELECT id FROM outgoing_instances WHERE id = $1", uuid.UUID(instance_id)
        )
    else:
        rows = await conn.fetch(
            "SELECT id FROM outgoing_instances WHERE study_id = $1 ORDER BY created_at, id",
            _uuid_or_none(study_id),
        )
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class DeliveryRow:
    id: uuid.UUID
    instance_id: uuid.UUID
    destination_id: uuid.UUID
    study_id: uuid.UUID | None
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    lease_owner: str | None
    lease_until: dt.datetime | None
    generation: int
    rel_path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int


_DELIVERY_SELECT = """
    SELECT d.id, d.instance_id, d.destination_id, d.study_id, d.state, d.attempts,
           d.next_attempt_at, d.lease_owner, d.lease_until, d.generation, i.rel_path,
           i.sop_class_uid, i.sop_instance_uid, i.transfer_syntax_uid, i.size
    FROM deliveries d JOIN outgoing_instances i ON i.id = d.instance_id
"""


def _row(record: asyncpg.Record) -> DeliveryRow:
    return DeliveryRow(**dict(record))


async def get_delivery(conn: Db, delivery_id: str) -> DeliveryRow | None:
    try:
        key = uuid.UUID(delivery_id)
    except ValueError:
        return None
    record = await conn.fetchrow(_DELIVERY_SELECT + " WHERE d.id = $1", key)
    return _row(record) if record else None


def _plain(conn: Conn) -> asyncpg.Connection:
    # outbox.enqueue is typed for a bare connection; a pool proxy behaves the same.
    return cast(asyncpg.Connection, conn)


def send_job(
    delivery_id: uuid.UUID, generation: int, attempts: int = 0
) -> tuple[SendInstance, str]:
    """The job for one delivery and its Nats-Msg-Id (new generation/attempt = new message)."""
    job = SendInstance(job_key=str(delivery_id), delivery_id=str(delivery_id))
    return job, f"send-{delivery_id}-g{generation}-a{attempts}"


async def _announce(
    conn: Conn,
    row: dict[str, Any],
    *,
    status: int | None = None,
    error: str | None = None,
) -> None:
    event = DeliveryStateChanged(
        delivery_id=str(row["id"]),
        instance_id=str(row["instance_id"]),
        destination_id=str(row["destination_id"]),
        study_id=str(row["study_id"]) if row["study_id"] else None,
        state=row["state"],
        attempt=row["attempts"],
        status_code=status,
        error=error,
    )
    await outbox.enqueue(
        conn, event, f"dsc-{row['id']}-g{row['generation']}-a{row['attempts']}-{row['state']}"
    )


async def ensure_deliveries(
    conn: Conn,
    instances: Sequence[uuid.UUID],
    destinations: Sequence[uuid.UUID],
    *,
    resend: bool,
) -> int:
    """Create a queued delivery per (instance, destination) and its send job. With `resend`
    (Forward), finished deliveries are queued again as a new generation; ones in flight are
    left alone. Returns how many were (re)queued."""
    queued = 0
    for destination_id in destinations:
        for instance_id in instances:
            row = await conn.fetchrow(
                """INSERT INTO deliveries (id, instance_id, destination_id, study_id)
                   SELECT $1, i.id, $3, i.study_id FROM outgoing_instances i WHERE i.id = $2
                   ON CONFLICT (instance_id, destination_id) DO NOTHING
                   RETURNING id, instance_id, destination_id, study_id, state, attempts,
                             generation""",
                uuid.uuid4(),
                instance_id,
                destination_id,
            )
            if row is None and resend:
                row = await conn.fetchrow(
                    """UPDATE deliveries SET state = 'queued', attempts = 0,
                           next_attempt_at = now(), generation = generation + 1,
                           last_status = NULL, last_error = NULL, commitment = NULL,
                           commitment_reason = NULL, committed_at = NULL,
                           commitment_requests = 0, updated_at = now()
                       WHERE instance_id = $1 AND destination_id = $2
                         AND state IN ('sent', 'warning', 'failed-permanent')
                       RETURNING id, instance_id, destination_id, study_id, state, attempts,
                                 generation""",
                    instance_id,
                    destination_id,
                )
            if row is None:
                continue
            job, msg_id = send_job(row["id"], row["generation"])
            await outbox.enqueue(_plain(conn), job, msg_id)
            await _announce(conn, dict(row))
            queued += 1
    return queued


async def retry_now(conn: Conn, delivery_id: str) -> DeliveryState | None:
    """Operator's retry: queue the delivery again at once, as a new generation."""
    row = await conn.fetchrow(
        """UPDATE deliveries SET state = CASE WHEN state = 'sending' THEN state ELSE 'queued' END,
               attempts = CASE WHEN state = 'failed-permanent' THEN 0 ELSE attempts END,
               next_attempt_at = now(), generation = generation + 1, updated_at = now()
           WHERE id = $1
           RETURNING id, instance_id, destination_id, study_id, state, attempts, generation""",
        uuid.UUID(delivery_id),
    )
    if row is None:
        return None
    job, msg_id = send_job(row["id"], row["generation"])
    await outbox.enqueue(_plain(conn), job, msg_id)
    await _announce(conn, dict(row))
    state: DeliveryState = row["state"]
    return state


async def forward_done(conn: Conn, job_key: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM forward_requests WHERE job_key = $1", job_key))


async def mark_forward_done(conn: Conn, job_key: str, deliveries: int) -> None:
    await conn.execute(
        "INSERT INTO forward_requests (job_key, deliveries) VALUES ($1, $2)", job_key, deliveries
    )


# -- claiming, leases, results ----------------------------------------------------------------


async def claim_batch(
    pool: asyncpg.Pool, first: DeliveryRow, owner: str, lease_s: float, limit: int
) -> list[DeliveryRow]:
    """Claim `first` and other due deliveries of its destination (same study first) for one
    association. Rows held by a live lease of another sender, or not yet due, are skipped;
    `first` itself must be due."""
    async with pool.acquire() as conn, conn.transaction():
        ids = await conn.fetch(
            """SELECT id FROM deliveries
               WHERE destination_id = $1
                 AND (state IN ('queued', 'failed-retrying') OR
                      (state = 'sending' AND lease_until < now()))
                 AND (next_attempt_at <= now()
                      -- Riders: deliveries that failed only because the destination could not
                      -- be reached (no status came back) go along with any batch to it, so a
                      -- PACS that is back drains its queue over few associations.
                      OR (state = 'failed-retrying' AND last_status IS NULL AND id <> $2))
                 AND (lease_until IS NULL OR lease_until < now())
               ORDER BY (id = $2) DESC, (study_id IS NOT DISTINCT FROM $3) DESC,
                        next_attempt_at, created_at, id
               LIMIT $4
               FOR UPDATE SKIP LOCKED""",
            first.destination_id,
            first.id,
            first.study_id,
            limit,
        )
        if not ids or ids[0]["id"] != first.id:
            return []
        rows = await conn.fetch(
            """UPDATE deliveries SET state = 'sending', lease_owner = $2,
                   lease_until = now() + make_interval(secs => $3), updated_at = now()
               WHERE id = ANY($1::uuid[])
               RETURNING id, instance_id, destination_id, study_id, state, attempts, generation""",
            [r["id"] for r in ids],
            owner,
            lease_s,
        )
        for row in rows:
            await _announce(conn, dict(row))
        claimed = await conn.fetch(
            _DELIVERY_SELECT + " WHERE d.id = ANY($1::uuid[])", [r["id"] for r in ids]
        )
    by_id = {r["id"]: _row(r) for r in claimed}
    return [by_id[r["id"]] for r in ids if r["id"] in by_id]


async def renew_leases(
    pool: asyncpg.Pool, ids: Sequence[uuid.UUID], owner: str, lease_s: float
) -> None:
    await pool.execute(
        """UPDATE deliveries SET lease_until = now() + make_interval(secs => $3)
           WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND state = 'sending'""",
        list(ids),
        owner,
        lease_s,
    )


async def record_result(
    pool: asyncpg.Pool,
    delivery_id: uuid.UUID,
    owner: str,
    *,
    state: DeliveryState,
    status: int | None,
    error: str | None,
    started_at: dt.datetime,
    retry_in_s: float,
    on_stored: OnStored | None = None,
) -> DeliveryState:
    """Record one attempt and the delivery's new state (idempotent for a lost lease: a row that
    another sender took over is left to it). Returns the state now stored. `on_stored` runs in
    the same transaction when the archive acknowledged the instance (sent or warning)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE deliveries SET state = $3, attempts = attempts + 1, last_status = $4,
                   last_error = $5, lease_owner = NULL, lease_until = NULL,
                   next_attempt_at = now() + make_interval(secs => $6),
                   delivered_at = CASE WHEN $3 IN ('sent', 'warning') THEN now() END,
                   updated_at = now()
               WHERE id = $1 AND state = 'sending' AND lease_owner = $2
               RETURNING id, instance_id, destination_id, study_id, state, attempts, generation""",
            delivery_id,
            owner,
            state,
            status,
            error,
            retry_in_s,
        )
        if row is None:
            current = await conn.fetchval("SELECT state FROM deliveries WHERE id = $1", delivery_id)
            stored: DeliveryState = current or state
            return stored
        await conn.execute(
            """INSERT INTO delivery_attempts (delivery_id, attempt, started_at, outcome,
                                              status_code, error, sender)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            delivery_id,
            row["attempts"],
            started_at,
            state,
            status,
            error,
            owner,
        )
        await _announce(conn, dict(row), status=status, error=error)
        if on_stored is not None and state in ("sent", "warning"):
            await on_stored(conn, row["destination_id"], row["study_id"])
        return state


async def overdue(pool: asyncpg.Pool, grace_s: float, limit: int = 500) -> list[asyncpg.Record]:
    """Deliveries that should have been tried `grace_s` ago but were not (a lost or dead-lettered
    job, a sender killed while holding a lease): the sweeper publishes their job again."""
    return list(
        await pool.fetch(
            """SELECT id, generation, attempts FROM deliveries
               WHERE (state IN ('queued', 'failed-retrying')
                      AND next_attempt_at < now() - make_interval(secs => $1))
                  OR (state = 'sending' AND lease_until < now() - make_interval(secs => $1))
               ORDER BY next_attempt_at LIMIT $2""",
            grace_s,
            limit,
        )
    )


async def republish(pool: asyncpg.Pool, rows: Sequence[asyncpg.Record], sweep: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for row in rows:
            job, msg_id = send_job(row["id"], row["generation"], row["attempts"])
            await outbox.enqueue(_plain(conn), job, f"{msg_id}-s{sweep}")


async def queue_stats(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Per destination: unsent count, oldest unsent age (s), failures, for the metrics."""
    return list(
        await pool.fetch(
            """SELECT dst.name,
                      count(d.id) FILTER (WHERE d.state IN ('queued', 'sending',
                                                            'failed-retrying')) AS depth,
                      coalesce(extract(epoch FROM now() - min(d.created_at) FILTER (
                          WHERE d.state IN ('queued', 'sending', 'failed-retrying'))), 0)
                          AS oldest_s,
                      count(d.id) FILTER (WHERE d.state = 'failed-retrying') AS retrying,
                      count(d.id) FILTER (WHERE d.state = 'failed-permanent') AS failed
               FROM destinations dst LEFT JOIN deliveries d ON d.destination_id = dst.id
               GROUP BY dst.name"""
        )
    )


# -- destination reachability -----------------------------------------------------------------


async def destination_retry_at(pool: asyncpg.Pool, destination_id: uuid.UUID) -> dt.datetime | None:
    """When the destination may be tried again after association failures (None: now)."""
    value = await pool.fetchval(
        "SELECT retry_at FROM destination_health WHERE destination_id = $1 AND retry_at > now()",
        destination_id,
    )
    return value if isinstance(value, dt.datetime) else None


async def destination_failed(
    pool: asyncpg.Pool, destination_id: uuid.UUID, error: str, backoff: Any
) -> float:
    """Count one more association failure; returns the delay before the destination's next try
    (`backoff.delay_s(consecutive failures)`)."""
    async with pool.acquire() as conn, conn.transaction():
        failures = await conn.fetchval(
            """INSERT INTO destination_health (destination_id, failures, last_error)
               VALUES ($1, 1, $2)
               ON CONFLICT (destination_id) DO UPDATE
                 SET failures = destination_health.failures + 1, last_error = $2,
                     updated_at = now()
               RETURNING failures""",
            destination_id,
            error,
        )
        delay = float(backoff.delay_s(int(failures)))
        await conn.execute(
            """UPDATE destination_health SET retry_at = now() + make_interval(secs => $2)
               WHERE destination_id = $1""",
            destination_id,
            delay,
        )
    return delay


async def destination_ok(pool: asyncpg.Pool, destination_id: uuid.UUID) -> None:
    await pool.execute(
        """INSERT INTO destination_health (destination_id, failures, last_ok_at)
           VALUES ($1, 0, now())
           ON CONFLICT (destination_id) DO UPDATE
             SET failures = 0, retry_at = NULL, last_ok_at = now(), updated_at = now()""",
        destination_id,
    )
