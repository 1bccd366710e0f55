"""Worker processes that share the DICOM port (SO_REUSEPORT), so concurrent senders use every core.

Each association runs in a Python thread of its process (cinebridge_dicom's acceptor), so
concurrent senders share one GIL. With `CB_SCP_WORKERS=N` the service process starts N-1 copies
of itself that bind the same port; the kernel spreads new connections over the N listening
sockets. Each worker is a full service instance (`<instance id>-w<i>`: own pool, bus, heartbeat,
temp dir). A worker that dies stops the whole service, so that the supervisor (compose)
restarts it in one piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys

from cinebridge_common.logging import kv
from pydantic import SecretStr

from .settings import ScpSettings

log = logging.getLogger(__name__)


def child_environment(settings: ScpSettings, index: int) -> dict[str, str]:
    """The parent's effective settings as CB_* variables, plus the worker's own identity."""
    env = dict(os.environ)
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        key = f"CB_{name.upper()}"
        if value is None:
            env.pop(key, None)
        elif isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        elif isinstance(value, list | dict):
            env[key] = json.dumps(value)
        else:
            env[key] = str(value)
    env["CB_SCP_WORKER_INDEX"] = str(index)
    env["CB_INSTANCE_ID"] = f"{settings.instance_id}-w{index}"
    env["CB_HEALTH_PORT"] = "0"
    return env


class Workers:
    """Starts, watches and stops the extra worker processes of one service instance."""

    def __init__(self, settings: ScpSettings) -> None:
        self.settings = settings
        self.procs: list[asyncio.subprocess.Process] = []
        self._stopping = False

    async def start(self) -> None:
        for index in range(1, self.settings.scp_workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cinebridge_scp", env=child_environment(self.settings, index)
            )
            self.procs.append(proc)
        log.info("workers started", extra=kv(pids=",".join(str(p.pid) for p in self.procs)))

    async def watch(self, stop: asyncio.Event) -> None:
        """Return (and stop the service) when any worker exits on its own."""
        waits = [asyncio.create_task(proc.wait()) for proc in self.procs]
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not self._stopping:
            code = next(iter(done)).result()
            log.error("worker exited, stopping the service", extra=kv(code=code))
            stop.set()

    async def stop(self) -> None:
        self._stopping = True
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), self.settings.shutdown_timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
