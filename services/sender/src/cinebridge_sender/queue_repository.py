"""The sender's queue is its `deliveries` table: the SQL that claims due deliveries of a
destination under a lease (`FOR UPDATE SKIP LOCKED`, so the workers of several sender processes
share a destination without sending a row twice at once), renews the lease, records each
attempt, and says when the destination's next delivery falls due.

A claimable delivery is `queued` or `failed-retrying` with no live lease, or `sending` with an
expired one (its sender died: the lease is how its rows come back).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
from cinebridge_common.messages.sender import DeliveryState

from .repository import _DELIVERY_SELECT, DeliveryRow, OnStored, _announce, _row

#: Deliveries a worker may take (no live lease of another sender).
_CLAIMABLE = """destination_id = $1
    AND (state IN ('queued', 'failed-retrying') OR (state = 'sending' AND lease_until < now()))
    AND (lease_until IS NULL OR lease_until < now())"""


async def claim_due(
    pool: asyncpg.Pool, destination_id: uuid.UUID, owner: str, lease_s: float, limit: int
) -> list[DeliveryRow]:
    """Claim the destination's earliest due delivery and up to `limit` - 1 others for one
    association (its study first). Empty when nothing is due or another sender holds it all."""
    async with pool.acquire() as conn, conn.transaction():
        head = await conn.fetchrow(
            f"""SELECT id, study_id FROM deliveries
                WHERE {_CLAIMABLE} AND next_attempt_at <= now()
                ORDER BY next_attempt_at, created_at, id
                LIMIT 1 FOR UPDATE SKIP LOCKED""",
            destination_id,
        )
        if head is None:
            return []
        ids = await conn.fetch(
            f"""SELECT id FROM deliveries
                WHERE {_CLAIMABLE}
                  AND (next_attempt_at <= now()
                       -- Riders: deliveries that failed only because the destination could not
                       -- be reached (no status came back) go along with any batch to it, so a
                       -- PACS that is back drains its queue over few associations.
                       OR (state = 'failed-retrying' AND last_status IS NULL))
                ORDER BY (id = $2) DESC, (study_id IS NOT DISTINCT FROM $3) DESC,
                         next_attempt_at, created_at, id
                LIMIT $4
                FOR UPDATE SKIP LOCKED""",
            destination_id,
            head["id"],
            head["study_id"],
            limit,
        )
        keys = [r["id"] for r in ids]
        rows = await conn.fetch(
            """UPDATE deliveries SET state = 'sending', lease_owner = $2,
                   lease_until = now() + make_interval(secs => $3), updated_at = now()
               WHERE id = ANY($1::uuid[])
               RETURNING id, instance_id, destination_id, study_id, state, attempts, generation""",
            keys,
            owner,
            lease_s,
        )
        for row in rows:
            await _announce(conn, dict(row))
        claimed = await conn.fetch(_DELIVERY_SELECT + " WHERE d.id = ANY($1::uuid[])", keys)
    by_id = {r["id"]: _row(r) for r in claimed}
    return [by_id[key] for key in keys if key in by_id]


async def next_due(pool: asyncpg.Pool, destination_id: uuid.UUID) -> dt.datetime | None:
    """When the destination's next delivery may be claimed: the earliest retry time, or the end
    of a lease held elsewhere (a sender that dies gives its rows back then). None: nothing left."""
    value = await pool.fetchval(
        """SELECT min(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt_at
                           THEN lease_until ELSE next_attempt_at END)
           FROM deliveries
           WHERE destination_id = $1 AND state IN ('queued', 'failed-retrying', 'sending')""",
        destination_id,
    )
    return value if isinstance(value, dt.datetime) else None


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
