"""Test support for CineBridge: outside tools and bounded waits; peers and harnesses in its modules.

Tests, benchmarks and the demo run (`make run`) use it; no production package imports it and no
production image installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import pytest

T = TypeVar("T")


class ServiceApp(Protocol):
    """A service's composition root run in the test's own process (e.g. `WorklistApp`)."""

    @property
    def ready(self) -> asyncio.Event: ...

    async def run(self) -> None: ...

    def stop(self) -> None: ...


A = TypeVar("A", bound=ServiceApp)


@asynccontextmanager
async def running_app(app: A, ready_s: float = 30.0, stop_s: float = 15.0) -> AsyncIterator[A]:
    """`app` running in this process from the moment it says it is ready until the block ends
    (a start error is raised as it is)."""
    task = asyncio.create_task(app.run())
    try:
        ready = asyncio.create_task(app.ready.wait())
        done, _ = await asyncio.wait(
            {task, ready}, timeout=ready_s, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        if task in done:
            task.result()
        assert app.ready.is_set(), f"{type(app).__name__} not ready within {ready_s} s"
        yield app
    finally:
        app.stop()
        await asyncio.wait_for(task, stop_s)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_tool(name: str) -> str:
    """Path of an outside tool (storescp, dciodvfy, Orthanc, ffmpeg ...).

    Missing: the test fails under CI (a missing peer is a broken CI setup) and is skipped
    elsewhere with the install hint.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (bash .ci/run installs it: see .ci/packages.txt)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


async def wait_for(
    check: Callable[[], Awaitable[T | None]],
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns a truthy value; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_for_sync(
    check: Callable[[], T | None],
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str = "peer", timeout_s: float = 20.0
) -> None:
    """Wait until `proc` listens on loopback `port`; fail early when it exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s} s")


def kill_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process still running (a crash, as a fault test wants it) and reap it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = 15.0) -> None:
    """SIGTERM a process still running, and SIGKILL it when it has not ended after `grace_s`."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            kill_process(proc)
