"""Dependency faults as a hospital's IT causes them: PostgreSQL and NATS restarted, or down a
while, under a running service. Each helper returns once the server answers again.

- `restart_postgres(server, mode="fast")`: `pg_ctl stop -m fast` (sessions ended, a checkpoint)
  or `"immediate"` (a crash: WAL recovery at start), `down_s` seconds away, started again.
- `restart_nats(server, keep_state=False)`: the server stopped and started again, with its
  JetStream store wiped when `keep_state` is false (a new volume, a lost disk): streams and
  durable consumers are gone and must be created again by their users.

The blocking `pg_ctl`/process calls run in a thread, so the services under test, in the same
event loop, go on while their dependency is away.
"""

from __future__ import annotations

import asyncio
import shutil

from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres


async def restart_postgres(
    server: EmbeddedPostgres, *, mode: str = "fast", down_s: float = 0.0
) -> None:
    await asyncio.to_thread(server.stop, mode)
    if down_s:
        await asyncio.sleep(down_s)  # the outage itself, not a wait for an event
    await asyncio.to_thread(server.start)


async def restart_nats(
    server: EmbeddedNats, *, down_s: float = 0.0, keep_state: bool = True
) -> None:
    await asyncio.to_thread(server.stop)
    if not keep_state:
        shutil.rmtree(server.data_dir / "js", ignore_errors=True)
    if down_s:
        await asyncio.sleep(down_s)  # the outage itself, not a wait for an event
    await asyncio.to_thread(server.start)
