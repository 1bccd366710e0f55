"""The CineBridge bus over nats-py: typed publish/request/serve, durable JetStream consumers.

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
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError
from prometheus_client import Counter, Histogram

from . import rpc
from .consumers import ConsumerSpec as ConsumerSpec  # re-exported: part of the bus API
from .consumers import apply_consumer
from .logging import kv
from .messages.base import Message, Reply, Request
from .messages.service import DeadLetter
from .supervise import supervised

log = logging.getLogger(__name__)

HANDLED = Counter(
    "cinebridge_bus_messages_handled_total",
    "Durable messages handled, by consumer and outcome",
    ["durable", "outcome"],
)
HANDLE_SECONDS = Histogram(
    "cinebridge_bus_handle_duration_seconds",
    "Time spent in a durable consumer's handler",
    ["durable"],
)

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Reply)
Q = TypeVar("Q", bound=Request)


class Retry(Exception):
    """Raised by a handler: transient failure, redeliver after `delay` seconds."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Poison(Exception):
    """Raised by a handler: this message can never succeed; dead-letter it with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BusError(RuntimeError):
    """The bus could not do what was asked (with the subject and the cause)."""


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    max_age_s: float = 7 * 24 * 3600
    max_bytes: int = 1 << 30
    duplicate_window_s: float = 120.0
    discard: DiscardPolicy = DiscardPolicy.NEW  # backpressure instead of silent loss


#: Streams of the system: events are kept a week for late consumers; jobs until acked.
EVENTS = StreamSpec("CB_EVENTS", ["cb.evt.>"])
#: Jobs use limits retention (not work-queue) so several durables may filter the same subject
#: (e.g. a second sender instance group, a test) and acked jobs stay inspectable for a week.
JOBS = StreamSpec("CB_JOBS", ["cb.job.>"])
DLQ = StreamSpec("CB_DLQ", ["cb.dlq.>"], max_age_s=90 * 24 * 3600)
DEFAULT_STREAMS: tuple[StreamSpec, ...] = (EVENTS, JOBS, DLQ)


@dataclass
class Delivery:
    """What a handler knows about the message in hand, and how to keep it alive."""

    msg: Msg
    spec: ConsumerSpec
    _heartbeat: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def attempt(self) -> int:
        return int(self.msg.metadata.num_delivered)

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.spec.max_deliver

    async def in_progress(self) -> None:
        await self.msg.in_progress()

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """Send in_progress every ack_wait/3 while the block runs (long conversions, sends)."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.spec.ack_wait_s / 3)
                with contextlib.suppress(Exception):
                    await self.msg.in_progress()

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _unsubscribe(sub: Any) -> None:
    if sub is not None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class Bus:
    """One NATS connection with JetStream, typed for CineBridge messages."""

    def __init__(self, nc: NatsClient, name: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.name = name
        self._consumer_restarts = [0]
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        connect_timeout_s: float = 5.0,
    ) -> Bus:
        """Connect; reconnects forever afterwards (nats.py gives up after ~2 min by default)."""

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
        return cls(nc, name)

    # -- streams -------------------------------------------------------------------------
    async def ensure_streams(self, specs: Sequence[StreamSpec] = DEFAULT_STREAMS) -> None:
        """Create or update streams; safe to call from every service at every start."""
        for spec in specs:
            config = StreamConfig(
                name=spec.name,
                subjects=spec.subjects,
                retention=spec.retention,
                storage=StorageType.FILE,
                max_age=spec.max_age_s,
                max_bytes=spec.max_bytes,
                duplicate_window=spec.duplicate_window_s,
                discard=spec.discard,
            )
            try:
                await self.js.add_stream(config)
            except BadRequestError:
                await self.js.update_stream(config)

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
            except (
                NatsTimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError,
            ) as exc:
                last = exc
                await asyncio.sleep(min(0.2 * 2**attempt, 3.0))
        raise BusError(f"publish to {subject} not acknowledged after {attempts} tries: {last!r}")

    async def publish_core(self, msg: Message) -> None:
        """Fire-and-forget (heartbeats, progress): loss is harmless, the next one follows."""
        with contextlib.suppress(Exception):
            await self.nc.publish(msg.subject_for(), msg.to_bytes())

    # -- request/reply -------------------------------------------------------------------
    async def request(self, msg: Request, reply_type: type[R], timeout_s: float = 10.0) -> R:
        """Any size of reply: one larger than a bus message arrives in chunks (`rpc`)."""
        return await rpc.decode(reply_type, await self.request_bytes(msg, timeout_s))

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
        slots = asyncio.Semaphore(concurrency) if concurrency > 1 else None

        async def on_msg(msg: Msg) -> None:
            if slots is None:
                await answer(msg)
                return
            await slots.acquire()
            task = asyncio.create_task(answer(msg))
            self._tasks.add(task)

            def finished(done: asyncio.Task[None]) -> None:
                self._tasks.discard(done)
                slots.release()

            task.add_done_callback(finished)

        async def answer(msg: Msg) -> None:
            try:
                request = request_type.from_bytes(msg.data)
            except ValueError as exc:
                await rpc.respond(self.nc, msg, Reply(ok=False, error=f"bad request: {exc}"))
                return
            try:
                reply = await handler(request)
            except Exception as exc:
                log.exception("rpc handler failed", extra=kv(subject=msg.subject))
                reply = Reply(ok=False, error=f"{type(exc).__name__}: {exc}")
            await rpc.respond(self.nc, msg, reply)  # chunked when large; never raises

        sub = await self.nc.subscribe(
            subject or request_type.wildcard(), queue=queue or self.name, cb=on_msg
        )
        self._subs.append(sub)
        # The SUB travels asynchronously: flush so the server knows us before serve() returns,
        # else a request sent right after gets "no responders".
        await self.nc.flush()

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
            raise BusError(f"cannot create consumer {spec.durable}: {exc}") from exc

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
        for n in range(spec.workers):
            task = asyncio.create_task(
                supervised(
                    spec.durable,
                    functools.partial(self._consume_loop, spec, model, handler),
                    restarts=self._consumer_restarts,
                ),
                name=f"{spec.durable}-{n}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        return tasks

    async def _consume_loop(
        self, spec: ConsumerSpec, model: type[M], handler: Callable[[M, Delivery], Awaitable[None]]
    ) -> None:
        await self.ensure_consumer(spec)
        sub = None
        try:
            while True:
                try:
                    if sub is None:
                        sub = await self.js.pull_subscribe_bind(spec.durable, spec.stream)
                    msgs = await sub.fetch(spec.batch, timeout=2.0)
                except NatsTimeoutError:
                    continue
                except asyncio.CancelledError:
                    raise
                except TimeoutError:
                    # nats.py lets a bare TimeoutError out of a fetch now and then when several
                    # processes pull on one durable with nothing to deliver: not a failure, but
                    # the subscription is rebuilt in case it is one (nats.py #504), quietly.
                    log.debug("fetch timed out, resubscribing", extra=kv(durable=spec.durable))
                    await _unsubscribe(sub)
                    sub = None
                    continue
                except (NotFoundError, Exception) as exc:
                    # nats.py #504: pull subscriptions may not survive a server restart; rebuild.
                    log.warning(
                        "fetch failed, resubscribing",
                        extra=kv(durable=spec.durable, error=repr(exc)),
                    )
                    await _unsubscribe(sub)
                    sub = None
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(Exception):
                        await self.ensure_consumer(spec)
                    continue
                for msg in msgs:
                    try:
                        await self._handle(spec, model, handler, msg)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        # The handler ran, but its ack, nak or dead letter did not reach the
                        # server (a NATS restart, a timeout). Nothing is lost: unsettled, the
                        # message comes back after ack_wait, and handlers are idempotent. The
                        # loop must live on, or the consumer would be dead until a restart.
                        log.warning(
                            "settling a message failed; it will be redelivered",
                            extra=kv(durable=spec.durable, error=repr(exc)),
                        )
        finally:
            # A pull subscription left registered makes `drain()` wait its full 30 s timeout.
            await _unsubscribe(sub)

    async def _handle(
        self,
        spec: ConsumerSpec,
        model: type[M],
        handler: Callable[[M, Delivery], Awaitable[None]],
        msg: Msg,
    ) -> None:
        delivery = Delivery(msg, spec)
        try:
            message = model.from_bytes(msg.data)
        except ValueError as exc:
            await self._dead_letter(spec, delivery, f"undecodable {model.__name__}: {exc}")
            return
        try:
            with HANDLE_SECONDS.labels(spec.durable).time():
                await handler(message, delivery)
        except Poison as exc:
            HANDLED.labels(spec.durable, "poison").inc()
            await self._dead_letter(spec, delivery, exc.reason)
        except asyncio.CancelledError:
            # Shutting down mid-message: let it be redelivered at once to another worker.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            reason = exc.reason if isinstance(exc, Retry) else f"{type(exc).__name__}: {exc}"
            HANDLED.labels(spec.durable, "retry").inc()
            if delivery.last_attempt:
                await self._dead_letter(
                    spec, delivery, f"gave up after {delivery.attempt} deliveries: {reason}"
                )
                return
            delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else None
            if delay is None:
                steps = spec.backoff_s
                delay = steps[min(delivery.attempt - 1, len(steps) - 1)]
                delay *= random.uniform(0.8, 1.2)  # jitter: retries of a batch spread out
            # A message's first failure is a warning; its later retries (an outage makes
            # hundreds) are debug lines, and giving up is an error with the reason.
            log.log(
                logging.WARNING if delivery.attempt == 1 else logging.DEBUG,
                "handler failed, retrying",
                extra=kv(
                    durable=spec.durable,
                    attempt=delivery.attempt,
                    delay_s=round(delay, 2),
                    reason=reason,
                ),
            )
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
        else:
            HANDLED.labels(spec.durable, "ack").inc()
            await msg.ack_sync()

    async def _dead_letter(self, spec: ConsumerSpec, delivery: Delivery, reason: str) -> None:
        meta = delivery.msg.metadata
        letter = DeadLetter(
            stream=spec.stream,
            consumer=spec.durable,
            original_subject=delivery.msg.subject,
            stream_seq=int(meta.sequence.stream),
            deliveries=delivery.attempt,
            reason=reason[:2000],
            payload=delivery.msg.data.decode(errors="replace")[:100_000],
        )
        log.error(
            "dead letter", extra=kv(durable=spec.durable, seq=letter.stream_seq, reason=reason)
        )
        # The letter goes to the JetStream DLQ first, which needs no database (the mirror
        # consumer copies it into `dead_letters` when PostgreSQL answers), and the message is
        # only then terminated. On a last delivery JetStream will not redeliver, so the publish
        # is retried until it is acknowledged, keeping the message in progress meanwhile.
        msg_id = f"dlq-{spec.stream}-{spec.durable}-{letter.stream_seq}"
        failures = 0
        while True:
            try:
                await self.publish(letter, msg_id=msg_id, attempts=3)
                break
            except BusError as exc:
                failures += 1
                if failures == 1:
                    log.warning("dead letter not stored yet", extra=kv(error=str(exc)))
                with contextlib.suppress(Exception):
                    await delivery.msg.in_progress()
                await asyncio.sleep(min(5.0, 0.5 * failures))
        await delivery.msg.term()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.nc.drain()
