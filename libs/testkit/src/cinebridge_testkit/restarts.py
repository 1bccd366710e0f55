"""Dependency faults as a hospital's IT causes them: PostgreSQL and NATS restarted, or down a
while, under a running service. Each helper returns once the server answers again.

- `restart_postgres(server, mode="fast")`: `pg_ctl stop -m fast` (sessions ended, a checkpoint)
  or `"immediate"` (a crash: WAL recovery at start), `down_s` seconds away, started again.
- `restart_nats(server, keep_state=False)`: the server stopped and started again, with its
  JetStream store wiped when `keep_state` is false (a new volume, a lost disk): streams and
  durable consumers are gone and must be created again by their users; `kill=True` SIGKILLs
  it (no shutdown of its own: what it held but had not written is lost too).
- `published_through_outbox(pool, bus, messages)`: messages put in the outbox and published
  from it into their streams, as a producer's relay does, with no consumer running: what NATS
  holds and loses with its store while the outbox keeps it (cinebridge_common.replay).
- `killed_temp_writer(root, owner)`: a process that claimed `owner`'s temporary directory of
  the media store, SIGKILLed while writing there; returns the file it left.

The blocking `pg_ctl`/process calls run in a thread, so the services under test, in the same
event loop, go on while their dependency is away.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres
from cinebridge_common.messages.base import Message
from cinebridge_common.outbox import OutboxRelay, enqueue

from . import wait_for


async def restart_postgres(
    server: EmbeddedPostgres, *, mode: str = "fast", down_s: float = 0.0
) -> None:
    await asyncio.to_thread(server.stop, mode)
    if down_s:
        await asyncio.sleep(down_s)  # the outage itself, not a wait for an event
    await asyncio.to_thread(server.start)


async def restart_nats(
    server: EmbeddedNats, *, down_s: float = 0.0, keep_state: bool = True, kill: bool = False
) -> None:
    await asyncio.to_thread(server.stop, kill)
    if not keep_state:
        shutil.rmtree(server.data_dir / "js", ignore_errors=True)
    if down_s:
        await asyncio.sleep(down_s)  # the outage itself, not a wait for an event
    await asyncio.to_thread(server.start)


async def published_through_outbox(
    pool: asyncpg.Pool, bus: Bus, messages: list[tuple[Message, str]]
) -> None:
    """(message, Nats-Msg-Id) pairs into the outbox, and published from it by a relay of the
    caller's, which stops once every row of the outbox is published."""
    async with pool.acquire() as conn, conn.transaction():
        for message, msg_id in messages:
            await enqueue(conn, message, msg_id)
    stop = asyncio.Event()
    relay = asyncio.create_task(OutboxRelay(pool, bus, poll_s=0.2).run(stop))
    try:
        await wait_for(
            lambda: pool.fetchval("SELECT bool_and(published_at IS NOT NULL) FROM outbox"),
            60,
            what="every outbox row published",
        )
    finally:
        stop.set()
        await asyncio.wait_for(relay, 60)


def killed_temp_writer(root: Path, owner: str) -> Path:
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from cinebridge_common.store import MediaStore
        store = MediaStore(Path({str(root)!r}))
        store.claim_temp({owner!r})
        path = store.temp_path(".mp4")
        path.write_bytes(b"x" * 1024)
        print(path, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        left = Path(proc.stdout.readline().decode().strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert left.is_file(), f"the writer left no file: {left}"
    return left
