"""Supervised background loops: a task that fails or ends is restarted with backoff, and counted.

Every long-running loop of a service (outbox relay, sweepers, reconcilers, consumers, the
heartbeat) runs under `supervised(...)`, the one place where its errors are caught. A database or
bus error of any kind (asyncpg `InternalClientError` after a connection died mid-COMMIT,
`ConnectionDoesNotExistError`, `InterfaceError`, `OSError`, nats-py errors) is logged once per
streak, the loop is started again after a backoff that grows to `cap_s`, and
`cinebridge_task_restarts_total` counts it. The service keeps running; its readiness says what
is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import Counter

from .logging import kv

log = logging.getLogger(__name__)

RESTARTS = Counter(
    "cinebridge_task_restarts_total",
    "Background tasks restarted after they failed or ended, by task and reason",
    ["task", "reason"],
)

#: A run that lasted this long counts as healthy: the next failure starts a new streak.
HEALTHY_RUN_S = 30.0


async def _pause(stop: asyncio.Event | None, delay: float) -> None:
    if stop is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def backoff_delay(failures: int, base_s: float, cap_s: float) -> float:
    """The pause before restart number `failures` (1, 2, ...): doubling, capped, with jitter."""
    delay: float = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return delay * random.uniform(0.8, 1.0)


async def supervised(
    name: str,
    factory: Callable[[], Awaitable[Any]],
    stop: asyncio.Event | None = None,
    *,
    base_s: float = 0.5,
    cap_s: float = 5.0,
    restarts: list[int] | None = None,
) -> None:
    """Run `factory()` until `stop` is set (or the task is cancelled), restarting it when it
    raises or returns early. `restarts`, when given, is a one-element counter the caller shows
    in its health detail."""
    loop = asyncio.get_running_loop()
    failures = 0
    while stop is None or not stop.is_set():
        started = loop.time()
        error: Exception | None = None
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason, error = "failed", exc
        else:
            if stop is not None and stop.is_set():
                return
            reason = "ended"
        if loop.time() - started >= HEALTHY_RUN_S:
            failures = 0
        failures += 1
        RESTARTS.labels(name, reason).inc()
        if restarts is not None:
            restarts[0] += 1
        delay = backoff_delay(failures, base_s, cap_s)
        if failures == 1:
            # Once per streak, with the traceback; the rest of the streak is counted, not logged.
            log.warning(
                "background task %s, restarting",
                reason,
                exc_info=error,
                extra=kv(task=name, error=repr(error), delay_s=round(delay, 2)),
            )
        elif failures % 50 == 0:
            log.warning(
                "background task still failing",
                extra=kv(task=name, failures=failures, error=repr(error)),
            )
        await _pause(stop, delay)


async def every(
    name: str,
    interval_s: float,
    body: Callable[[], Awaitable[Any]],
    stop: asyncio.Event,
) -> None:
    """Call `body()` every `interval_s` until `stop`; a failing call is logged once per streak
    (and its recovery once), never ends the loop. For sweepers and reconcilers."""
    failures = 0
    while not stop.is_set():
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            RESTARTS.labels(name, "failed").inc()
            if failures == 1:
                log.warning("periodic task failed", extra=kv(task=name, error=repr(exc)))
        else:
            if failures:
                log.info("periodic task recovered", extra=kv(task=name, failures=failures))
            failures = 0
        await _pause(stop, interval_s if not failures else min(interval_s, 2.0 * failures))


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], what: str, timeout_s: float = 10.0
) -> list[asyncio.Task[Any]]:
    """Cancel `tasks` and wait until they end, for at most `timeout_s`; returns those that did
    not end (named in the log). Their errors and cancellations are not raised.

    A cancellation can be lost: Python 3.11's `asyncio.wait_for` (used inside nats-py's fetch)
    swallows one that arrives as its inner wait completes, and the loop around it goes on. So
    tasks still running are cancelled again every half second rather than awaited once, which
    would wait for ever. Waiting with `asyncio.wait` also keeps a cancellation of the caller
    from being passed on to, and swallowed with, the tasks it waits for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(
            pending, timeout=min(0.5, max(0.01, deadline - loop.time()))
        )
    if pending:
        log.warning(
            "background tasks did not end when stopped",
            extra=kv(what=what, tasks=sorted(task.get_name() for task in pending)),
        )
    return sorted(pending, key=lambda task: task.get_name())
