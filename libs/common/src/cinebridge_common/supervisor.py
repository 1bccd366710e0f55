"""The embedded run's process supervisor: one prefixed log, restart with backoff, PIDs on disk.

Each child runs in its own session (a terminal's Ctrl-C reaches only the runner, which stops
the children in order) and gets SIGTERM if the runner itself dies. A child that exits while the
run goes on is started again after a backoff that doubles with each quick exit (0.5 s up to
30 s; reset once it has run for a minute), and the log says which one exited and why. The
current PIDs are kept in `pids.json` so that operators and tests can signal one process by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import grp
import json
import os
import pwd
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
COLOURS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)
PR_SET_PDEATHSIG = 1
#: Longest output line passed on whole; a child must never block on a full pipe.
LINE_LIMIT = 1 << 20


class StartRefused(RuntimeError):
    """A process must not start (its port or store is in use); the message says what to do."""


@dataclass
class ProcessSpec:
    """One supervised process: its command line and how to tell it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    user: str | None = None
    #: Where its output goes; None: into the shared prefixed log.
    log_file: Path | None = None
    #: Raises StartRefused when the process must not start now (checked before every start).
    precheck: Callable[[], None] | None = None
    #: Awaits readiness of the started process (raises on failure); None: running is enough.
    ready: Callable[[], Awaitable[None]] | None = None
    ready_timeout_s: float = 60.0
    stop_signal: signal.Signals = signal.SIGTERM
    grace_s: float = 10.0
    health_url: str | None = None


@dataclass
class _Child:
    spec: ProcessSpec
    colour: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    started_at: str | None = None
    restarts: int = 0
    quick_exits: int = 0
    task: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None
    first_start: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def describe_exit(returncode: int) -> str:
    """`rc=1` or `killed by SIGKILL`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"rc={returncode}"


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGTERM when the runner dies, even by SIGKILL."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


_libc = ctypes.CDLL(None, use_errno=True)


class Supervisor:
    """Starts, watches, restarts and stops a set of processes; see the module docstring."""

    def __init__(self, pids_path: Path, out: IO[str] = sys.stdout) -> None:
        self.pids_path = pids_path
        self.out = out
        self.colour = out.isatty()
        self.stopping = False
        self._children: list[_Child] = []
        self._wake = asyncio.Event()

    def log(self, name: str, line: str, colour: int = 0) -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<10} |"
        if self.colour and colour:
            prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
        with contextlib.suppress(OSError, ValueError):  # a closed terminal must not stop the run
            self.out.write(f"{prefix} {line}\n")
            self.out.flush()

    def say(self, line: str) -> None:
        self.log("runner", line, 1)

    async def start(self, spec: ProcessSpec) -> None:
        """Start a process and keep it running; returns once it is ready the first time.

        Raises StartRefused or the readiness error when the first start fails: a run that cannot
        start its foundations stops with that message rather than retrying in the background.
        """
        child = _Child(spec, COLOURS[len(self._children) % len(COLOURS)])
        self._children.append(child)
        child.task = asyncio.create_task(self._keep(child), name=f"keep-{spec.name}")
        await child.first_start

    async def _spawn(self, child: _Child) -> None:
        spec = child.spec
        if spec.precheck:
            spec.precheck()
        output: int | IO[bytes] = asyncio.subprocess.PIPE
        if spec.log_file:  # a local file opened once per start: not worth a thread
            output = open(spec.log_file, "ab")  # noqa: ASYNC230
        try:
            child.proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=spec.env,
                # The user's own group and no others: root's groups would deny it what the
                # "other" permission bits of a root-owned parent directory grant.
                user=spec.user,
                group=spec.user and grp.getgrgid(pwd.getpwnam(spec.user).pw_gid).gr_name,
                extra_groups=[] if spec.user else None,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                limit=LINE_LIMIT,
                preexec_fn=_die_with_parent,  # prctl only: no lock to deadlock on
            )
        finally:
            if not isinstance(output, int):
                output.close()
        child.started = time.monotonic()
        child.started_at = dt.datetime.now(dt.UTC).isoformat()
        self._write_pids()
        if child.proc.stdout is not None:
            child.pump = asyncio.create_task(
                self._pump(child, child.proc.stdout), name=f"log-{spec.name}"
            )
        self.say(f"{spec.name} started (pid {child.proc.pid})")
        if spec.ready:
            try:
                await self._ready(child.proc, spec)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
                raise
            self.say(f"{spec.name} ready")

    @staticmethod
    async def _ready(proc: asyncio.subprocess.Process, spec: ProcessSpec) -> None:
        """Wait for readiness, or fail when the process exits first or the time is up."""
        assert spec.ready is not None
        ready = asyncio.ensure_future(spec.ready())
        exited = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, exited}, timeout=spec.ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            exited.cancel()
        if ready in done:
            ready.result()
        elif exited in done:
            raise RuntimeError(f"exited ({describe_exit(exited.result())}) before it was ready")
        else:
            raise TimeoutError(f"not ready after {spec.ready_timeout_s:g} s")

    async def _pump(self, child: _Child, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: asyncio dropped it; keep reading
                self.log(child.spec.name, f"[a line over {LINE_LIMIT} bytes left out]", 1)
                continue
            if not line:
                return
            self.log(child.spec.name, line.decode(errors="replace").rstrip(), child.colour)

    async def _keep(self, child: _Child) -> None:
        name = child.spec.name
        try:
            await self._spawn(child)
        except BaseException as exc:
            child.first_start.set_exception(exc)
            return
        child.first_start.set_result(None)
        while True:
            assert child.proc is not None
            rc = await child.proc.wait()
            ran = time.monotonic() - child.started
            self._write_pids()
            if self.stopping:
                return
            child.quick_exits = 0 if ran >= STABLE_AFTER_S else child.quick_exits + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, child.quick_exits - 1))
            self.say(
                f"{name} exited ({describe_exit(rc)}) after {ran:.1f} s; "
                f"restarting in {delay:g} s (restart {child.restarts + 1})"
            )
            while not self.stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                if self.stopping:
                    return
                child.restarts += 1
                try:
                    await self._spawn(child)
                    break
                except Exception as exc:  # refused or never ready: say why, back off, retry
                    delay = min(BACKOFF_MAX_S, delay * 2)
                    self.say(f"{name} did not start: {exc}; next try in {delay:g} s")

    async def stop(self, names: list[str] | None = None) -> None:
        """Stop the named processes (default: all, in reverse start order, services first)."""
        self.stopping = True
        self._wake.set()
        wanted = [c for c in self._children if names is None or c.spec.name in names]
        await asyncio.gather(*(self._stop_one(c) for c in wanted))

    async def stop_all(self, groups: list[list[str]]) -> None:
        """Stop group after group (e.g. services, then PostgreSQL, then NATS), then the rest."""
        self.stopping = True
        self._wake.set()
        for group in groups:
            await self.stop(group)
        await self.stop()
        for child in self._children:
            if child.task:
                child.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.task

    async def _stop_one(self, child: _Child) -> None:
        proc = child.proc
        if proc is None:
            return
        name = child.spec.name
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(child.spec.stop_signal)
            try:
                async with asyncio.timeout(child.spec.grace_s):
                    await proc.wait()
            except TimeoutError:
                self.say(f"{name} did not stop within {child.spec.grace_s:g} s: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        if child.pump:  # its last lines before ours (bounded: a grandchild may hold the pipe)
            await asyncio.wait({child.pump}, timeout=2)
        if child.started:
            self.say(f"{name} stopped ({describe_exit(proc.returncode)})")
            child.started = 0.0
        self._write_pids()

    def kill_all(self) -> None:
        """SIGKILL every child now (a second Ctrl-C)."""
        for child in self._children:
            if child.proc and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()

    def _write_pids(self) -> None:
        processes = {
            c.spec.name: {
                "pid": c.proc.pid if c.proc else None,
                "running": bool(c.proc and c.proc.returncode is None),
                "started_at": c.started_at,
                "restarts": c.restarts,
                "health_url": c.spec.health_url,
            }
            for c in self._children
        }
        tmp = self.pids_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runner": os.getpid(), "processes": processes}, indent=1))
        tmp.replace(self.pids_path)
