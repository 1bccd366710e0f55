"""Transactional outbox: a state change and the message announcing it commit together.

`enqueue(conn, msg, msg_id)` inside the caller's transaction; `OutboxRelay` publishes pending
rows with `Nats-Msg-Id = msg_id`, waits for the PubAck, then marks them published. A crash
between commit and publish leaves the row pending; the relay of any instance publishes it later
(docs/reliability.md §2, crash window 3: a re-publish within the duplicate window is deduplicated,
later ones are absorbed by idempotent consumers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from .bus import Bus
from .db import Connection
from .logging import kv
from .messages.base import Message

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "cb_outbox"


async def enqueue(conn: Connection, msg: Message, msg_id: str) -> None:
    """Add `msg` to the outbox in the caller's transaction (idempotent by msg_id)."""
    await conn.execute(
        """INSERT INTO outbox (msg_id, subject, payload) VALUES ($1, $2, $3)
           ON CONFLICT (msg_id) DO NOTHING""",
        msg_id,
        msg.subject_for(),
        msg.to_bytes(),
    )
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


class OutboxRelay:
    """Publishes pending outbox rows. Several relays may run: rows are claimed SKIP LOCKED."""

    def __init__(
        self, pool: asyncpg.Pool, bus: Bus, *, poll_s: float = 1.0, batch: int = 100
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.poll_s = poll_s
        self.batch = batch
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        listener: Any = None  # a pooled connection kept for LISTEN

        def wake(*_: object) -> None:
            self._wake.set()

        try:
            with contextlib.suppress(Exception):
                listener = await self.pool.acquire()
                await listener.add_listener(NOTIFY_CHANNEL, wake)
            while not stop.is_set():
                try:
                    published = await self.publish_pending()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("outbox relay: database unavailable", extra=kv(error=repr(exc)))
                    published = 0
                if published >= self.batch:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(NOTIFY_CHANNEL, wake)
                    await self.pool.release(listener)

    async def publish_pending(self) -> int:
        """Publish up to `batch` pending rows in order; returns how many were published.

        The messages go out pipelined (in row order on the wire, PubAcks awaited after), and
        the rows acknowledged up to the first failure are marked in one statement: two round
        trips per batch instead of two per row. A row after a failure is published again on the
        next pass; JetStream drops the copy by its Nats-Msg-Id within the duplicate window.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, msg_id, subject, payload FROM outbox
                   WHERE published_at IS NULL ORDER BY id
                   LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self.batch,
            )
            sent: list[tuple[Any, asyncio.Future[Any]]] = []
            failure: tuple[Any, BaseException] | None = None
            for row in rows:
                try:
                    ack = await self.bus.js.publish_async(
                        row["subject"], row["payload"], headers={"Nats-Msg-Id": row["msg_id"]}
                    )
                except Exception as exc:
                    failure = (row, exc)
                    break
                sent.append((row, ack))
            published: list[int] = []
            for index, (row, ack) in enumerate(sent):
                try:
                    await asyncio.wait_for(ack, 5.0)
                except Exception as exc:
                    failure = (row, exc)
                    for _, later in sent[index + 1 :]:
                        later.cancel()
                    break
                published.append(row["id"])
            if published:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    published,
                )
            if failure is not None:
                failed_row, error = failure
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                    failed_row["id"],
                    repr(error)[:500],
                )
                log.warning(
                    "outbox publish failed",
                    extra=kv(msg_id=failed_row["msg_id"], error=repr(error)),
                )
        return len(published)
