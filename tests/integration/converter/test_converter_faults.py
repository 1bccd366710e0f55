"""No conversion vanishes: a job JetStream gives up on while PostgreSQL is away is completed after
the outage (its dead letter kept), a job nobody holds is re-queued, and one that keeps getting
stuck ends failed with the reason, on a real NATS and a PostgreSQL the test stops and starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.db import create_pool, migrate
from cinebridge_common.embedded import EmbeddedPostgres
from cinebridge_common.messages import ConvertMedia
from cinebridge_common.store import MediaStore
from cinebridge_converter import app
from cinebridge_testkit import wait_for
from cinebridge_testkit.media import make_still

from .conftest import RunningConverter, _purge_jobs

pytestmark = pytest.mark.integration

FAST = {
    "converter_max_deliver": 2,
    "converter_job_lease_s": 3.0,
    "converter_reconcile_interval_s": 0.5,
}


@pytest.fixture
async def outage(
    nats_url: str, tmp_path: Path, make_settings: Any
) -> AsyncIterator[tuple[RunningConverter, EmbeddedPostgres, asyncio.Task[None]]]:
    """A converter on a PostgreSQL of this test alone, which the test may stop and start."""
    server = EmbeddedPostgres(tmp_path / "pg")
    await asyncio.to_thread(server.start)
    pool = await create_pool(server.dsn)
    await migrate(pool)
    bus = await Bus.connect(nats_url, "converter-faults")
    await bus.ensure_streams()
    await _purge_jobs(bus)
    with contextlib.suppress(Exception):
        await bus.js.delete_consumer("CB_DLQ", "converter-dead-letters")
    running = RunningConverter(pool, bus, MediaStore(tmp_path / "media"))
    await running.record_events()
    settings = make_settings(database_url=server.dsn, **FAST)
    task = asyncio.create_task(app.run(settings))

    async def consuming() -> bool:
        # The service has started (its database and bus reached, its consumers created) before
        # a test stops PostgreSQL: otherwise a slow start would wait out the outage in
        # `until_ready` and never fetch the job the test means to exhaust.
        for durable, stream in (
            ("converter-convert", "CB_JOBS"),
            ("converter-dead-letters", "CB_DLQ"),
        ):
            try:
                await bus.js.consumer_info(stream, durable)
            except Exception:
                return False
        return True

    await wait_for(consuming, 120, 0.2, what="the converter's consumers")
    try:
        yield running, server, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 15)
        await bus.close()
        await pool.close()
        await asyncio.to_thread(server.stop, "immediate")


async def _state(client: RunningConverter, media_id: str) -> str:
    try:
        return str((await client.outcome(media_id))["state"])
    except Exception:
        return "unreachable"


async def test_job_exhausted_while_database_is_down_is_done_after_the_outage(
    outage: tuple[RunningConverter, EmbeddedPostgres, asyncio.Task[None]], tmp_path: Path
) -> None:
    client, server, service = outage
    study = await client.add_study()
    media = await client.add_media(study, make_still(tmp_path / "s.jpg"), "snapshot")
    await asyncio.to_thread(server.stop, "immediate")
    job = await client.submit(media, study)

    async def dead_lettered() -> dict[str, Any] | None:
        # Every letter of the stream, not only the last: other tests of the session leave theirs.
        try:
            state = (await client.bus.js.stream_info("CB_DLQ")).state
        except Exception:
            return None
        for seq in range(state.last_seq, state.first_seq - 1, -1):
            try:
                msg = await client.bus.js.get_msg("CB_DLQ", seq)
            except Exception:
                continue  # deleted or expired
            letter: dict[str, Any] = json.loads(msg.data or b"{}")
            if job.job_key in letter.get("payload", ""):
                return letter
        return None

    # Every delivery fails (no database): JetStream gives the job up; the letter is on the bus.
    letter = await wait_for(dead_lettered, 120, 0.5, what="the job's dead letter in CB_DLQ")
    assert letter["consumer"] == "converter-convert" and letter["deliveries"] == 2
    assert not service.done(), "the converter stopped during the outage"
    await asyncio.to_thread(server.start)

    async def converted() -> bool:
        return await _state(client, media) == "converted"

    await wait_for(converted, 120, 0.5, what="the media converted after the outage")
    assert len(await client.instances(media)) == 1

    async def mirrored() -> bool:
        rows = await client.pool.fetch(
            "SELECT reason FROM dead_letters WHERE consumer = 'converter-convert'"
        )
        return len(rows) == 1 and "gave up after 2 deliveries" in rows[0]["reason"]

    await wait_for(mirrored, 60, 0.5, what="the dead letter mirrored into the table")
    open_jobs = "SELECT count(*) FROM converter_jobs WHERE outcome IS NULL"
    assert await client.pool.fetchval(open_jobs) == 0
    assert not service.done()


async def _stuck(client: RunningConverter, media: str, study: str, requeues: int) -> ConvertMedia:
    """A job left in hand by a converter that died with its job's last delivery."""
    job = ConvertMedia(job_key=f"{media}:stuck", media_id=media, study_id=study)
    await client.pool.execute(
        """INSERT INTO converter_jobs (media_id, job, lease_until, requeues, last_error)
           VALUES ($1, $2, now() - interval '1 minute', $3, 'killed')""",
        uuid.UUID(media),
        job.model_dump(mode="json"),
        requeues,
    )
    return job


async def test_stuck_conversion_is_requeued_then_failed_visibly_at_last(
    outage: tuple[RunningConverter, EmbeddedPostgres, asyncio.Task[None]], tmp_path: Path
) -> None:
    client, _, _ = outage
    study = await client.add_study()
    still = make_still(tmp_path / "s.jpg")
    revived = await client.add_media(study, still, "snapshot")
    await _stuck(client, revived, study, requeues=0)
    hopeless = await client.add_media(study, still, "snapshot", name="tower-2")
    await _stuck(client, hopeless, study, requeues=3)

    async def settled() -> bool:
        return (await _state(client, revived), await _state(client, hopeless)) == (
            "converted",
            "failed",
        )

    await wait_for(settled, 120, 0.5, what="one re-queued and converted, one failed")
    error = (await client.outcome(hopeless))["error"]
    assert "gave up after 3 re-queues" in error and "killed" in error

    async def announced() -> list[str]:
        # What the study catalog (capture) sets media.state from.
        failed = client.events.get("cb.evt.conversion.failed", [])
        return [e["reason"] for e in failed if e["media_id"] == hopeless]

    [reason] = await wait_for(announced, 30, 0.2, what="ConversionFailed of the given-up job")
    assert reason == error
    open_jobs = "SELECT count(*) FROM converter_jobs WHERE outcome IS NULL"
    assert await client.pool.fetchval(open_jobs) == 0
