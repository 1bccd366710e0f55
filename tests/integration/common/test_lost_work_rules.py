"""Every service's LostWork rule (cinebridge_common.replay) as PostgreSQL runs it, on a migrated
database: the statement of a replay pass is valid for each, and a message that names no real
id (a poison message its handler could never apply) is never published again by a rule that
says so. A rule whose SQL fails would stop its service's every replay pass, the rules that
work included."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import asyncpg
import pytest
from cinebridge_capture import catalog_repository as capture_catalog
from cinebridge_capture import purge_repository as capture_purge
from cinebridge_common.replay import BATCH, LostWork, _replay_sql
from cinebridge_converter import purge_repository as converter_purge
from cinebridge_converter import repository as converter
from cinebridge_gateway import purge_repository as gateway_purge
from cinebridge_sender import commitment_repository as sender_commitment
from cinebridge_sender import delivery_repository as sender_deliveries
from cinebridge_worklist import mpps_queue_repository as worklist_queue
from cinebridge_worklist import mpps_study_repository as worklist_study

pytestmark = pytest.mark.integration

#: Every rule a service passes to `replay_lost` (tests/architecture/test_lost_work.py checks
#: that each consumer has one, wired).
EXISTING = {
    "converter": converter.LOST_WORK,
    "sender": sender_deliveries.LOST_WORK,
    "capture": capture_catalog.LOST_WORK,
}
ADDED = {
    "worklist": worklist_study.LOST_WORK + worklist_queue.LOST_WORK,
    "capture purge": capture_purge.LOST_WORK,
    "gateway": gateway_purge.LOST_WORK,
    "converter purge": converter_purge.LOST_WORK,
    "sender commitment": sender_commitment.LOST_WORK,
}

_NOW = dt.datetime.now(dt.UTC).isoformat()
#: Payloads whose ids are not ids: each field a rule may read, none of them naming anything.
_POISON = [
    {"occurred_at": _NOW},
    {
        "occurred_at": _NOW,
        "started_at": _NOW,
        "study_id": "not-a-uuid",
        "media_id": "",
        "step_id": "x",
        "instance_id": "1.2.3",
        "transaction_uid": "",
        "job_key": "",
        "sop_instance_uid": "",
        "series_instance_uid": "",
        "media_ids": "not-a-list",
        "change": "created",
    },
]


async def _replayed(db: asyncpg.Pool, rule: LostWork, body: dict[str, object]) -> int:
    """Rows of `body` on the rule's subject that a pass after a store loss publishes again."""
    await db.execute(
        """INSERT INTO outbox (msg_id, subject, payload, published_at)
           VALUES ($1, $2, $3, now() - interval '1 hour')""",
        f"rule-test-{uuid.uuid4()}",
        rule.subject,
        json.dumps(body).encode(),
    )
    rows = await db.fetch(_replay_sql(rule), rule.subject, dt.datetime.now(dt.UTC), BATCH)
    await db.execute("DELETE FROM outbox")
    return len(rows)


async def test_every_rule_runs_and_publishes_no_poison_again(db_pool: asyncpg.Pool) -> None:
    for rules in EXISTING.values():
        for rule in rules:
            for body in _POISON:
                await _replayed(db_pool, rule, body)  # valid SQL: it raises otherwise
    for owner, rules in ADDED.items():
        for rule in rules:
            for body in _POISON:
                assert await _replayed(db_pool, rule, body) == 0, (owner, rule.subject, body)


async def test_added_rules_publish_again_work_not_recorded(db_pool: asyncpg.Pool) -> None:
    """The other side: a purge report capture journalled and waits for, an audit the gateway
    has not written, a pending commitment request, a due MPPS step's job, are published
    again; once recorded they are not."""
    study = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO studies (id, study_instance_uid, origin, room) VALUES ($1, $2, 'unscheduled',"
        " 'room1')",
        study,
        f"2.25.{study.int}",
    )
    await db_pool.execute(
        "INSERT INTO capture_purges (study_id, reason) VALUES ($1, 'retention')", study
    )
    body = {"study_id": str(study), "occurred_at": _NOW}
    (report,) = capture_purge.LOST_WORK
    assert await _replayed(db_pool, report, body) == 1
    await db_pool.execute("UPDATE capture_purges SET dicom_removed_at = now()")
    assert await _replayed(db_pool, report, body) == 0

    (audit,) = gateway_purge.LOST_WORK
    assert await _replayed(db_pool, audit, body) == 1
    await db_pool.execute(
        """INSERT INTO gateway_audit_log (actor, action, study_id, target, detail, at)
           VALUES ('purge-policy', 'study_purged', $1, '', '{}', now())""",
        study,
    )
    assert await _replayed(db_pool, audit, body) == 0

    step = uuid.uuid4()
    await db_pool.execute(
        """INSERT INTO mpps_steps (id, study_id, server_id, sop_instance_uid, pps_id, started_at)
           VALUES ($1, $2, 'ris', $3, 'PPS', now())""",
        step,
        study,
        f"2.25.{step.int}",
    )
    (job,) = worklist_queue.LOST_WORK
    job_body = {"job_key": str(step), "step_id": str(step)}
    assert await _replayed(db_pool, job, job_body) == 1
    await db_pool.execute("UPDATE mpps_steps SET state = 'in-progress'")
    assert await _replayed(db_pool, job, job_body) == 0
