"""The audit record of each purged study (docs/purge.md): capture announces `cb.evt.study.purged`
through its outbox; the gateway, owner of the audit log, records it from a durable consumer so
that a purge made while the gateway is down is recorded when it starts."""

from __future__ import annotations

import logging

import asyncpg
from cinebridge_common.consumers import ConsumerSpec, Delivery
from cinebridge_common.logging import kv
from cinebridge_common.messages.purge import StudyPurged

from .purge_repository import audit_study_purged

log = logging.getLogger(__name__)

SPEC = ConsumerSpec(
    stream="CB_EVENTS",
    durable="gateway-audit-study-purged",
    filter_subject=StudyPurged.subject,
    max_deliver=100_000,  # an audit record must not be dropped while PostgreSQL is away
)


async def handle_study_purged(msg: StudyPurged, _d: Delivery, pool: asyncpg.Pool) -> None:
    if await audit_study_purged(pool, msg):
        log.info("purge audited", extra=kv(study=msg.study_id, reason=msg.reason))
