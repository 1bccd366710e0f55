"""SQL of the station settings, which the gateway owns: its settings page is their one editor.
Every service reads them with `cinebridge_common.station.load_station_settings`."""

from __future__ import annotations

from typing import Any

import asyncpg
from cinebridge_common.db import Connection
from cinebridge_common.station import StationSettings, load_station_settings


async def save_station_settings(
    conn: asyncpg.Pool | Connection, changes: dict[str, Any], by: str | None
) -> StationSettings:
    merged = (await load_station_settings(conn)).model_copy(update=changes)
    StationSettings.model_validate(merged.model_dump())  # re-validate the merged values
    for key, value in changes.items():
        await conn.execute(
            """INSERT INTO station_settings (key, value, updated_by) VALUES ($1, $2, $3)
               ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now(),
                                               updated_by = EXCLUDED.updated_by""",
            key,
            value,
            by,
        )
    return merged
