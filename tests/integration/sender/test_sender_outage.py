"""PostgreSQL stopped for 60 s in the middle of 200 deliveries to DCMTK storescp: the sender keeps
running, says it is not ready (naming PostgreSQL) while the database is away, and afterwards every
instance is at the PACS and every delivery is recorded sent once. An announcement given up while
the database was away is replayed from its dead letter."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.db import create_pool, migrate
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from cinebridge_common.messages import DeadLetter
from cinebridge_common.store import MediaStore
from cinebridge_testkit import wait_for
from cinebridge_testkit.sender_harness import SenderHarness, tool, wait_states
from cinebridge_testkit.storage_peers import DcmtkStorescp, ScriptedScp

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg")
    await asyncio.to_thread(server.start)
    pool = await create_pool(server.dsn)
    await migrate(pool)
    await pool.close()
    yield server
    await asyncio.to_thread(server.stop, "immediate")


def _readiness(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None


async def test_postgres_down_60_s_during_200_deliveries_to_storescp(
    own_nats: EmbeddedNats, own_postgres: EmbeddedPostgres, bus: Bus, tmp_path: Path
) -> None:
    storescp = DcmtkStorescp(tool("storescp"), tmp_path / "storescp" / "out", free_port())
    storescp.start()
    harness = SenderHarness(own_nats, own_postgres.dsn, MediaStore(tmp_path / "media"), tmp_path)
    health_port = free_port()
    pool: asyncpg.Pool | None = None
    try:
        harness.start(
            destinations=[
                {
                    "name": "dcmtk",
                    "ae_title": "STORESCP",
                    "host": "127.0.0.1",
                    "port": storescp.port,
                }
            ],
            CB_HEALTH_PORT=str(health_port),
        )

        async def ready() -> bool:
            answer = await asyncio.to_thread(_readiness, health_port)
            return answer is not None and answer[0] == 200

        await wait_for(ready, 60, 0.2, what="the sender ready")
        msgs = harness.make(200)
        first, second = msgs[:100], msgs[100:]
        await harness.announce(bus, first)
        await wait_for(
            lambda: _value(len(storescp.received()) >= 10), 60, 0.1, what="deliveries under way"
        )

        # PostgreSQL goes away in the middle of the work; the second half arrives meanwhile.
        await asyncio.to_thread(own_postgres.stop, "immediate")
        stopped = time.monotonic()
        await harness.announce(bus, second)

        async def not_ready_naming_postgres() -> bool:
            answer = await asyncio.to_thread(_readiness, health_port)
            return (
                answer is not None
                and answer[0] == 503
                and answer[1]["dependencies"]["postgres"].startswith("down")
            )

        await wait_for(not_ready_naming_postgres, 30, 0.2, what="readiness naming postgres")
        remaining = OUTAGE_S - (time.monotonic() - stopped)
        await asyncio.sleep(max(0.0, remaining))  # the outage itself, not a wait for an event
        assert harness.proc is not None and harness.proc.poll() is None, "the sender exited"
        await asyncio.to_thread(own_postgres.start)

        pool = await create_pool(own_postgres.dsn)
        await wait_states(pool, {"sent": 200}, 300, harness)
        await wait_for(ready, 60, 0.2, what="the sender ready again")
        assert harness.proc.poll() is None
        received = storescp.received()
        assert set(received) == {m.sop_instance_uid for m in msgs}
        sent_attempts = await pool.fetch(
            "SELECT delivery_id, count(*) AS n FROM delivery_attempts "
            "WHERE outcome = 'sent' GROUP BY delivery_id"
        )
        assert len(sent_attempts) == 200 and all(r["n"] == 1 for r in sent_attempts)
    finally:
        harness.stop()
        storescp.stop()
        if pool is not None:
            await pool.close()


async def _value(ok: bool) -> bool:
    return ok


async def test_instance_announcement_given_up_is_replayed_from_its_dead_letter(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    with ScriptedScp() as scp:
        harness.start(
            destinations=[
                {"name": "pacs", "ae_title": "SCRIPTED", "host": "127.0.0.1", "port": scp.port}
            ]
        )
        poison, lost = harness.make(2)
        # What the bus stores when JetStream gives an announcement up: first a poison one
        # (stays a dead letter), then one whose deliveries ran out while the database was away.
        for seq, (msg, reason) in enumerate(
            [(poison, "undecodable InstanceCreated"), (lost, "gave up after 50 deliveries: ...")]
        ):
            letter = DeadLetter(
                stream="CB_EVENTS",
                consumer="sender-instance-created",
                original_subject=msg.subject_for(),
                stream_seq=1000 + seq,
                deliveries=50,
                reason=reason,
                payload=msg.to_bytes().decode(),
            )
            await bus.publish(letter, msg_id=f"test-dlq-{seq}")
        await wait_states(db_pool, {"sent": 1}, 60, harness)
    assert set(scp.received) == {lost.sop_instance_uid}
    rows = await db_pool.fetch("SELECT id FROM outgoing_instances")
    assert [str(r["id"]) for r in rows] == [lost.instance_id]
