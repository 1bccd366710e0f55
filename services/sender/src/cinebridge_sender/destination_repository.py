"""The sender's SQL of destinations: their records (secrets included, read only to send) and
their reachability (`destination_health`: a destination that cannot be reached rests as a whole
with backoff, one association attempt per round)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from cinebridge_common.messages import Destination

from .repository import DESTINATION_COLUMNS, Conn, Db, destination_of, uuid_or_none


async def list_destinations(conn: Db) -> list[Destination]:
    rows = await conn.fetch(f"SELECT {DESTINATION_COLUMNS} FROM destinations ORDER BY name")
    return [destination_of(r) for r in rows]


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
                WHERE id = $1 RETURNING {DESTINATION_COLUMNS}""",
            uuid.UUID(d.id),
            *values,
        )
        if row is None:
            raise LookupError(f"destination {d.id} does not exist")
        return destination_of(row)
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
            RETURNING {DESTINATION_COLUMNS}""",
        uuid.uuid4(),
        *values,
    )
    assert row is not None
    return destination_of(row)


async def delete_destination(conn: Db, destination_id: str) -> bool:
    result = await conn.execute("DELETE FROM destinations WHERE id = $1", uuid.UUID(destination_id))
    return bool(result.endswith(" 1"))


async def existing_destination_ids(conn: Conn, wanted: Sequence[str]) -> list[uuid.UUID]:
    """The named destinations that still exist (one deleted since is simply not sent to)."""
    keys = [key for key in map(uuid_or_none, wanted) if key is not None]
    rows = await conn.fetch(
        "SELECT id FROM destinations WHERE id = ANY($1::uuid[]) ORDER BY name", keys
    )
    return [r["id"] for r in rows]


async def auto_send_destination_ids(conn: Conn) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT id FROM destinations WHERE enabled AND auto_send ORDER BY name")
    return [r["id"] for r in rows]


async def enabled_destination_ids(conn: Db) -> list[uuid.UUID]:
    """The destinations the queue sends to (a disabled one keeps its deliveries waiting)."""
    rows = await conn.fetch("SELECT id FROM destinations WHERE enabled ORDER BY name")
    return [r["id"] for r in rows]


# -- reachability -----------------------------------------------------------------------------


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
