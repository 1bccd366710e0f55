"""Work lost with NATS's JetStream store is published again from the outbox (reliability §4).

A NATS server back without its store (a new volume, a lost disk) has empty streams: the bus
makes them again, but a message published before and not yet consumed is gone with the old
store, and its job or event never happens (a saved item never converted, a converted one never
queued for sending). PostgreSQL still holds the message: its outbox row, kept
`CB_OUTBOX_RETENTION_S`. The owner of each step knows whether that step happened, so each
service names, per subject it consumes, the SQL condition that holds once the message's work was
done (`LostWork`). A row published *before its stream was created* cannot be in the stream; if
its work is not done it is marked pending again, and the relay publishes it under its own
Nats-Msg-Id, so consumers (idempotent by natural key) see it once more. Rows published into the
current stream are never touched: a message waiting in a healthy stream is not doubled, and a
replayed row, published anew, is not replayed again.

The stream's creation time is the NATS server's clock and `published_at` PostgreSQL's: both
run on the station's host (on two hosts, their clocks must agree to within the outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from .logging import kv

log = logging.getLogger(__name__)

#: Rows marked pending again per statement (the relay publishes them in batches).
BATCH = 500


@dataclass(frozen=True)
class LostWork:
    """One consumed subject and how its owner tells that a message's work was done."""

    #: The stream that holds the subject (its creation time bounds what may be lost).
    stream: str
    subject: str
    #: SQL condition on `o` (the outbox row) and `body` (its payload as jsonb), true once the
    #: message's work was done, or when there is nothing left to do.
    done: str


def body_uuid(field: str) -> str:
    """SQL for the payload's `field` as a uuid, NULL when it is not one (a `done` condition
    then matches an index instead of casting every row's key to text)."""
    return (
        f"(CASE WHEN body->>'{field}' ~* "
        f"'^[0-9a-f]{{8}}-([0-9a-f]{{4}}-){{3}}[0-9a-f]{{12}}$' "
        f"THEN (body->>'{field}')::uuid END)"
    )


def _replay_sql(rule: LostWork) -> str:
    return f"""
        WITH lost AS (
            SELECT o.id FROM outbox o,
                   LATERAL (SELECT convert_from(o.payload, 'UTF8')::jsonb AS body) AS b
            WHERE o.subject = $1 AND o.published_at < $2 AND NOT ({rule.done})
            ORDER BY o.id LIMIT $3 FOR UPDATE OF o SKIP LOCKED
        )
        UPDATE outbox SET published_at = NULL, attempts = attempts + 1,
                          last_error = 'lost with the JetStream store; published again'
        FROM lost WHERE outbox.id = lost.id RETURNING outbox.id"""


async def replay_lost(pool: asyncpg.Pool, js: JetStreamContext, rules: Sequence[LostWork]) -> int:
    """One pass: mark pending again every row of `rules` lost with its stream; returns how many.
    A stream not made again yet is skipped (the bus makes it; the next pass looks)."""
    created: dict[str, dt.datetime | None] = {}
    replayed = 0
    for rule in rules:
        if rule.stream not in created:
            try:
                created[rule.stream] = (await js.stream_info(rule.stream)).created
            except NotFoundError:
                created[rule.stream] = None
        since = created[rule.stream]
        if since is None:
            continue
        while True:
            rows = await pool.fetch(_replay_sql(rule), rule.subject, since, BATCH)
            replayed += len(rows)
            if rows:
                log.warning(
                    "work lost with the stream published again",
                    extra=kv(subject=rule.subject, rows=len(rows), stream=rule.stream),
                )
            if len(rows) < BATCH:
                break
    return replayed


async def run_replays(
    pool: asyncpg.Pool,
    js: JetStreamContext,
    rules: Sequence[LostWork],
    *,
    wake: asyncio.Event,
    stop: asyncio.Event,
    interval_s: float,
) -> None:
    """A pass at once (a service started after the loss), then whenever `wake` is set (the bus
    reconnected or found a stream missing) and every `interval_s` (a loss this process did
    not see).
    Errors propagate to the caller's supervisor, which retries with backoff."""
    while not stop.is_set():
        wake.clear()
        await replay_lost(pool, js, rules)
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
