"""Bus and outbox guarantees on a real nats-server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import pytest
from cinebridge_common.bus import Bus, ConsumerSpec, Delivery, Poison, Retry
from cinebridge_common.db import migrate
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres
from cinebridge_common.outbox import OutboxRelay
from cinebridge_common.service import mirror_dead_letters
from cinebridge_testkit import wait_for
from cinebridge_testkit.worker import WorkItem

pytestmark = pytest.mark.integration


def _start_worker(nats_url: str, dsn: str, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cinebridge_testkit.worker", nats_url, dsn, mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, f"worker exited before {marker!r}: {lines}"
        lines.append(line.strip())
        if line.strip() == marker:
            return lines


async def _fresh_bus(nats_url: str) -> Bus:
    bus = await Bus.connect(nats_url, "test")
    await bus.ensure_streams()
    with pytest.raises(Exception):  # noqa: B017 - absent on a fresh stream is fine
        await bus.js.delete_consumer("CB_JOBS", "test-worker")
    return bus


@pytest.mark.parametrize("mode", ["hang-after-commit", "hang-before-commit"])
async def test_sigkill_mid_message_redelivers_and_work_is_done_once(
    nats_url: str, database_url: str, db_pool: asyncpg.Pool, mode: str
) -> None:
    bus = await Bus.connect(nats_url, "test")
    await bus.ensure_streams()
    key = f"job-{uuid.uuid4().hex}"
    worker = _start_worker(nats_url, database_url, mode)
    try:
        await bus.publish(WorkItem(job_key=key), msg_id=key)
        _read_until(worker, "committed" if mode == "hang-after-commit" else "in-transaction")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(60)
        worker = _start_worker(nats_url, database_url, "normal")
        lines = await asyncio.to_thread(_read_until, worker, f"delivered {key} 2")
        assert lines[-1] == f"delivered {key} 2"  # redelivered after the kill

        async def done_once() -> int | None:
            n = await db_pool.fetchval(
                "SELECT count(*) FROM test_work_done WHERE job_key = $1", key
            )
            return int(n) if n else None

        assert await wait_for(done_once, 60, what="the work row") == 1
        await asyncio.sleep(0.5)  # a further (wrong) redelivery would add a row now
        assert await done_once() == 1
    finally:
        worker.kill()
        worker.wait(60)
        await bus.close()


async def test_crash_between_commit_and_publish_still_publishes(
    nats_url: str, database_url: str, db_pool: asyncpg.Pool
) -> None:
    """The producer commits the outbox row and dies before publishing; a relay publishes later."""
    key = f"outbox-{uuid.uuid4().hex}"
    code = (
        "import asyncio, os, signal, sys\n"
        "from cinebridge_common.db import create_pool\n"
        "from cinebridge_common.outbox import enqueue\n"
        "from cinebridge_testkit.worker import WorkItem\n"
        "async def main():\n"
        "    pool = await create_pool(sys.argv[1])\n"
        "    async with pool.acquire() as conn, conn.transaction():\n"
        "        await enqueue(conn, WorkItem(job_key=sys.argv[2]), sys.argv[2])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code, database_url, key], check=False)
    assert result.returncode == -signal.SIGKILL
    assert await db_pool.fetchval("SELECT published_at FROM outbox WHERE msg_id = $1", key) is None

    bus = await Bus.connect(nats_url, "relay")
    await bus.ensure_streams()
    received: asyncio.Queue[WorkItem] = asyncio.Queue()

    async def handle(job: WorkItem, d: Delivery) -> None:
        if job.job_key == key:
            await received.put(job)

    durable = f"outbox-{uuid.uuid4().hex[:8]}"
    bus.start_consumer(ConsumerSpec("CB_JOBS", durable, "cb.job.test.work"), WorkItem, handle)
    stop = asyncio.Event()
    relay = asyncio.create_task(OutboxRelay(db_pool, bus, poll_s=0.2).run(stop))
    try:
        job = await asyncio.wait_for(received.get(), 10)
        assert job.job_key == key

        async def marked() -> bool:  # the relay commits after the batch's PubAcks
            sql = "SELECT published_at FROM outbox WHERE msg_id = $1"
            return await db_pool.fetchval(sql, key) is not None

        await wait_for(marked, 5, what="outbox row marked published")
    finally:
        stop.set()
        await relay
        await bus.close()


async def test_duplicate_publish_is_deduplicated(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "dedup")
    await bus.ensure_streams()
    key = uuid.uuid4().hex
    first = await bus.publish(WorkItem(job_key=key), msg_id=key)
    second = await bus.publish(WorkItem(job_key=key), msg_id=key)
    assert not first.duplicate and second.duplicate
    await bus.close()


async def test_nak_with_delay_is_honoured(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "nak")
    await bus.ensure_streams()
    key = uuid.uuid4().hex
    seen: list[float] = []
    done = asyncio.Event()

    async def handle(job: WorkItem, d: Delivery) -> None:
        if job.job_key != key:
            return
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise Retry("pacs busy", delay=2.0)
        done.set()

    durable = f"nak-{uuid.uuid4().hex[:8]}"
    bus.start_consumer(ConsumerSpec("CB_JOBS", durable, "cb.job.test.work"), WorkItem, handle)
    await bus.publish(WorkItem(job_key=key), msg_id=key)
    await asyncio.wait_for(done.wait(), 15)
    assert seen[1] - seen[0] >= 1.9
    await bus.close()


async def test_poison_message_dead_lettered_with_reason(
    nats_url: str, db_pool: asyncpg.Pool
) -> None:
    bus = await Bus.connect(nats_url, "poison")
    await bus.ensure_streams()
    mirror_dead_letters(bus, db_pool)
    keys = {"fails": uuid.uuid4().hex, "poison": uuid.uuid4().hex}
    attempts: dict[str, int] = {}

    async def handle(job: WorkItem, d: Delivery) -> None:
        attempts[job.job_key] = d.attempt
        if job.job_key == keys["poison"]:
            raise Poison("not a video: zero-length file")
        if job.job_key == keys["fails"]:
            raise RuntimeError("database says no")

    durable = f"poison-{uuid.uuid4().hex[:8]}"
    spec = ConsumerSpec("CB_JOBS", durable, "cb.job.test.work", max_deliver=3, backoff_s=(0.1,))
    bus.start_consumer(spec, WorkItem, handle)
    for key in keys.values():
        await bus.publish(WorkItem(job_key=key), msg_id=key)

    async def letters() -> list[asyncpg.Record] | None:
        rows = await db_pool.fetch("SELECT * FROM dead_letters WHERE consumer = $1", durable)
        return rows if len(rows) == 2 else None

    rows = {r["payload"].split('"job_key":"')[1][:32]: r for r in await wait_for(letters, 20)}
    assert "gave up after 3 deliveries" in rows[keys["fails"]]["reason"]
    assert "database says no" in rows[keys["fails"]]["reason"]
    assert rows[keys["poison"]]["reason"] == "not a video: zero-length file"
    assert attempts[keys["fails"]] == 3 and attempts[keys["poison"]] == 1
    # The dead letter is kept on the bus (CB_DLQ) first; the table is its mirror.
    info = await bus.js.stream_info("CB_DLQ")
    assert info.state.messages >= 2
    await bus.close()


async def test_consumer_survives_nats_restart(nats_server: EmbeddedNats, nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "restart")
    await bus.ensure_streams()
    got: asyncio.Queue[str] = asyncio.Queue()
    tag = uuid.uuid4().hex

    async def handle(job: WorkItem, d: Delivery) -> None:
        if job.job_key.startswith(tag):
            await got.put(job.job_key)

    durable = f"restart-{tag[:8]}"
    spec = ConsumerSpec("CB_JOBS", durable, "cb.job.test.work", deliver_new_only=True)
    bus.start_consumer(spec, WorkItem, handle)
    await asyncio.sleep(0.5)
    await bus.publish(WorkItem(job_key=f"{tag}-before"), msg_id=uuid.uuid4().hex)
    assert await asyncio.wait_for(got.get(), 10) == f"{tag}-before"
    nats_server.stop()
    await asyncio.sleep(1)
    nats_server.start()
    await bus.publish(WorkItem(job_key=f"{tag}-after"), msg_id=uuid.uuid4().hex, attempts=20)
    assert await asyncio.wait_for(got.get(), 30) == f"{tag}-after"
    await bus.close()


async def test_close_ends_a_consumer_that_lost_its_cancellation(nats_url: str) -> None:
    """A cancellation can be lost (Python 3.11's `wait_for`, used inside nats-py's fetch,
    swallows one that arrives as its inner wait completes): the fetch loop goes on. close()
    must still end it and return, not wait for it for ever."""
    bus = await Bus.connect(nats_url, "lost-cancel")
    await bus.ensure_streams()
    tag = uuid.uuid4().hex
    entered = asyncio.Event()
    swallowed: list[bool] = []

    async def handle(job: WorkItem, d: Delivery) -> None:
        if not job.job_key.startswith(tag):
            return
        entered.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            swallowed.append(True)  # lost, as in the race above: the loop fetches again

    spec = ConsumerSpec(
        "CB_JOBS", f"lostcancel-{tag[:8]}", "cb.job.test.work", deliver_new_only=True
    )
    bus.start_consumer(spec, WorkItem, handle)
    await asyncio.sleep(0.5)
    await bus.publish(WorkItem(job_key=f"{tag}-held"), msg_id=uuid.uuid4().hex)
    await asyncio.wait_for(entered.wait(), 10)
    # Waited for without cancelling it: a cancelled close() would pass the cancellation on
    # to the task it awaits, which would hide the defect.
    closing = asyncio.create_task(bus.close())
    await asyncio.wait([closing], timeout=60)
    assert closing.done(), "close() still waits for a consumer whose cancellation was lost"
    assert swallowed == [True]


async def test_consumer_lives_on_when_an_ack_cannot_be_sent(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ack after a handled message times out (as around a NATS restart): the consume loop
    must not die with it. The message comes back, unsettled, and new messages are handled."""
    from nats.aio.msg import Msg
    from nats.errors import TimeoutError as NatsTimeoutError

    real_ack = Msg.ack_sync
    failed: list[bool] = []

    async def ack_once_lost(self: Msg, timeout: float = 1.0) -> Msg:
        if not failed:
            failed.append(True)
            raise NatsTimeoutError
        return await real_ack(self, timeout=timeout)

    monkeypatch.setattr(Msg, "ack_sync", ack_once_lost)
    bus = await Bus.connect(nats_url, "ack-lost")
    await bus.ensure_streams()
    got: list[str] = []
    tag = uuid.uuid4().hex

    async def handle(job: WorkItem, d: Delivery) -> None:
        if job.job_key.startswith(tag):
            got.append(job.job_key)

    spec = ConsumerSpec(
        "CB_JOBS", f"acklost-{tag[:8]}", "cb.job.test.work", ack_wait_s=2.0, deliver_new_only=True
    )
    bus.start_consumer(spec, WorkItem, handle)
    await asyncio.sleep(0.5)
    await bus.publish(WorkItem(job_key=f"{tag}-first"), msg_id=uuid.uuid4().hex)
    await bus.publish(WorkItem(job_key=f"{tag}-second"), msg_id=uuid.uuid4().hex)

    async def all_handled() -> bool:
        return got.count(f"{tag}-first") >= 2 and f"{tag}-second" in got

    await wait_for(all_handled, 20, what="the unacked message again, and the next one")
    assert failed == [True]
    await bus.close()


async def test_migrations_apply_once_under_concurrency(postgres: EmbeddedPostgres) -> None:
    """Three services starting at once on an empty database: every migration applied once."""
    from cinebridge_common.db import available_migrations, create_pool, repeatable_migrations
    from cinebridge_testkit.databases import create_database, drop_database

    name = await create_database(postgres, "m")
    pools = [await create_pool(postgres.dsn_for(name)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(p) for p in pools))
        applied = [n for r in results for n in r]
        numbered = [file for _, file, _ in available_migrations()]
        repeatable = [file for file, _ in repeatable_migrations()]
        # each exactly once, by whichever pool won the lock
        assert sorted(applied) == sorted(numbered + repeatable)
        count = await pools[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(numbered)
        assert await migrate(pools[1]) == []
    finally:
        for p in pools:
            await p.close()
        await drop_database(postgres, name)


async def test_unreachable_database_gives_clear_error() -> None:
    from cinebridge_common.db import DatabaseUnavailable, create_pool
    from cinebridge_common.embedded import free_port

    with pytest.raises(DatabaseUnavailable, match=r"unreachable.*CB_DATABASE_URL"):
        await create_pool(f"postgresql://x:secret@127.0.0.1:{free_port()}/db", timeout_s=1)


async def test_outbox_relay_publishes_batches_in_order_and_stops_at_a_failure(
    nats_url: str, db_pool: asyncpg.Pool
) -> None:
    """250 rows (three batches) arrive once each, in row order, all marked published. A row
    whose subject no stream takes fails its PubAck: the rows before it are marked, it counts
    an attempt with the error, and it and the rows after it wait for the next pass."""
    from cinebridge_common.outbox import enqueue

    bus = await Bus.connect(nats_url, "relay-order")
    await bus.ensure_streams()
    tag = uuid.uuid4().hex[:8]
    keys = [f"order-{tag}-{n:03d}" for n in range(250)]
    async with db_pool.acquire() as conn, conn.transaction():
        for key in keys:
            await enqueue(conn, WorkItem(job_key=key), msg_id=key)
    got: list[str] = []

    async def handle(job: WorkItem, d: Delivery) -> None:
        if job.job_key.startswith(f"order-{tag}-"):
            got.append(job.job_key)

    bus.start_consumer(
        ConsumerSpec("CB_JOBS", f"order-{tag}", "cb.job.test.work", workers=1, batch=1),
        WorkItem,
        handle,
    )
    relay = OutboxRelay(db_pool, bus, poll_s=0.2)
    try:
        assert await relay.publish_pending() == 100
        while await relay.publish_pending():
            pass

        async def all_arrived() -> bool:
            return len(got) >= len(keys)

        await wait_for(all_arrived, 20, what="250 relayed messages")
        assert got == keys
        pending = await db_pool.fetchval(
            "SELECT count(*) FROM outbox WHERE msg_id LIKE $1 AND published_at IS NULL",
            f"order-{tag}-%",
        )
        assert pending == 0

        async with db_pool.acquire() as conn, conn.transaction():
            await enqueue(conn, WorkItem(job_key=f"before-{tag}"), msg_id=f"before-{tag}")
            await conn.execute(
                """INSERT INTO outbox (msg_id, subject, payload)
                   VALUES ($1, 'cb.nostream.test', '\\x7b7d'::bytea)""",
                f"lost-{tag}",
            )
            await enqueue(conn, WorkItem(job_key=f"after-{tag}"), msg_id=f"after-{tag}")
        assert await relay.publish_pending() == 1
        rows = {
            r["msg_id"]: r
            for r in await db_pool.fetch(
                """SELECT msg_id, published_at, attempts, last_error FROM outbox
                   WHERE msg_id = ANY($1)""",
                [f"before-{tag}", f"lost-{tag}", f"after-{tag}"],
            )
        }
        assert rows[f"before-{tag}"]["published_at"] is not None
        assert rows[f"lost-{tag}"]["published_at"] is None
        assert rows[f"lost-{tag}"]["attempts"] == 1 and rows[f"lost-{tag}"]["last_error"]
        assert rows[f"after-{tag}"]["published_at"] is None
    finally:
        await db_pool.execute("DELETE FROM outbox WHERE msg_id = $1", f"lost-{tag}")
        await bus.close()
