"""Transactional outbox: a state change and the message announcing it commit together.

`enqueue(conn, msg, msg_id)` inside the caller's transaction; `OutboxRelay` publishes pending
rows with `Nats-Msg-Id = msg_id`, waits for the PubAck, then marks them published. A crash
between commit and publish leaves the row pending; the relay of any instance publishes it later
(docs/reliability.md §2, crash window 3: a re-publish within the duplicate window is deduplicated,
later ones are absorbed by idempotent consumers). Published rows are deleted after a retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from .bus import Bus
from .db import Connection
from .listen import PgListener
from .logging import kv
from .messages.base import Message
from .supervise import backoff_delay

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
    # The notification names the enqueuing process's kind (its session's application_name,
    # `ServiceContext` sets it): that service's relays wake at once, the others leave the row
    # to them (OutboxRelay.wakes_for). A session without a name wakes every relay.
    await conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', current_setting('application_name'))")


class OutboxRelay:
    """Publishes pending outbox rows. Several relays may run: rows are claimed SKIP LOCKED.

    Published rows are deleted once older than `retention_s` (kept a while for inspection and
    so a late duplicate check can still find them), so the table stays bounded.

    A relay with a `name` (its pool's application_name) wakes for the notifications of its own
    service and of unnamed sessions only: every service runs a relay, and each enqueue woke all
    of them, each pass a transaction that finds the rows taken, several per row, on the same
    cores as the work. Another service's row still goes at once (its own relay) or, with that
    relay gone, within `poll_s` (any relay's next look).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        *,
        poll_s: float = 1.0,
        batch: int = 100,
        retention_s: float = 24 * 3600.0,
        purge_every_s: float = 300.0,
        name: str = "",
        hold_limit_s: float = 60.0,
    ) -> None:
        self.pool = pool
        #: The longest a pass may sit idle in its transaction with rows claimed (waiting for
        #: PubAcks takes seconds at most): PostgreSQL ends the session of a relay that stalls
        #: longer (a frozen or hung process), so that its rows go through the other relays
        #: instead of waiting for it.
        self.hold_limit_s = hold_limit_s
        self.name = name
        self.bus = bus
        self.poll_s = poll_s
        self.batch = batch
        self.retention_s = retention_s
        self.purge_every_s = purge_every_s
        self._wake = asyncio.Event()
        self._next_purge = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop`. Any error of the database or the bus (asyncpg's
        InternalClientError after a connection died mid-COMMIT included) is caught here, logged
        once per outage, and the pass is retried with backoff; the relay never ends early."""

        def wake(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            if self.wakes_for(payload):
                self._wake.set()

        # A lost LISTEN connection (a PostgreSQL restart) wakes the relay to listen again and
        # look at once, instead of after `poll_s`.
        listener = PgListener(
            self.pool, {NOTIFY_CHANNEL: wake}, on_lost=self._wake.set, name="outbox-relay"
        )
        failures = 0
        # Stopping wakes the idle wait too (the poll interval may be long).
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                try:
                    await listener.ensure()
                    # Cleared before the pass, not after: a NOTIFY of a row committed while
                    # the pass runs (after its SELECT) must wake the next pass at once, not
                    # be cleared with the ones the pass served and wait for `poll_s`.
                    self._wake.clear()
                    published = await self.publish_pending()
                    await self._purge_published()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        log.warning("outbox relay: pass failed", extra=kv(error=repr(exc)))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff_delay(failures, 0.25, 5.0))
                    continue
                if failures:
                    log.info("outbox relay: recovered", extra=kv(failed_passes=failures))
                    failures = 0
                if published >= self.batch:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
        finally:
            stopping.cancel()
            await listener.close()

    def wakes_for(self, notifier: str) -> bool:
        """Whether a notification from a session named `notifier` wakes this relay."""
        return not self.name or not notifier or notifier == self.name

    async def _purge_published(self) -> int:
        """Delete published rows older than the retention, at most every `purge_every_s`."""
        now = asyncio.get_running_loop().time()
        if now < self._next_purge:
            return 0
        status = await self.pool.execute(
            """DELETE FROM outbox WHERE published_at IS NOT NULL
                 AND published_at < now() - make_interval(secs => $1)""",
            self.retention_s,
        )
        self._next_purge = now + self.purge_every_s
        deleted = int(status.split()[-1])
        if deleted:
            log.info("outbox: published rows purged", extra=kv(rows=deleted))
        return deleted

    async def _claim(self, conn: Connection) -> list[Any]:
        """Lock up to `batch` pending rows, in order, for this pass."""
        return list(
            await conn.fetch(
                """SELECT id, msg_id, subject, payload FROM outbox
                   WHERE published_at IS NULL ORDER BY id
                   LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self.batch,
            )
        )

    async def publish_pending(self) -> int:
        """Publish up to `batch` pending rows in order; returns how many were published.

        The messages go out pipelined (in row order on the wire, PubAcks awaited after), and
        the rows acknowledged up to the first failure are marked in one statement: two round
        trips per batch instead of two per row. A row after a failure is published again on the
        next pass; JetStream drops the copy by its Nats-Msg-Id within the duplicate window.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
                f"{int(self.hold_limit_s * 1000)}ms",
            )
            rows = await self._claim(conn)
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
                # The time of the PubAck, not of the pass's start (now()): a row is known lost
                # with its stream only when it was published before the stream was made (replay).
                await conn.execute(
                    "UPDATE outbox SET published_at = clock_timestamp()"
                    " WHERE id = ANY($1::bigint[])",
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
