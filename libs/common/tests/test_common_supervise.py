"""Supervised loops: a failing or ending task is restarted and counted; `every` never ends."""

from __future__ import annotations

import asyncio

from asyncpg.exceptions._base import InternalClientError
from cinebridge_common.supervise import RESTARTS, every, supervised


async def test_a_failing_then_ending_task_is_restarted_and_counted() -> None:
    stop = asyncio.Event()
    runs: list[str] = []
    restarts = [0]

    async def work() -> None:
        runs.append("run")
        if len(runs) <= 2:
            raise InternalClientError("cannot switch to state 15; another operation is in progress")
        if len(runs) == 3:
            return  # ends early: must be started again
        stop.set()

    before = RESTARTS.labels("unit-task", "failed")._value.get()
    async with asyncio.timeout(30):
        await supervised("unit-task", work, stop, base_s=0.01, cap_s=0.05, restarts=restarts)
    assert len(runs) == 4
    assert restarts == [3]
    assert RESTARTS.labels("unit-task", "failed")._value.get() - before == 2


async def test_supervised_stops_when_asked_and_propagates_cancellation() -> None:
    stop = asyncio.Event()

    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(supervised("unit-cancel", forever, stop))
    await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(10):
        try:
            await task
        except asyncio.CancelledError:
            pass
    assert task.cancelled()


async def test_every_keeps_calling_through_failures_until_stopped() -> None:
    stop = asyncio.Event()
    calls: list[int] = []

    async def body() -> None:
        calls.append(1)
        if len(calls) in (2, 3):
            raise OSError("connection refused")
        if len(calls) == 5:
            stop.set()

    async with asyncio.timeout(30):
        await every("unit-every", 0.01, body, stop)
    assert len(calls) == 5
