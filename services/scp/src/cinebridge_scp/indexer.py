"""The index commit of each C-STORE on an event loop of its own, with its own pool.

An association thread waits for its instance's row before answering (ingest.py). On the
service's event loop that wait also queued behind everything else the loop does (the outbox
relay, heartbeats, the bus); here the loop does nothing but index, so the wait is the
statement's own round trip. The row and its outbox event are one statement, committed without
waiting for PostgreSQL's WAL flush (repository.open_index_pool: the fsync'd file is the record,
recover.py rebuilds a lost row). One storescu into the SCP, 500 small instances, alternating
runs at load 9-13 on 2 CPUs: median 12.6 s on the service's loop, 9.6 s here (8 runs each).
"""

from __future__ import annotations

import asyncio
import threading

import asyncpg

from . import repository
from .ingest import Indexer, IndexOutcome, InstanceFacts
from .settings import ScpSettings


class IndexLoop:
    """A thread running an event loop and an index pool; `indexer()` is the Ingest's Indexer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool: asyncpg.Pool | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="scp-index", daemon=True)
        self._thread.start()

    async def open(self, dsn: str) -> None:
        opening = asyncio.run_coroutine_threadsafe(repository.open_index_pool(dsn), self.loop)
        self.pool = await asyncio.wrap_future(opening)

    def indexer(self, settings: ScpSettings) -> Indexer:
        """Waits at most `scp_db_timeout_s` (then the Ingest answers 0xA700)."""
        pool = self.pool
        assert pool is not None

        def index(facts: InstanceFacts) -> IndexOutcome:
            coro = repository.index_instance(pool, facts, settings.scp_duplicates)
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            try:
                return future.result(settings.scp_db_timeout_s)
            except TimeoutError:
                future.cancel()
                raise

        return index

    async def close(self, timeout_s: float = 5.0) -> None:
        if self.pool is not None:
            closing = asyncio.run_coroutine_threadsafe(self._close_pool(timeout_s), self.loop)
            await asyncio.wrap_future(closing)
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, timeout_s)
        if not self._thread.is_alive():
            self.loop.close()

    async def _close_pool(self, timeout_s: float) -> None:
        assert self.pool is not None
        try:
            await asyncio.wait_for(self.pool.close(), timeout_s)
        except TimeoutError:
            self.pool.terminate()
