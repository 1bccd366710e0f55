"""What every part of the gateway's repository shares: the pool, and which other services'
read models exist yet (another service may create its view after the gateway started)."""

from __future__ import annotations

import asyncpg
from cinebridge_common.db import Connection

Conn = asyncpg.Pool | Connection


class RepositoryBase:
    def __init__(self, pool: asyncpg.Pool, search_pool: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        #: The LOCAL search's own connections (`catalog_repository.open_search_pool`).
        self.search_pool = search_pool or pool
        self._tables: dict[str, bool] = {}

    async def has_table(self, name: str) -> bool:
        # Only a True answer is remembered: another service may create the table later.
        if not self._tables.get(name):
            found = await self.pool.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
            self._tables[name] = bool(found)
        return self._tables[name]
