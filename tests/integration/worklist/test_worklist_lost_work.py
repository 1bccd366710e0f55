"""MPPS events lost with NATS's JetStream store are published again (cinebridge_common.replay,
docs/reliability.md "Work lost with the store"): the events of a study went into the stream
while the worklist service was down, then NATS was SIGKILLed and came back without its store.
PostgreSQL's outbox still holds them; the worklist's rules (mpps_study_repository.LOST_WORK)
publish again the ones whose work is not recorded, and the study's step is created and
completed once (PS3.4 Annex F; IHE RAD-6, RAD-7) against a pynetdicom MPPS SCP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats
from cinebridge_common.replay import LostWork
from cinebridge_testkit.restarts import published_through_outbox, restart_nats
from cinebridge_testkit.worklist_peers import FakeMpps
from cinebridge_worklist import mpps_queue_repository, mpps_study_repository

from .test_worklist_mpps import Rig, captured, conforming, created, listed, saved

pytestmark = pytest.mark.integration


@pytest.fixture
def mpps_scp() -> Iterator[FakeMpps]:
    with FakeMpps() as peer:
        yield peer


async def undone(db: asyncpg.Pool, rules: list[LostWork]) -> dict[str, int]:
    """Per subject, the outbox rows whose work the rules say is not done: what a pass after a
    store loss would publish again."""
    counts: dict[str, int] = {}
    for rule in rules:
        count = await db.fetchval(
            f"""SELECT count(*) FROM outbox o,
                       LATERAL (SELECT convert_from(o.payload, 'UTF8')::jsonb AS body) AS b
                WHERE o.subject = $1 AND NOT ({rule.done})""",
            rule.subject,
        )
        if count:
            counts[rule.subject] = count
    return counts


async def test_mpps_events_lost_with_the_store_complete_the_step_once(
    own_nats: EmbeddedNats,
    own_bus: Bus,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    mpps_scp: FakeMpps,
) -> None:
    """A scheduled study's capture, Save and instance reached the stream while the worklist
    was down; the store is lost before the worklist comes back. Once it is back, its step is
    N-CREATEd and N-SET COMPLETED once, listing the instance, and nothing is published again
    after that. Before, the events were gone with the store: no step was ever created."""
    rig = Rig(own_nats.url, database_url, tmp_path, db_pool, own_bus, mpps_scp)
    # The service ran once (its durable consumers exist), then stopped.
    async with rig.running():
        pass
    study_id, uid = await rig.study(scheduled=True)
    snap = uuid.uuid4()
    instance = created(study_id, snap, "2.25.100")
    await published_through_outbox(
        db_pool,
        own_bus,
        [
            (captured(study_id, snap), f"captured-{snap}"),
            (saved(study_id, snap), f"saved-{study_id}"),
            (instance, f"instance-{instance.instance_id}"),
        ],
    )
    rules = mpps_study_repository.LOST_WORK + mpps_queue_repository.LOST_WORK
    assert await undone(db_pool, rules) == {
        "cb.evt.media.captured": 1,
        "cb.evt.study.saved": 1,
        "cb.evt.instance.created": 1,
    }
    # SIGKILLed, and back without its store (a lost volume).
    await restart_nats(own_nats, keep_state=False, kill=True)

    async with rig.running():
        done = await rig.step(study_id, "completed", timeout_s=120)
        assert done["final_status"] == "COMPLETED"
        # Every rule holds now, the step's own job included: a later loss publishes nothing.
        assert await undone(db_pool, rules) == {}

    assert [r.operation for r in mpps_scp.requests] == ["N-CREATE", "N-SET"]
    create, final = (r.dataset for r in mpps_scp.requests)
    assert create.ScheduledStepAttributesSequence[0].StudyInstanceUID == uid
    assert final.PerformedProcedureStepStatus == "COMPLETED"
    assert listed(final) == {"2.25.100": [instance.sop_instance_uid]}
    assert len(conforming(mpps_scp)) == 1
    assert await db_pool.fetchval("SELECT count(*) FROM mpps_steps") == 1
