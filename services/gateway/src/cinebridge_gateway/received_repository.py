"""The gateway's reads of the SCP's published read model (`received_totals`) for the ops page."""

from __future__ import annotations

from typing import Any

import asyncpg


async def received_counts(pool: asyncpg.Pool) -> dict[str, Any] | None:
    """Instances received in all and in the last day."""
    row = await pool.fetchrow("SELECT instances, last_24h FROM received_totals")
    return dict(row) if row else None
