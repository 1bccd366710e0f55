"""The gateway's reads of the SCP's index (`received_*`, which the SCP owns) for the ops page."""

from __future__ import annotations

from typing import Any

import asyncpg


async def received_counts(pool: asyncpg.Pool) -> dict[str, Any] | None:
    """Instances received in all and in the last day."""
    row = await pool.fetchrow(
        "SELECT count(*) AS instances, count(*) FILTER (WHERE received_at > now() - interval "
        "'1 day') AS last_24h FROM received_instances"
    )
    return dict(row) if row else None
