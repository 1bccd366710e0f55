"""Durable pull consumers: their specification, bringing the server's durable to it, and the
fetch loop that hands each message to its handler and settles it (ack, nak with a delay, or a
dead letter in the JetStream DLQ with the reason). `Bus.start_consumer` runs the loops.

`apply_consumer` creates the durable, or updates an existing one in place where the server allows
(ack wait, max deliver, max ack pending, filter). Where a durable started reading is fixed at
creation and means nothing later, so the server's own start is kept. A change the server refuses
to apply in place (an immutable field such as the ack policy) recreates the durable from its ack
floor: nothing acknowledged is delivered again in bulk, nothing unacknowledged is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, PubAck
from nats.js.errors import APIError, NotFoundError
from prometheus_client import Counter, Histogram

from .logging import kv
from .messages.base import Message
from .messages.service import DeadLetter
from .streams import BusError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer. Several processes with the same durable share its work."""

    stream: str
    durable: str
    filter_subject: str
    max_deliver: int = 8
    ack_wait_s: float = 30.0
    #: nak delays by delivery attempt (last one repeats), used when the handler gives none.
    backoff_s: Sequence[float] = (1.0, 5.0, 15.0, 30.0, 60.0)
    max_ack_pending: int = 1000
    batch: int = 10
    workers: int = 1
    deliver_new_only: bool = False


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        deliver_policy=DeliverPolicy.NEW if spec.deliver_new_only else DeliverPolicy.ALL,
    )


def settings_of(config: ConsumerConfig) -> tuple[object, ...]:
    """The parts of a consumer's configuration that CineBridge sets (for change detection)."""
    return (
        config.filter_subject,
        config.ack_policy,
        float(config.ack_wait or 0),
        config.max_deliver,
        config.max_ack_pending,
        config.deliver_policy,
    )


async def apply_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create or update the durable of `spec` (see the module docstring); raises the server's
    APIError when it cannot be created at all (e.g. its stream does not exist)."""
    config = consumer_config(spec)
    try:
        existing: ConsumerInfo | None = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        existing = None
    if existing is not None:
        config = dataclasses.replace(
            config,
            deliver_policy=existing.config.deliver_policy,
            opt_start_seq=existing.config.opt_start_seq,
            opt_start_time=existing.config.opt_start_time,
        )
        if settings_of(existing.config) == settings_of(config):
            return
    try:
        await js.add_consumer(spec.stream, config)
    except APIError as exc:  # "ack policy can not be updated" is a 500, others a 400
        if existing is None:
            raise
        await _recreate(js, spec, existing, exc)
        return
    if existing is not None:
        log.info(
            "consumer configuration updated",
            extra=kv(durable=spec.durable, was=settings_of(existing.config)),
        )


async def _recreate(
    js: JetStreamContext, spec: ConsumerSpec, existing: ConsumerInfo, refused: Exception
) -> None:
    floor = existing.ack_floor.stream_seq if existing.ack_floor is not None else 0
    log.warning(
        "consumer configuration cannot be updated in place; recreating from its ack floor",
        extra=kv(durable=spec.durable, ack_floor=floor, error=repr(refused)),
    )
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(spec.stream, spec.durable)
    config = dataclasses.replace(
        consumer_config(spec),
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=(floor or 0) + 1,
    )
    await js.add_consumer(spec.stream, config)


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


class Publish(Protocol):
    """`Bus.publish`: durable, acknowledged, retried with the same message id."""

    async def __call__(
        self, msg: Message, *, msg_id: str | None = ..., timeout_s: float = ..., attempts: int = ...
    ) -> PubAck: ...


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


async def consume_loop(
    js: JetStreamContext,
    spec: ConsumerSpec,
    model: type[M],
    handler: Callable[[M, Delivery], Awaitable[None]],
    publish: Publish,
    ensure: Callable[[ConsumerSpec], Awaitable[None]],
) -> None:
    """One fetch loop of a durable: each message decoded, handled, then acked, nakked with a
    delay, or dead-lettered; `ensure` brings the durable to `spec` first (`Bus.ensure_consumer`)
    and `publish` stores dead letters (`Bus.publish`)."""
    await ensure(spec)
    sub = None
    try:
        while True:
            try:
                if sub is None:
                    sub = await js.pull_subscribe_bind(spec.durable, spec.stream)
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
                    await ensure(spec)
                continue
            for msg in msgs:
                try:
                    await _handle(spec, model, handler, msg, publish)
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
    spec: ConsumerSpec,
    model: type[M],
    handler: Callable[[M, Delivery], Awaitable[None]],
    msg: Msg,
    publish: Publish,
) -> None:
    delivery = Delivery(msg, spec)
    if log.isEnabledFor(logging.DEBUG):
        # How long the message waited between its store in the stream and its handler: the
        # bus's share of a chain's latency (bench/e2e.py's stages, docs/benchmarks.md).
        stored = msg.metadata.timestamp
        log.debug(
            "message in hand",
            extra=kv(
                durable=spec.durable,
                seq=msg.metadata.sequence.stream,
                waited_ms=round(
                    (datetime.datetime.now(datetime.UTC) - stored).total_seconds() * 1000, 1
                ),
            ),
        )
    try:
        message = model.from_bytes(msg.data)
    except ValueError as exc:
        await _dead_letter(spec, delivery, publish, f"undecodable {model.__name__}: {exc}")
        return
    try:
        with HANDLE_SECONDS.labels(spec.durable).time():
            await handler(message, delivery)
    except Poison as exc:
        HANDLED.labels(spec.durable, "poison").inc()
        await _dead_letter(spec, delivery, publish, exc.reason)
    except asyncio.CancelledError:
        # Shutting down mid-message: let it be redelivered at once to another worker.
        with contextlib.suppress(Exception):
            await msg.nak()
        raise
    except Exception as exc:
        reason = exc.reason if isinstance(exc, Retry) else f"{type(exc).__name__}: {exc}"
        HANDLED.labels(spec.durable, "retry").inc()
        if delivery.last_attempt:
            await _dead_letter(
                spec, delivery, publish, f"gave up after {delivery.attempt} deliveries: {reason}"
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


async def _dead_letter(
    spec: ConsumerSpec, delivery: Delivery, publish: Publish, reason: str
) -> None:
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
    log.error("dead letter", extra=kv(durable=spec.durable, seq=letter.stream_seq, reason=reason))
    # The letter goes to the JetStream DLQ first, which needs no database (the mirror
    # consumer copies it into `dead_letters` when PostgreSQL answers), and the message is
    # only then terminated. On a last delivery JetStream will not redeliver, so the publish
    # is retried until it is acknowledged, keeping the message in progress meanwhile.
    msg_id = f"dlq-{spec.stream}-{spec.durable}-{letter.stream_seq}"
    failures = 0
    while True:
        try:
            await publish(letter, msg_id=msg_id, attempts=3)
            break
        except BusError as exc:
            failures += 1
            if failures == 1:
                log.warning("dead letter not stored yet", extra=kv(error=str(exc)))
            with contextlib.suppress(Exception):
                await delivery.msg.in_progress()
            await asyncio.sleep(min(5.0, 0.5 * failures))
    await delivery.msg.term()
