"""The CineBridge bus over nats-py: typed publish/request/serve, durable JetStream consumers.

One `Bus` object over three modules: `streams` (stream specifications, `BusError`),
`consumers` (durable consumers, their fetch loop, dead letters) and `rpc` (request/reply of any
size); this module keeps the connection, publishing and the public import paths.

Guarantees (docs/reliability.md §3): reconnect never gives up; every JetStream publish carries a
`Nats-Msg-Id` and waits for its PubAck (retried with the same id); consumers are durable pull
consumers with a finite `max_deliver`, ack after the work, nak with a delay on transient errors,
`in_progress` heartbeats for long work, and a dead letter (with the reason) in the JetStream DLQ
when a message is given up. Consume loops are supervised: one that fails or ends is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from . import rpc, streams
from .consumers import (
    HANDLE_SECONDS,
    HANDLED,
    Delivery,
    Poison,
    Retry,
    apply_consumer,
    consume_loop,
)
from .consumers import ConsumerSpec as ConsumerSpec  # re-exported: part of the bus API
from .logging import kv
from .messages.base import Message, Reply, Request
from .streams import DEFAULT_STREAMS, DLQ, EVENTS, JOBS, BusError, StreamSpec
from .supervise import cancel_and_wait, supervised

#: The bus API in one place: streams, consumers and RPC live in their modules.
__all__ = [
    "DEFAULT_STREAMS",
    "DLQ",
    "EVENTS",
    "HANDLED",
    "HANDLE_SECONDS",
    "JOBS",
    "Bus",
    "BusError",
    "ConsumerSpec",
    "Delivery",
    "Poison",
    "Retry",
    "StreamSpec",
]

log = logging.getLogger(__name__)

#: JetStream's error code for "stream not found".
STREAM_NOT_FOUND = 10059

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Reply)
Q = TypeVar("Q", bound=Request)


class Bus:
    """One NATS connection with JetStream, typed for CineBridge messages."""

    def __init__(self, nc: NatsClient, name: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.name = name
        self._consumer_restarts = [0]
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        #: The streams this bus ensured, made again when the server lost them (below).
        self._streams: dict[str, StreamSpec] = {}
        #: Set each time the bus made sure of its streams after a reconnect or a missing
        #: stream: a server back without its store lost what was in them, which may need
        #: publishing again (`cinebridge_common.replay`). The process that made the streams
        #: again is not the only one whose work was lost.
        self.streams_restored = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        connect_timeout_s: float = 5.0,
    ) -> Bus:
        """Connect; reconnects forever afterwards (nats.py gives up after ~2 min by default)."""

        bus: list[Bus] = []  # the reconnect callback's way to the object made below
        # While NATS is away every reconnect attempt (one a second) reports an error: the first
        # of a streak is logged, the rest are debug lines until the connection is back.
        errors_in_streak = [0]

        async def on_error(exc: Exception) -> None:
            errors_in_streak[0] += 1
            level = logging.WARNING if errors_in_streak[0] == 1 else logging.DEBUG
            log.log(level, "nats error", extra=kv(error=repr(exc)))

        async def on_disconnect() -> None:
            log.warning("nats disconnected", extra=kv(name=name))

        async def on_reconnect() -> None:
            errors_in_streak[0] = 0
            log.info("nats reconnected", extra=kv(name=name))
            if bus:
                # A server back without its JetStream store (a new volume, a lost disk) has
                # none of the streams: make them again before the relay and consumers need
                # them (consumers are recreated by their fetch loops, `consumers.consume_loop`).
                bus[0].spawn_restore_streams()

        try:
            # With unlimited reconnects nats-py also retries the first connection forever;
            # bounded here, so that a caller waiting for NATS can say it is away.
            nc = await asyncio.wait_for(
                nats.connect(
                    url,
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=connect_timeout_s,
                    allow_reconnect=True,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                connect_timeout_s + 1.0,
            )
        except Exception as exc:
            raise BusError(f"cannot connect to NATS at {url}: {exc!r}") from exc
        bus.append(cls(nc, name))
        return bus[0]

    # -- streams -------------------------------------------------------------------------
    async def ensure_streams(self, specs: Sequence[StreamSpec] = DEFAULT_STREAMS) -> None:
        """Create or update streams (`streams.ensure_streams`); remembered, so that they are
        made again when the server comes back without them."""
        self._streams.update((spec.name, spec) for spec in specs)
        await streams.ensure_streams(self.js, specs)

    async def restore_streams(self) -> None:
        """Make the remembered streams again where the server lost them (idempotent)."""
        if self._streams:
            made = await streams.ensure_streams(self.js, list(self._streams.values()))
            if made:
                log.warning("streams made again", extra=kv(streams=",".join(made)))
            self.streams_restored.set()

    def spawn_restore_streams(self) -> None:
        async def restore() -> None:
            try:
                await self.restore_streams()
            except Exception as exc:  # the next reconnect, publish or consumer tries again
                log.warning("streams not restored", extra=kv(error=repr(exc)))

        task = asyncio.create_task(restore(), name="restore-streams")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- publishing ----------------------------------------------------------------------
    async def publish(
        self, msg: Message, *, msg_id: str | None = None, timeout_s: float = 5.0, attempts: int = 5
    ) -> PubAck:
        """Publish durably and wait for the PubAck; retries keep the same Nats-Msg-Id."""
        subject = msg.subject_for()
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        payload = msg.to_bytes()
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                return await self.js.publish(subject, payload, timeout=timeout_s, headers=headers)
            except (nats.errors.NoRespondersError, NoStreamResponseError) as exc:
                # No stream takes the subject: the server may have come back without its store.
                last = exc
                with contextlib.suppress(Exception):
                    await self.restore_streams()
                await asyncio.sleep(min(0.2 * 2**attempt, 3.0))
            except (NatsTimeoutError, nats.errors.ConnectionClosedError) as exc:
                last = exc
                await asyncio.sleep(min(0.2 * 2**attempt, 3.0))
        raise BusError(f"publish to {subject} not acknowledged after {attempts} tries: {last!r}")

    async def publish_core(self, msg: Message) -> None:
        """Fire-and-forget (heartbeats, progress): loss is harmless, the next one follows."""
        with contextlib.suppress(Exception):
            await self.nc.publish(msg.subject_for(), msg.to_bytes())

    # -- request/reply -------------------------------------------------------------------
    async def request(self, msg: Request, reply_type: type[R], timeout_s: float = 10.0) -> R:
        """Any size of reply: one larger than a bus message arrives in chunks (`rpc`). A reply
        that says the service is unavailable raises `BusError` with its reason."""
        data = await self.request_bytes(msg, timeout_s)
        try:
            return await rpc.decode(reply_type, data)
        except rpc.ReplyError as exc:
            raise BusError(str(exc)) from exc

    async def request_bytes(self, msg: Request, timeout_s: float = 10.0) -> bytes:
        """The reply's JSON as it came, for a caller that decodes a large reply its own way."""
        try:
            return await rpc.request(self.nc, msg.subject_for(), msg.to_bytes(), timeout_s)
        except rpc.ReplyError as exc:
            raise BusError(str(exc)) from exc

    async def serve(
        self,
        request_type: type[Q],
        handler: Callable[[Q], Awaitable[Reply]],
        *,
        subject: str | None = None,
        queue: str | None = None,
        concurrency: int = 1,
    ) -> None:
        """Answer requests of one type; a handler error becomes Reply(ok=False, error=reason).

        nats-py runs one subscription's callbacks one after another; `concurrency` > 1 answers
        up to that many requests at once (e.g. slow outside peers: one room's worklist query
        must not wait for another's), further requests wait for a free slot.
        """
        sub = await rpc.serve(
            self.nc,
            subject or request_type.wildcard(),
            queue or self.name,
            request_type,
            handler,
            concurrency,
            self._tasks,
        )
        self._subs.append(sub)

    async def subscribe_events(
        self, subject: str, handler: Callable[[Msg], Awaitable[None]]
    ) -> Any:
        """Core subscription (not durable): live views such as the gateway's SSE stream."""
        sub = await self.nc.subscribe(subject, cb=handler)
        self._subs.append(sub)
        await self.nc.flush()  # live at the server when this returns (see serve)
        return sub

    # -- durable consumers ---------------------------------------------------------------
    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable, or bring an existing one to `spec` (`consumers.apply_consumer`:
        updated in place, or recreated from its ack floor when the server refuses)."""
        try:
            await apply_consumer(self.js, spec)
        except APIError as exc:
            if exc.err_code != STREAM_NOT_FOUND or spec.stream not in self._streams:
                raise BusError(f"cannot create consumer {spec.durable}: {exc}") from exc
            # Its stream is gone (a server back without its store): make it, then the durable.
            try:
                await self.restore_streams()
                await apply_consumer(self.js, spec)
            except APIError as again:
                raise BusError(f"cannot create consumer {spec.durable}: {again}") from again

    @property
    def consumer_restarts(self) -> int:
        """How often a consume task failed or ended and was started again (health detail)."""
        return self._consumer_restarts[0]

    def start_consumer(
        self,
        spec: ConsumerSpec,
        model: type[M],
        handler: Callable[[M, Delivery], Awaitable[None]],
    ) -> list[asyncio.Task[None]]:
        """Run `spec.workers` fetch loops in the background until `close()`, each supervised:
        a loop that fails (the consumer cannot be created yet, a bus error) or ends is
        restarted with backoff and counted (`consumer_restarts`, cinebridge_task_restarts_total)."""
        tasks = []
        loop = functools.partial(
            consume_loop, self.js, spec, model, handler, self.publish, self.ensure_consumer
        )
        for n in range(spec.workers):
            task = asyncio.create_task(
                supervised(
                    spec.durable,
                    loop,
                    restarts=self._consumer_restarts,
                ),
                name=f"{spec.durable}-{n}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        return tasks

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop every background task (`supervise.cancel_and_wait`: bounded, even when a
        cancellation is lost), then drain the connection."""
        await cancel_and_wait(list(self._tasks), f"bus {self.name}", timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), timeout_s)
