"""A service survives its dependencies: relays, supervised loops, consumers, health and readiness
against a real nats-server and a real PostgreSQL that the tests stop, restart and break."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.exceptions._base import InternalClientError
from cinebridge_common.bus import Bus, ConsumerSpec, Delivery, StreamSpec
from cinebridge_common.db import create_pool, migrate
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres
from cinebridge_common.messages import ServiceHeartbeat
from cinebridge_common.outbox import OutboxRelay, enqueue
from cinebridge_common.service import ServiceContext
from cinebridge_common.settings import ServiceSettings
from cinebridge_common.store import temp_owner
from cinebridge_testkit import wait_for
from cinebridge_testkit.restarts import killed_temp_writer
from cinebridge_testkit.worker import WorkItem
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

pytestmark = pytest.mark.integration


class _FlakyRelay(OutboxRelay):
    """A relay whose first passes die the way asyncpg does when the connection drops mid-COMMIT."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    async def publish_pending(self) -> int:
        if self.failures:
            self.failures -= 1
            raise InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
        return await super().publish_pending()


class _HeldRelay(OutboxRelay):
    """A relay whose first pass stays open after its SELECT until the test releases it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.passes = 0

    async def publish_pending(self) -> int:
        published = await super().publish_pending()
        self.passes += 1
        if self.passes == 1:
            self.held.set()
            await self.release.wait()
        return published


class _FrozenRelay(OutboxRelay):
    """A relay that stops for good once it claimed its rows, as a frozen or hung process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claimed = asyncio.Event()

    async def _claim(self, conn: Any) -> list[Any]:
        rows = await super()._claim(conn)
        if rows:
            self.claimed.set()
            await asyncio.Event().wait()
        return rows


async def test_rows_claimed_by_a_frozen_relay_go_through_the_others(
    nats_url: str, db_pool: asyncpg.Pool
) -> None:
    """A relay that froze mid-pass (SIGSTOP, a hung disk) held its rows locked for as long
    as it stayed frozen, so every service's messages among them waited for it: PostgreSQL
    now ends its session after the pass's hold limit and another relay publishes them."""
    bus = await Bus.connect(nats_url, "relay-frozen")
    await bus.ensure_streams()
    stop = asyncio.Event()
    key = f"relay-frozen-{uuid.uuid4()}"
    async with db_pool.acquire() as conn, conn.transaction():
        await enqueue(conn, WorkItem(job_key="held-by-a-frozen-relay"), key)
    frozen = _FrozenRelay(db_pool, bus, poll_s=0.2, hold_limit_s=2.0)
    frozen_task = asyncio.create_task(frozen.run(stop))
    other_task: asyncio.Task[None] | None = None

    async def published() -> bool:
        return bool(
            await db_pool.fetchval(
                "SELECT published_at IS NOT NULL FROM outbox WHERE msg_id = $1", key
            )
        )

    try:
        await asyncio.wait_for(frozen.claimed.wait(), 60)
        other_task = asyncio.create_task(OutboxRelay(db_pool, bus, poll_s=0.2).run(stop))
        await wait_for(published, 60, what="the row published by the other relay")
    finally:
        stop.set()
        for task in (frozen_task, other_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await bus.close()


async def test_a_row_committed_during_a_pass_is_relayed_without_waiting_for_the_poll(
    nats_url: str, db_pool: asyncpg.Pool
) -> None:
    """The NOTIFY of a row committed after a pass's SELECT arrives while the pass runs; it must
    wake the next pass, not be cleared with the rows that pass served (the poll interval is
    far beyond the test's bounds, so only that NOTIFY can move the row)."""
    bus = await Bus.connect(nats_url, "relay-wake")
    await bus.ensure_streams()
    stop = asyncio.Event()
    relay = _HeldRelay(db_pool, bus, poll_s=600)
    task = asyncio.create_task(relay.run(stop))
    key = f"relay-wake-{uuid.uuid4()}"

    async def published() -> bool:
        return bool(
            await db_pool.fetchval(
                "SELECT published_at IS NOT NULL FROM outbox WHERE msg_id = $1", key
            )
        )

    async def woken() -> bool:
        return relay._wake.is_set()

    try:
        await asyncio.wait_for(relay.held.wait(), 60)
        async with db_pool.acquire() as conn, conn.transaction():
            await enqueue(conn, WorkItem(job_key="during-a-pass"), key)
        await wait_for(woken, 60, what="the NOTIFY reaching the relay during its pass")
        relay.release.set()
        await wait_for(published, 60, what="the row committed during the pass published")
        assert not task.done()
    finally:
        relay.release.set()
        stop.set()
        await asyncio.wait_for(task, 60)
        await bus.close()


async def test_a_named_relay_wakes_for_its_own_service_and_for_unnamed_sessions(
    nats_url: str, database_url: str, db_pool: asyncpg.Pool
) -> None:
    """A service's relay (named as its pool's sessions) is woken by the rows its own service
    enqueues and by those of a session without a name (a command-line tool, a test); another
    service's rows are left to that service's relay. The poll interval is out of the test's
    reach, so only a notification can move the rows."""
    name = f"cinebridge-relay-{uuid.uuid4().hex[:8]}"
    bus = await Bus.connect(nats_url, "relay-named")
    await bus.ensure_streams()
    own = await create_pool(database_url, application_name=name)
    stop = asyncio.Event()
    relay = _HeldRelay(own, bus, poll_s=600, name=name)
    task = asyncio.create_task(relay.run(stop))
    assert relay.wakes_for(name) and relay.wakes_for("")
    assert not relay.wakes_for("cinebridge-another-service")
    try:
        await asyncio.wait_for(relay.held.wait(), 60)
        relay.release.set()  # the first pass ends; from now on only notifications wake it
        for pool in (own, db_pool):
            key = f"relay-named-{uuid.uuid4()}"
            async with pool.acquire() as conn, conn.transaction():
                await enqueue(conn, WorkItem(job_key="named"), key)

            async def published(key: str = key) -> bool:
                return bool(
                    await db_pool.fetchval(
                        "SELECT published_at IS NOT NULL FROM outbox WHERE msg_id = $1", key
                    )
                )

            whose = name if pool is own else "a session without a name"
            await wait_for(published, 60, what=f"the row of {whose} relayed")
        assert not task.done()
    finally:
        relay.release.set()
        stop.set()
        await asyncio.wait_for(task, 60)
        await own.close()
        await bus.close()


async def _pending(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def test_relay_survives_internal_client_error_and_terminated_backends(
    nats_url: str, db_pool: asyncpg.Pool, database_url: str
) -> None:
    bus = await Bus.connect(nats_url, "relay-faults")
    await bus.ensure_streams()
    stop = asyncio.Event()
    # No polling within the test's bounds: only NOTIFY (listened again after its connection was
    # terminated) and the retry of failed passes move the rows.
    relay = _FlakyRelay(db_pool, bus, poll_s=600, batch=20, failures=3)
    task = asyncio.create_task(relay.run(stop))
    admin = await asyncpg.connect(database_url)
    try:
        for n in range(300):
            async with admin.transaction():
                await enqueue(admin, WorkItem(job_key=f"k{n}"), f"relay-faults-{uuid.uuid4()}")
            if n % 60 == 30:
                # Kill every backend of this database but the test's own, the relay's
                # mid-transaction ones included: the next statement on them fails in its pass.
                await admin.execute(
                    """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()"""
                )
        async with asyncio.timeout(60):
            while await _pending(db_pool):
                assert not task.done(), "the relay ended"
                await asyncio.sleep(0.2)
        assert relay.failures == 0
        assert not task.done()
    finally:
        stop.set()
        # Stopping is prompt on a quiet machine; the bound only catches a relay that hangs (a
        # loaded CI box once needed over 10 s to finish the pass in hand).
        await asyncio.wait_for(task, 60)
        await admin.close()
        await bus.close()


async def test_outbox_published_rows_are_purged_after_retention(
    nats_url: str, db_pool: asyncpg.Pool
) -> None:
    bus = await Bus.connect(nats_url, "relay-retention")
    await bus.ensure_streams()
    async with db_pool.acquire() as conn, conn.transaction():
        await enqueue(conn, WorkItem(job_key="old"), f"retention-old-{uuid.uuid4()}")
        await enqueue(conn, WorkItem(job_key="new"), f"retention-new-{uuid.uuid4()}")
    relay = OutboxRelay(db_pool, bus, retention_s=3600, purge_every_s=0)
    assert await relay.publish_pending() == 2
    await db_pool.execute(
        "UPDATE outbox SET published_at = now() - interval '2 hours' "
        "WHERE msg_id LIKE 'retention-old-%'"
    )
    assert await relay._purge_published() == 1
    left = await db_pool.fetch("SELECT msg_id FROM outbox")
    assert [r["msg_id"].startswith("retention-new-") for r in left] == [True]
    await bus.close()


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port.split("/")[0]))
    path = "/" + url.split("/", 3)[3] if url.count("/") > 2 else "/"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
async def own_postgres(tmp_path: Path) -> Any:
    """A PostgreSQL of this test alone, which it may stop and start."""
    server = EmbeddedPostgres(tmp_path / "own-pg")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop, "immediate")


async def test_service_waits_for_postgres_survives_its_outage_and_says_so(
    nats_url: str, own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    await asyncio.to_thread(own_postgres.stop, "immediate")
    settings = ServiceSettings(
        nats_url=nats_url,
        database_url=own_postgres.dsn,  # type: ignore[arg-type]
        media_root=tmp_path / "media",
        instance_id=f"faults-{uuid.uuid4().hex[:6]}",
        heartbeat_interval_s=30.0,  # only a change of a dependency may explain a prompt beat
    )
    listener = await Bus.connect(nats_url, "faults-heartbeats")
    beats: list[ServiceHeartbeat] = []

    async def on_beat(msg: Any) -> None:
        beat = ServiceHeartbeat.from_bytes(msg.data)
        if beat.instance == settings.instance_id:
            beats.append(beat)

    await listener.subscribe_events(ServiceHeartbeat.subject, on_beat)
    ctx = ServiceContext("faults", settings)
    entered = asyncio.create_task(ctx.__aenter__())
    try:
        # Started while PostgreSQL is away: it waits (alive, not ready, saying why).
        status = await wait_for(
            lambda: _status_if(ctx, lambda s: s["dependencies"]["postgres"].startswith("down")),
            30,
            what="not ready because of postgres",
        )
        assert status == 503 and not entered.done()
        await asyncio.to_thread(own_postgres.start)
        async with asyncio.timeout(60):
            await entered
        runs: list[int] = []

        async def flaky_loop() -> None:
            runs.append(1)
            if len(runs) < 3:
                raise InternalClientError("cannot switch to state 15")
            await ctx.stop.wait()

        ctx.spawn(flaky_loop, "flaky")
        serving = asyncio.create_task(ctx.serve_forever())
        await wait_for(lambda: _status_if(ctx, lambda s: s["ready"]), 30, what="ready")
        await wait_for(lambda: _value(len(runs) >= 3), 30, what="the loop restarted twice")
        assert ctx.restarts[0] >= 2 and not ctx.stop.is_set()

        # PostgreSQL goes away: not ready, the heartbeat names it at once; nothing stops.
        await asyncio.to_thread(own_postgres.stop, "immediate")
        await wait_for(
            lambda: _value(
                any(
                    b.state == "degraded" and b.detail["postgres"].startswith("down") for b in beats
                )
            ),
            30,
            what="a degraded heartbeat naming postgres",
        )
        assert await _status_if(ctx, lambda s: not s["ready"]) == 503
        await asyncio.to_thread(own_postgres.start)
        await wait_for(lambda: _status_if(ctx, lambda s: s["ready"]), 60, what="ready again")
        assert beats[-1].detail["postgres"] == "up" or await wait_for(
            lambda: _value(beats[-1].detail["postgres"] == "up"), 30, what="an up heartbeat"
        )
        assert not ctx.stop.is_set() and not serving.done()
        ctx.stop.set()
        await asyncio.wait_for(serving, 10)
    finally:
        ctx.stop.set()
        if entered.done() and entered.exception() is None:
            await ctx.__aexit__(None, None, None)
        else:
            entered.cancel()
        await listener.close()


async def _value(ok: bool) -> bool:
    return ok


async def _status_if(ctx: ServiceContext, ok: Any) -> int | None:
    try:
        code, body = await _get(ctx.health.url + "/readyz")
    except OSError:
        return None
    return code if ok(body) else None


async def test_changed_consumer_configuration_is_applied_and_keeps_consuming(
    nats_url: str,
) -> None:
    bus = await Bus.connect(nats_url, "consumer-change")
    await bus.ensure_streams()
    durable = f"change-{uuid.uuid4().hex[:8]}"
    subject = WorkItem.subject
    # An older release made the durable differently: acks of everything-before, a start at new
    # messages only, fewer deliveries. Two messages were consumed and acknowledged with it.
    await bus.js.add_consumer(
        "CB_JOBS",
        ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.NEW,
            max_deliver=2,
        ),
    )
    old = [uuid.uuid4().hex for _ in range(2)]
    for key in old:
        await bus.publish(WorkItem(job_key=key), msg_id=key)
    sub = await bus.js.pull_subscribe_bind(durable, "CB_JOBS")
    fetched = await sub.fetch(2, timeout=10)
    await fetched[-1].ack_sync()
    await sub.unsubscribe()

    got: asyncio.Queue[str] = asyncio.Queue()

    async def handle(job: WorkItem, _: Delivery) -> None:
        await got.put(job.job_key)

    spec = ConsumerSpec("CB_JOBS", durable, subject, max_deliver=5, backoff_s=(0.1,))
    bus.start_consumer(spec, WorkItem, handle)
    fresh = uuid.uuid4().hex
    await bus.publish(WorkItem(job_key=fresh), msg_id=fresh)
    async with asyncio.timeout(30):
        first = await got.get()
    # Recreated from its ack floor: what was acknowledged is not delivered again, and JetStream
    # delivers in stream order, so a redelivery of the old ones would have come first.
    assert first == fresh
    info = await bus.js.consumer_info("CB_JOBS", durable)
    assert info.config.ack_policy == AckPolicy.EXPLICIT and info.config.max_deliver == 5

    # A change the server can make in place is an update; the running loop keeps consuming.
    await bus.ensure_consumer(
        ConsumerSpec("CB_JOBS", durable, subject, max_deliver=7, ack_wait_s=12)
    )
    info = await bus.js.consumer_info("CB_JOBS", durable)
    assert info.config.max_deliver == 7 and info.config.ack_wait == 12
    later = uuid.uuid4().hex
    await bus.publish(WorkItem(job_key=later), msg_id=later)
    async with asyncio.timeout(30):
        assert await got.get() == later

    # Deleted under the running loop: it is recreated and consuming goes on.
    await bus.js.delete_consumer("CB_JOBS", durable)
    last = uuid.uuid4().hex
    await bus.publish(WorkItem(job_key=last), msg_id=last)
    async with asyncio.timeout(60):
        while await got.get() != last:
            pass
    await bus.close()


async def test_migrated_pool_is_usable_after_postgres_restart(
    own_postgres: EmbeddedPostgres,
) -> None:
    """The pool of a running service reconnects by itself after PostgreSQL restarts."""
    pool = await create_pool(own_postgres.dsn)
    try:
        await migrate(pool)
        await asyncio.to_thread(own_postgres.stop, "immediate")
        await asyncio.to_thread(own_postgres.start)

        async def answers() -> bool:
            try:
                return bool(await pool.fetchval("SELECT 1"))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False

        assert await wait_for(answers, 30, what="the pool answers again")
    finally:
        await pool.close()


async def test_service_waits_for_nats_and_its_consumers_survive_an_outage(
    database_url: str, tmp_path: Path
) -> None:
    nats = EmbeddedNats(tmp_path / "own-nats")  # not started: the service starts first
    settings = ServiceSettings(
        nats_url=nats.url,
        database_url=database_url,  # type: ignore[arg-type]
        media_root=tmp_path / "media",
        instance_id=f"faults-{uuid.uuid4().hex[:6]}",
    )
    ctx = ServiceContext("faults", settings)
    entered = asyncio.create_task(ctx.__aenter__())
    publisher: Bus | None = None
    try:
        await wait_for(
            lambda: _status_if(ctx, lambda s: s["dependencies"]["nats"].startswith("down")),
            30,
            what="not ready because of nats",
        )
        assert not entered.done()
        await asyncio.to_thread(nats.start)
        async with asyncio.timeout(60):
            await entered
        got: asyncio.Queue[str] = asyncio.Queue()

        async def handle(job: WorkItem, _: Delivery) -> None:
            await got.put(job.job_key)

        spec = ConsumerSpec("CB_JOBS", "faults-nats", WorkItem.subject, backoff_s=(0.1,))
        ctx.bus.start_consumer(spec, WorkItem, handle)
        serving = asyncio.create_task(ctx.serve_forever())
        await wait_for(lambda: _status_if(ctx, lambda s: s["ready"]), 30, what="ready")
        publisher = await Bus.connect(nats.url, "faults-publisher")
        await publisher.publish(WorkItem(job_key="before"), msg_id="before")
        async with asyncio.timeout(30):
            assert await got.get() == "before"

        await asyncio.to_thread(nats.stop)
        await wait_for(
            lambda: _status_if(ctx, lambda s: s["dependencies"]["nats"].startswith("down")),
            30,
            what="readiness naming nats",
        )
        await asyncio.to_thread(nats.start)
        await wait_for(lambda: _status_if(ctx, lambda s: s["ready"]), 60, what="ready again")
        await publisher.publish(WorkItem(job_key="after"), msg_id="after")
        async with asyncio.timeout(60):
            while await got.get() != "after":
                pass
        assert not ctx.stop.is_set() and not serving.done()
        ctx.stop.set()
        await asyncio.wait_for(serving, 10)
    finally:
        ctx.stop.set()
        if publisher is not None:
            await publisher.close()
        if entered.done() and entered.exception() is None:
            await ctx.__aexit__(None, None, None)
        else:
            entered.cancel()
        await asyncio.to_thread(nats.stop, True)


async def test_consume_loop_that_cannot_start_is_restarted_counted_and_then_consumes(
    nats_url: str,
) -> None:
    bus = await Bus.connect(nats_url, "consumer-supervised")
    stream = f"T_{uuid.uuid4().hex[:8].upper()}"
    subject = f"t.{stream.lower()}.work"
    got: asyncio.Queue[str] = asyncio.Queue()

    async def handle(job: WorkItem, _: Delivery) -> None:
        await got.put(job.job_key)

    # The stream does not exist yet: creating the consumer fails, the loop is restarted.
    spec = ConsumerSpec(stream, "supervised", subject, backoff_s=(0.1,))
    bus.start_consumer(spec, WorkItem, handle)
    await wait_for(lambda: _value(bus.consumer_restarts >= 2), 30, what="restarts counted")
    await bus.ensure_streams([StreamSpec(stream, [subject])])
    await bus.js.publish(subject, WorkItem(job_key="late").to_bytes())
    async with asyncio.timeout(60):
        assert await got.get() == "late"
    await bus.js.delete_stream(stream)
    await bus.close()


async def test_a_service_started_again_removes_what_its_killed_run_was_writing(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """A service process SIGKILLed mid-write (a conversion, an upload) left a temporary file in
    the media store; started again under the same name it removes it at once, and the age
    sweep takes old ones of writers that never came back, while a fresh one (a live writer's)
    stays. Before, temporary files were never removed by any service."""
    settings = ServiceSettings(
        nats_url=nats_url,
        database_url=database_url,  # type: ignore[arg-type]
        media_root=tmp_path / "media",
        instance_id=f"temp-{uuid.uuid4().hex[:6]}",
    )
    left = killed_temp_writer(settings.media_root, temp_owner("faults", None, settings.instance_id))
    orphan, fresh = left.parent.parent / "orphan.upload", left.parent.parent / "fresh.upload"
    for path in (orphan, fresh):
        path.write_bytes(b"x")
    old = time.time() - settings.media_temp_max_age_s - 60
    os.utime(orphan, (old, old))
    async with ServiceContext("faults", settings) as ctx:
        assert not left.exists()
        assert ctx.store.temp_path().parent == left.parent

        async def swept() -> bool:
            return not orphan.exists()

        await wait_for(swept, 60, what="the old temporary file swept")
        assert ctx.store.temp_files() == [fresh]
