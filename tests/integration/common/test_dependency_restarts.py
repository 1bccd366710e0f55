"""PostgreSQL and NATS restarted under running code: the LISTEN connection comes back, error
replies of a service whose database is away say so, and streams lost with NATS's store are
created again. Real servers of the test's own, restarted with `cinebridge_testkit.restarts`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pytest
from cinebridge_common.bus import Bus, BusError, ConsumerSpec, Delivery
from cinebridge_common.db import create_pool, migrate
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres
from cinebridge_common.listen import PgListener
from cinebridge_common.messages.base import Reply, Request
from cinebridge_common.outbox import OutboxRelay, enqueue
from cinebridge_common.replay import LostWork, replay_lost
from cinebridge_common.service import ServiceContext
from cinebridge_common.settings import ServiceSettings
from cinebridge_testkit import wait_for
from cinebridge_testkit.restarts import restart_nats, restart_postgres
from cinebridge_testkit.worker import WorkItem

pytestmark = pytest.mark.integration


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A migrated PostgreSQL of this test alone, which it may stop and start."""
    server = EmbeddedPostgres(tmp_path / "own-pg")
    await asyncio.to_thread(server.start)
    pool = await create_pool(server.dsn)
    try:
        await migrate(pool)
    finally:
        await pool.close()
    yield server
    await asyncio.to_thread(server.stop, "immediate")


async def _published(pool: asyncpg.Pool, key: str) -> bool:
    try:
        return bool(
            await pool.fetchval(
                "SELECT published_at IS NOT NULL FROM outbox WHERE msg_id = $1", key
            )
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


async def _enqueue_when_up(pool: asyncpg.Pool, key: str) -> None:
    async def enqueued() -> bool:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await enqueue(conn, WorkItem(job_key=key), key)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    await wait_for(enqueued, 120, interval_s=0.2, what="PostgreSQL taking the row again")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_relay_listens_again_after_postgres_restarts(
    nats_url: str, own_postgres: EmbeddedPostgres, mode: str
) -> None:
    """The relay's poll interval is beyond the test's bounds, so after the restart only a
    NOTIFY on a new LISTEN connection can move the row: the relay must notice that its
    connection is gone while it idles, not at a pass that never comes."""
    bus = await Bus.connect(nats_url, "relay-pg-restart")
    await bus.ensure_streams()
    pool = await create_pool(own_postgres.dsn)
    relay = OutboxRelay(pool, bus, poll_s=600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        before = f"before-{uuid.uuid4()}"
        await _enqueue_when_up(pool, before)
        assert await wait_for(lambda: _published(pool, before), 60, what="the first row")
        await restart_postgres(own_postgres, mode=mode)
        after = f"after-{uuid.uuid4()}"
        await _enqueue_when_up(pool, after)
        assert await wait_for(
            lambda: _published(pool, after), 60, what="the row enqueued after the restart"
        )
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await pool.close()
        await bus.close()


async def test_listener_is_told_of_the_loss_and_listens_again(
    own_postgres: EmbeddedPostgres,
) -> None:
    """`PgListener` calls `on_lost` when PostgreSQL goes away, `ensure()` then says it
    listens on a new connection (so its owner looks again), and notifications arrive there."""
    pool = await create_pool(own_postgres.dsn)
    lost = asyncio.Event()
    got: asyncio.Queue[str] = asyncio.Queue()

    def on_note(_conn: Any, _pid: int, _channel: str, payload: Any) -> None:
        got.put_nowait(str(payload))

    listener = PgListener(pool, {"cb_test_listen": on_note}, on_lost=lost.set, name="test")
    try:
        assert await listener.ensure() is True
        assert await listener.ensure() is False  # already listening: nothing to look at again
        await pool.execute("SELECT pg_notify('cb_test_listen', 'one')")
        assert await asyncio.wait_for(got.get(), 30) == "one"

        await restart_postgres(own_postgres, mode="fast")
        await asyncio.wait_for(lost.wait(), 60)
        assert not listener.listening

        async def listening_again() -> bool:
            try:
                return await listener.ensure()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False

        assert await wait_for(listening_again, 60, interval_s=0.2, what="a new LISTEN")
        assert listener.connects == 2
        await pool.execute("SELECT pg_notify('cb_test_listen', 'two')")
        assert await asyncio.wait_for(got.get(), 30) == "two"
    finally:
        await listener.close()
        await pool.close()


class CountRows(Request):
    subject: ClassVar[str] = "cb.rpc.test.count"


class CountReply(Reply):
    """A reply with a required field, like most replies of the station (a room's status)."""

    subject: ClassVar[str] = "cb.rpc.test.reply"
    rows: int


async def test_a_service_whose_database_is_away_answers_unavailable_with_the_cause(
    nats_url: str, own_postgres: EmbeddedPostgres
) -> None:
    """While PostgreSQL restarts, a request to a service that needs it fails with the cause
    (a `BusError`, which the gateway answers with HTTP 503), neither a validation error of the
    bare error reply (an HTTP 500) nor a refusal; once PostgreSQL is back it answers again."""
    pool = await create_pool(own_postgres.dsn)
    server = await Bus.connect(nats_url, "rpc-db-server")
    client = await Bus.connect(nats_url, "rpc-db-client")

    async def count(_: CountRows) -> CountReply:
        return CountReply(rows=int(await pool.fetchval("SELECT count(*) FROM outbox")))

    try:
        await server.serve(CountRows, count)
        assert (await client.request(CountRows(), CountReply, timeout_s=30)).rows == 0
        await asyncio.to_thread(own_postgres.stop, "fast")
        with pytest.raises(BusError, match=r"^unavailable: "):
            await client.request(CountRows(), CountReply, timeout_s=30)
        await asyncio.to_thread(own_postgres.start)

        async def answers() -> bool:
            try:
                return (await client.request(CountRows(), CountReply, timeout_s=30)).ok
            except BusError:
                return False

        assert await wait_for(answers, 60, interval_s=0.2, what="an answer after the restart")
    finally:
        await client.close()
        await server.close()
        await pool.close()


async def test_a_request_while_nats_is_away_fails_at_once_with_the_reason(
    tmp_path: Path,
) -> None:
    """While the bus reconnects, a request is not buffered until its timeout (the gateway's
    UI requests hung 10 s for 'did not answer'): it fails with the bus's state, and asks
    again once NATS is back. The generous bound only catches a request that waits its timeout."""
    server = EmbeddedNats(tmp_path / "own-nats")
    await asyncio.to_thread(server.start)
    serving = await Bus.connect(server.url, "rpc-nats-server")
    client = await Bus.connect(server.url, "rpc-nats-client")

    async def count(_: CountRows) -> CountReply:
        return CountReply(rows=1)

    try:
        await serving.serve(CountRows, count)
        assert (await client.request(CountRows(), CountReply, timeout_s=30)).rows == 1
        await asyncio.to_thread(server.stop)
        await wait_for(_disconnected(client), 60, what="the client seeing NATS gone")
        with pytest.raises(BusError, match=r"^unavailable: the bus \(NATS\) is reconnecting"):
            await asyncio.wait_for(client.request(CountRows(), CountReply, timeout_s=600), 120)
        await asyncio.to_thread(server.start)

        async def answers() -> bool:
            try:
                return (await client.request(CountRows(), CountReply, timeout_s=30)).ok
            except BusError:
                return False

        assert await wait_for(answers, 120, interval_s=0.2, what="an answer after the restart")
    finally:
        await client.close()
        await serving.close()
        await asyncio.to_thread(server.stop)


def _disconnected(bus: Bus) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not bus.nc.is_connected

    return check


async def test_streams_and_consumers_come_back_when_nats_restarts_without_its_store(
    tmp_path: Path,
) -> None:
    """A NATS server back with an empty JetStream store (a new volume, a lost disk) has no
    streams and no durables: the bus makes its streams again, the fetch loop its durable, and
    a job published after the restart is consumed; before, publishes found no stream and the
    consumer never came back."""
    server = EmbeddedNats(tmp_path / "own-nats")
    await asyncio.to_thread(server.start)
    bus = await Bus.connect(server.url, "nats-wiped")
    got: asyncio.Queue[str] = asyncio.Queue()

    async def handle(job: WorkItem, _: Delivery) -> None:
        await got.put(job.job_key)

    try:
        await bus.ensure_streams()
        spec = ConsumerSpec("CB_JOBS", "wiped-test", "cb.job.test.work")
        bus.start_consumer(spec, WorkItem, handle)
        await bus.publish(WorkItem(job_key="before"), msg_id=uuid.uuid4().hex)
        assert await asyncio.wait_for(got.get(), 60) == "before"

        await restart_nats(server, keep_state=False)
        await bus.publish(WorkItem(job_key="after"), msg_id=uuid.uuid4().hex, attempts=30)
        assert await asyncio.wait_for(got.get(), 120) == "after"
        names = {info.config.name async for info in _streams(bus)}
        assert {"CB_JOBS", "CB_EVENTS", "CB_DLQ"} <= names
    finally:
        await bus.close()
        await asyncio.to_thread(server.stop)


async def _streams(bus: Bus) -> AsyncIterator[Any]:
    for info in await bus.js.streams_info():
        yield info


async def test_a_full_media_store_is_named_in_readiness_until_there_is_room(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """With the media store's filesystem below the service's minimum free bytes, the service
    is not ready and its health says `media: full`; with room again it is ready. Before, a
    full store left every service green while captures failed with 'disk full'. The minimum
    is set above the disk's free space (then lowered) instead of filling a real disk."""
    settings = ServiceSettings(
        nats_url=nats_url,
        database_url=database_url,  # type: ignore[arg-type]
        media_root=tmp_path / "media",
        instance_id=f"media-{uuid.uuid4().hex[:6]}",
        media_min_free_bytes=1 << 62,
    )
    async with ServiceContext("faults", settings) as ctx:
        ctx.state = "up"

        async def media_full() -> bool:
            status = ctx.status()
            return str(status["detail"].get("media", "")).startswith("full: ")  # type: ignore[union-attr]

        await wait_for(media_full, 60, what="media: full in the health detail")
        assert ctx.ready is False
        ctx.media_min_free_bytes = 0

        async def ready() -> bool:
            return ctx.ready

        await wait_for(ready, 60, what="ready once the store has room")
        assert ctx.dependencies.snapshot()["media"] == "up"


#: The test's owner says a work item is done once its key is in the test's own table.
_WORK_DONE = LostWork(
    stream="CB_JOBS",
    subject=WorkItem.subject,
    done="EXISTS (SELECT 1 FROM replay_test_done d WHERE d.job_key = body->>'job_key')",
)


async def test_work_lost_with_the_store_is_published_again_once(
    tmp_path: Path, own_postgres: EmbeddedPostgres
) -> None:
    """Two published rows, one whose work was done and one still waiting in the stream: while
    the stream stands nothing is published again (the waiting job is not doubled); after NATS
    lost its store only the undone one is, once, and a consumer made afterwards gets it. Before,
    nothing published it again: the job was gone with the store."""
    server = EmbeddedNats(tmp_path / "own-nats")
    await asyncio.to_thread(server.start)
    bus = await Bus.connect(server.url, "replay-test")
    pool = await create_pool(own_postgres.dsn)
    stop = asyncio.Event()
    relay = asyncio.create_task(OutboxRelay(pool, bus, poll_s=0.2).run(stop))
    got: asyncio.Queue[str] = asyncio.Queue()

    async def handle(job: WorkItem, _: Delivery) -> None:
        await got.put(job.job_key)

    try:
        await bus.ensure_streams()
        done, waiting = f"done-{uuid.uuid4()}", f"waiting-{uuid.uuid4()}"
        for key in (done, waiting):
            await _enqueue_when_up(pool, key)
            assert await wait_for(lambda k=key: _published(pool, k), 60, what=key)
        await pool.execute("CREATE TABLE replay_test_done (job_key text PRIMARY KEY)")
        await pool.execute("INSERT INTO replay_test_done VALUES ($1)", done)
        assert await replay_lost(pool, bus.js, [_WORK_DONE]) == 0

        bus.streams_restored.clear()
        await restart_nats(server, keep_state=False)
        await asyncio.wait_for(bus.streams_restored.wait(), 60)
        assert await replay_lost(pool, bus.js, [_WORK_DONE]) == 1
        assert await wait_for(lambda: _published(pool, waiting), 60, what="published again")
        assert await replay_lost(pool, bus.js, [_WORK_DONE]) == 0
        spec = ConsumerSpec("CB_JOBS", "replay-test", WorkItem.subject)
        bus.start_consumer(spec, WorkItem, handle)
        assert await asyncio.wait_for(got.get(), 60) == waiting
        # The new stream holds the undone job alone, once.
        assert (await bus.js.stream_info("CB_JOBS")).state.messages == 1
    finally:
        stop.set()
        await asyncio.wait_for(relay, 60)
        await pool.close()
        await bus.close()
        await asyncio.to_thread(server.stop)
