"""SQL of `cinebridge send`: the destination asked for, and the deliveries of handed-in instances.

Read through the views the sender publishes as its read model (services/sender/README.md).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


async def destination_name(pool: asyncpg.Pool, destination_id: uuid.UUID) -> str | None:
    name: str | None = await pool.fetchval(
        "SELECT name FROM destination_names WHERE id = $1", destination_id
    )
    return name


async def deliveries_of(pool: asyncpg.Pool, instance_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT d.id AS delivery_id, d.instance_id, d.destination_id,
                  d.destination_name, d.state, d.attempts, d.last_status,
                  d.last_error, d.delivered_at
           FROM delivery_states d
           WHERE d.instance_id = ANY($1::uuid[])
           ORDER BY d.instance_id, d.destination_name""",
        instance_ids,
    )
    return [dict(r) for r in rows]
