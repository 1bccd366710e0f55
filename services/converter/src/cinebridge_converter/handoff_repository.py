"""SQL of `cinebridge convert --send`: while it waits for a handed-in file's delivery, the
converter reads the sender's published read model (`sender_instances`, `delivery_states` of
`R_sender_read_model.sql`, docs/architecture.md), never the sender's tables."""

from __future__ import annotations

import uuid

import asyncpg


async def recorded_count(pool: asyncpg.Pool, instance_ids: list[uuid.UUID]) -> int:
    """How many of the instances the sender has recorded."""
    count = await pool.fetchval(
        "SELECT count(*) FROM sender_instances WHERE id = ANY($1::uuid[])", instance_ids
    )
    return int(count or 0)


async def delivery_states(
    pool: asyncpg.Pool, destination_id: uuid.UUID, instance_ids: list[uuid.UUID]
) -> dict[str, tuple[str, str | None]]:
    """Instance id → (state, last error) of its delivery to the destination, where one exists."""
    rows = await pool.fetch(
        """SELECT instance_id, state, last_error FROM delivery_states
           WHERE destination_id = $1 AND instance_id = ANY($2::uuid[])""",
        destination_id,
        instance_ids,
    )
    return {str(r["instance_id"]): (r["state"], r["last_error"]) for r in rows}
