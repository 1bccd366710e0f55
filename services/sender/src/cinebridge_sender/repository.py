"""What the sender's SQL modules share: the connection types, a destination's record, one
delivery row with its instance, and the `DeliveryStateChanged` each state change of a delivery
enqueues in its own transaction (transactional outbox).

The rest of the sender's SQL sits beside it by responsibility: `destination_repository`
(destinations and their reachability), `delivery_repository` (instances, new deliveries,
Forward and retry), `queue_repository` (claiming due deliveries under a lease and recording
each attempt) and `commitment_repository` (Storage Commitment).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cinebridge_common import outbox
from cinebridge_common.messages import DeliveryStateChanged, Destination

#: A connection, whether taken from the pool or not.
Conn = asyncpg.Connection | PoolConnectionProxy
#: A pool or a connection: for single statements.
Db = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy

TERMINAL = ("sent", "warning", "failed-permanent")
#: Called in the transaction that records a delivery as stored: (conn, destination, study).
OnStored = Callable[[Conn, uuid.UUID, uuid.UUID | None], Awaitable[object]]


DESTINATION_COLUMNS = (
    "id, name, kind, ae_title, host, port, calling_ae_title, tls, profile, enabled, auto_send, "
    "max_associations, base_url, auth, username, secret IS NOT NULL AS secret_set, tls_verify, "
    "ca_file, commitment_required, commitment_timeout_s, commitment_retries"
)


def destination_of(row: asyncpg.Record) -> Destination:
    data = dict(row)
    data["id"] = str(data["id"])
    return Destination.model_validate(data)


async def get_destination(conn: Db, destination_id: str) -> Destination | None:
    row = await conn.fetchrow(
        f"SELECT {DESTINATION_COLUMNS} FROM destinations WHERE id = $1", uuid.UUID(destination_id)
    )
    return destination_of(row) if row else None


def uuid_or_none(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


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
