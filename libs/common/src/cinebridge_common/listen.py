"""One PostgreSQL LISTEN connection that comes back by itself after the server restarts.

A NOTIFY reaches only the sessions listening when it is delivered: while the LISTEN connection
is away (PostgreSQL restarted, the backend terminated), notifications are lost. `PgListener`
keeps one pooled connection listening on a set of channels; its owner calls `ensure()` at the
top of each pass, which listens again on a fresh connection when the old one is gone and says
so, so that the owner looks at its table once instead of trusting notifications it may have
missed (docs/reliability.md §2 and §4). The loss itself wakes the owner (`on_lost`), so it does
not wait for its poll interval to find out.

A pooled connection whose server went away is detached from its proxy by asyncpg: the proxy's
`is_closed()` then raises `InterfaceError` ("released back to the pool") instead of answering,
which counts here as lost, not as a failed pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from .logging import kv

log = logging.getLogger(__name__)

#: A notification callback as asyncpg calls it: (connection, backend pid, channel, payload).
Callback = Callable[[Any, int, str, Any], None]


class PgListener:
    """LISTEN on `channels` (channel -> callback) over one pooled connection, re-established
    by `ensure()` after it is lost; `on_lost` is called (from the event loop) when it is."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: Mapping[str, Callback],
        *,
        on_lost: Callable[[], None] | None = None,
        name: str = "listener",
    ) -> None:
        self.pool = pool
        self.channels = dict(channels)
        self.on_lost = on_lost
        self.name = name
        self._conn: Any = None
        #: How many times the connection was (re)established: 1 after the first `ensure()`.
        self.connects = 0

    @property
    def listening(self) -> bool:
        return self._conn is not None and not _closed(self._conn)

    async def ensure(self) -> bool:
        """Listen if not listening; True when a connection was (re)established by this call
        (notifications sent meanwhile are lost: the caller looks again). Raises the database's
        error when PostgreSQL is still away; the caller retries with its backoff."""
        if self.listening:
            return False
        if self._conn is not None:
            await self._drop()
        conn = await self.pool.acquire()
        try:
            for channel, callback in self.channels.items():
                await conn.add_listener(channel, callback)
            conn.add_termination_listener(self._terminated)
        except BaseException:
            await self._release(conn)
            raise
        self._conn = conn
        self.connects += 1
        if self.connects > 1:
            log.info("listening again", extra=kv(listener=self.name, connects=self.connects))
        return True

    async def close(self) -> None:
        await self._drop()

    def _terminated(self, _conn: object) -> None:
        log.warning("listen connection lost", extra=kv(listener=self.name))
        if self.on_lost is not None:
            self.on_lost()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._terminated)
        if not _closed(conn):
            for channel, callback in self.channels.items():
                with contextlib.suppress(Exception):
                    await conn.remove_listener(channel, callback)
        await self._release(conn)

    async def _release(self, conn: Any) -> None:
        # A release may wait on a connection the server no longer answers: bounded.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.release(conn), 5.0)


def _closed(conn: Any) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True  # the pool took the proxy back: its connection died
