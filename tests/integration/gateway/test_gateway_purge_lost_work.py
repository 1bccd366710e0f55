"""The purge audit of a study whose `cb.evt.study.purged` was lost with NATS's JetStream store
(cinebridge_common.replay, docs/purge.md, docs/reliability.md "Work lost with the store"):
capture's outbox still holds the event, and the gateway, owner of the audit log, publishes it
again at start unless the study's `study_purged` row is there already."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats
from cinebridge_common.messages.purge import StudyPurged
from cinebridge_gateway.purge_repository import audit_study_purged
from cinebridge_testkit import wait_for
from cinebridge_testkit.restarts import published_through_outbox, restart_nats

from .conftest import gateway_settings, start_gateway

pytestmark = pytest.mark.integration

AUDITS = "SELECT count(*) FROM gateway_audit_log WHERE study_id = $1 AND action = 'study_purged'"


def purged(study: uuid.UUID) -> StudyPurged:
    return StudyPurged(
        study_id=str(study),
        study_instance_uid=f"2.25.{study.int}",
        media_files=2,
        occurred_at=dt.datetime.now(dt.UTC),
    )


async def test_purge_lost_with_the_store_is_audited_once(
    own_nats: EmbeddedNats,
    own_bus: Bus,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    """Two purges announced while the gateway was down, one of them audited already (a
    gateway that recorded it and stopped before acknowledging); NATS SIGKILLed and back
    without its store. The gateway started afterwards audits the other one once and publishes
    the audited one not again. Before, the lost event was never audited."""
    lost, audited = uuid.uuid4(), uuid.uuid4()
    await published_through_outbox(
        db_pool,
        own_bus,
        [(purged(lost), f"study-purged:{lost}"), (purged(audited), f"study-purged:{audited}")],
    )
    assert await audit_study_purged(db_pool, purged(audited))
    await restart_nats(own_nats, keep_state=False, kill=True)

    gateway, task = await start_gateway(
        gateway_settings(own_nats.url, database_url, tmp_path / "media")
    )
    try:
        await wait_for(lambda: db_pool.fetchval(AUDITS, lost), 120, what="the lost purge audited")

        # Acknowledged once audited: nothing of it is left to deliver again.
        async def settled() -> bool:
            info = await own_bus.js.consumer_info("CB_EVENTS", "gateway-audit-study-purged")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_for(settled, 60, what="the audit consumer acknowledged what it got")
    finally:
        gateway.ctx.stop.set()
        await asyncio.wait_for(task, 30)
    assert await db_pool.fetchval(AUDITS, lost) == 1
    assert await db_pool.fetchval(AUDITS, audited) == 1
    attempts = dict(await db_pool.fetch("SELECT msg_id, attempts FROM outbox"))
    assert attempts == {f"study-purged:{lost}": 1, f"study-purged:{audited}": 0}
