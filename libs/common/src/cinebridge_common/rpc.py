"""Request/reply of any size over core NATS: a reply larger than one message travels in chunks.

The NATS server refuses a message over its `max_payload` (1 MB in `deploy/nats.conf` and the
embedded run). `Bus.request` and `Bus.serve` go through this module, so no reply depends on
fitting one message:

- the requester listens on an inbox of its own and says it can take chunks (header
  `Cb-Accept-Chunks: 1`);
- the server sends a reply that fits as one message, as before; a larger one as numbered
  slices of its bytes to that inbox, each with `Cb-Chunk: <index>/<count>` and `Cb-Reply-Id`,
  pacing itself with a flush every few chunks; the last chunk is the end marker;
- the requester joins the slices in order; a missing or out-of-order chunk, or a gap of more
  than `CHUNK_GAP_S` between two chunks, is an error with the reason (never a silent half);
- a reply that cannot be sent at all (over `MAX_REPLY_BYTES`, a requester that takes no chunks,
  a publish that fails) becomes an error reply (`Reply(ok=False, error=...)`) naming why, and
  a failure in the middle of a chunked reply ends it with an abort chunk (`Cb-Chunk-Abort`)
  carrying that error reply, so the caller gets the reason instead of a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from .db import DB_DOWN
from .logging import kv
from .messages.base import Reply, Request

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Reply)
Q = TypeVar("Q", bound=Request)

ACCEPT_CHUNKS = "Cb-Accept-Chunks"
CHUNK = "Cb-Chunk"
REPLY_ID = "Cb-Reply-Id"
ABORT = "Cb-Chunk-Abort"
#: Room left in each message for the headers (the server counts them in `max_payload`).
HEADER_ROOM = 4096
#: Largest reply we send or accept (the requester holds it in memory).
MAX_REPLY_BYTES = 64 << 20
#: Longest wait for the next chunk once a chunked reply has begun.
CHUNK_GAP_S = 15.0
#: Flush after this many chunks: the server has taken them before more are queued.
FLUSH_EVERY = 8


class ReplyError(RuntimeError):
    """A reply did not arrive whole (no responder, timeout, missing chunk); says why."""


#: A handler's errors that mean its database is away (a file error is not: OSError is left
#: out, its connection kinds kept).
DATABASE_AWAY: tuple[type[Exception], ...] = (
    *(kind for kind in DB_DOWN if kind is not OSError),
    ConnectionError,
)
#: Replies at least this large are parsed in a worker thread.
LARGE_REPLY = 1 << 20
#: How long a request keeps asking while the bus says nobody serves its subject.
NO_RESPONDERS_GRACE_S = 2.0


async def decode(reply_type: type[R], data: bytes) -> R:
    """The reply model from its bytes. A large one is parsed in a thread, so the event loop
    keeps serving. The worklist's large reply is not parsed here but split into its entries'
    texts by the gateway's page store (`bench/worklist.py`).

    Raises `ReplyError` with the service's reason when it answered `unavailable` (its
    database is away: the caller says "unavailable", e.g. HTTP 503, not "refused"), and when
    it answered with a bare error reply that lacks the fields of `reply_type` (a handler that
    failed): the reason, not a validation error of a reply that was never meant to be one."""
    if len(data) < LARGE_REPLY:
        return _parse(reply_type, data)
    return await asyncio.to_thread(_parse, reply_type, data)


def _parse(reply_type: type[R], data: bytes) -> R:
    try:
        reply = reply_type.from_bytes(data)
    except ValidationError:
        failed = _failure(data)
        if failed is None:
            raise
        raise ReplyError(failed.error or "the service failed to answer") from None
    if not reply.ok and reply.unavailable:
        raise ReplyError(reply.error or "the service is unavailable")
    return reply


def _failure(data: bytes) -> Reply | None:
    """The error reply in `data`, if it is one."""
    try:
        reply = Reply.model_validate_json(data)
    except ValidationError:
        return None
    return None if reply.ok else reply


def chunk_size(nc: NatsClient) -> int:
    return max(1024, int(nc.max_payload) - HEADER_ROOM)


def error_reply(reason: str) -> bytes:
    return Reply(ok=False, error=reason).to_bytes()


async def request(nc: NatsClient, subject: str, payload: bytes, timeout_s: float) -> bytes:
    """Send a request; return the reply's bytes, joined from its chunks when it has several.

    `timeout_s` bounds the wait for the first message; each later chunk must follow within
    `CHUNK_GAP_S`. Raises `ReplyError` with the reason when the reply does not arrive whole.
    """
    if not nc.is_connected:
        # NATS away (a restart, an outage): nats-py would buffer the request until it is back
        # or the timeout ends; the caller hears at once why (docs/reliability.md §4).
        state = "reconnecting" if nc.is_reconnecting else "closed"
        raise ReplyError(f"unavailable: the bus (NATS) is {state}; {subject} was not asked")
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    grace_end = loop.time() + min(timeout_s, NO_RESPONDERS_GRACE_S)
    try:
        pause = 0.02
        while True:
            await nc.publish(subject, payload, reply=inbox, headers={ACCEPT_CHUNKS: "1"})
            first = await _next(
                sub,
                max(0.001, deadline - loop.time()),
                f"{subject} did not answer within {timeout_s:g} s",
            )
            headers = first.headers or {}
            if headers.get("Status") != "503":
                break
            # No responder: the server answered at once. A responder that subscribed a moment
            # ago is sometimes not yet seen by a request from another connection (measured: ~5%
            # of requests right after a fresh subscribe, flushed), and a service the runner has
            # just restarted subscribes within moments: ask again for a short grace period.
            if loop.time() + pause > grace_end:
                raise ReplyError(f"no service answers {subject}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        if CHUNK not in headers:
            return bytes(first.data)
        return await _collect(sub, subject, first)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _next(sub: object, timeout_s: float, why: str) -> Msg:
    try:
        msg: Msg = await sub.next_msg(timeout=timeout_s)  # type: ignore[attr-defined]
    except NatsTimeoutError:
        raise ReplyError(why) from None
    return msg


async def _collect(sub: object, subject: str, first: Msg) -> bytes:
    parts: list[bytes] = []
    msg = first
    reply_id = (first.headers or {}).get(REPLY_ID, "")
    while True:
        headers = msg.headers or {}
        if ABORT in headers:
            return bytes(msg.data)  # an error reply: the reason the rest could not be sent
        index, count = _position(headers.get(CHUNK, ""), subject)
        if headers.get(REPLY_ID, "") != reply_id or index != len(parts):
            raise ReplyError(
                f"reply from {subject} incomplete: chunk {len(parts) + 1} of {count} missing"
            )
        parts.append(bytes(msg.data))
        if index + 1 == count:
            return b"".join(parts)
        msg = await _next(
            sub,
            CHUNK_GAP_S,
            f"reply from {subject} incomplete: chunk {index + 2} of {count} did not arrive",
        )


def _position(value: str, subject: str) -> tuple[int, int]:
    try:
        index_text, count_text = value.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ReplyError(f"reply from {subject}: bad chunk header {value!r}") from None
    if not 0 <= index < count:
        raise ReplyError(f"reply from {subject}: bad chunk header {value!r}")
    return index, count


async def respond(nc: NatsClient, request_msg: Msg, reply: Reply) -> None:
    """Answer `request_msg` with `reply`, in chunks when it does not fit one message.

    Never raises: a reply that cannot be sent is replaced by an error reply naming why (and
    logged); only when even that cannot be sent (no connection) is it just logged.
    """
    if not request_msg.reply:
        return
    payload = reply.to_bytes()
    try:
        await _send(nc, request_msg, payload)
    except Exception as exc:
        reason = f"the reply ({len(payload):,} bytes) could not be sent: {type(exc).__name__}"
        log.error(
            "rpc reply not sent",
            extra=kv(subject=request_msg.subject, bytes=len(payload), error=repr(exc)),
        )
        with contextlib.suppress(Exception):
            await nc.publish(request_msg.reply, error_reply(reason), headers={ABORT: "1"})


async def _send(nc: NatsClient, request_msg: Msg, payload: bytes) -> None:
    size = chunk_size(nc)
    if len(payload) <= size:
        await nc.publish(request_msg.reply, payload)
        return
    accepts = (request_msg.headers or {}).get(ACCEPT_CHUNKS) == "1"
    if len(payload) > MAX_REPLY_BYTES or not accepts:
        why = (
            f"over the {MAX_REPLY_BYTES >> 20} MiB limit of a reply"
            if accepts
            else "more than one bus message and the requester takes no chunks"
        )
        reason = f"the reply is too large ({len(payload):,} bytes, {why}): narrow the request"
        log.warning("rpc reply refused", extra=kv(subject=request_msg.subject, reason=reason))
        await nc.publish(request_msg.reply, error_reply(reason))
        return
    await _send_chunks(nc, request_msg.reply, payload, size)


async def _send_chunks(nc: NatsClient, inbox: str, payload: bytes, size: int) -> None:
    count = -(-len(payload) // size)
    reply_id = uuid.uuid4().hex
    started = time.monotonic()
    view = memoryview(payload)
    for index in range(count):
        headers = {CHUNK: f"{index}/{count}", REPLY_ID: reply_id}
        await nc.publish(inbox, bytes(view[index * size : (index + 1) * size]), headers=headers)
        if (index + 1) % FLUSH_EVERY == 0:
            await nc.flush(timeout=int(CHUNK_GAP_S))
    log.debug(
        "rpc reply sent in chunks",
        extra=kv(bytes=len(payload), chunks=count, ms=round((time.monotonic() - started) * 1e3)),
    )


async def serve(
    nc: NatsClient,
    subject: str,
    queue: str,
    request_type: type[Q],
    handler: Callable[[Q], Awaitable[Reply]],
    concurrency: int,
    tasks: set[asyncio.Task[None]],
) -> Any:
    """Answer requests of one type on `subject` (queue group `queue`); a handler error becomes
    Reply(ok=False, error=reason); replies of any size go out through `respond`. With
    `concurrency` > 1 up to that many are answered at once, their tasks kept in `tasks` (the
    bus cancels them on close). Returns the subscription."""
    slots = asyncio.Semaphore(concurrency) if concurrency > 1 else None

    async def on_msg(msg: Msg) -> None:
        if slots is None:
            await answer(msg)
            return
        await slots.acquire()
        task = asyncio.create_task(answer(msg))
        tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            tasks.discard(done)
            slots.release()

        task.add_done_callback(finished)

    async def answer(msg: Msg) -> None:
        try:
            request = request_type.from_bytes(msg.data)
        except ValueError as exc:
            await respond(nc, msg, Reply(ok=False, error=f"bad request: {exc}"))
            return
        try:
            reply = await handler(request)
        except DATABASE_AWAY as exc:
            # PostgreSQL away (a restart, an outage): a state the service's readiness shows,
            # not a fault of the handler; the requester hears "unavailable" with the cause.
            log.warning("rpc handler: database unavailable", extra=kv(subject=msg.subject))
            reply = Reply(
                ok=False, error=f"unavailable: {type(exc).__name__}: {exc}", unavailable=True
            )
        except Exception as exc:
            log.exception("rpc handler failed", extra=kv(subject=msg.subject))
            reply = Reply(ok=False, error=f"{type(exc).__name__}: {exc}")
        await respond(nc, msg, reply)  # chunked when large; never raises

    sub = await nc.subscribe(subject, queue=queue, cb=on_msg)
    # The SUB travels asynchronously: flush so the server knows us before serve() returns,
    # else a request sent right after gets "no responders".
    await nc.flush()
    return sub
