"""All SQL of the Storage SCP: the received_* index (migration 101) and its outbox event."""

from __future__ import annotations

import uuid
from typing import Literal

import asyncpg
from cinebridge_common.messages import InstanceReceived
from cinebridge_common.outbox import enqueue

from .ingest import IndexOutcome, InstanceFacts

Duplicates = Literal["replace", "keep-first"]

_UPSERT_STUDY = """
INSERT INTO received_studies (id, study_instance_uid, patient_name, patient_id,
    patient_birth_date, patient_sex, accession_number, study_id, study_date, study_time,
    study_description, referring_physician, calling_ae)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (study_instance_uid) DO UPDATE SET
    patient_name = EXCLUDED.patient_name, patient_id = EXCLUDED.patient_id,
    patient_birth_date = EXCLUDED.patient_birth_date, patient_sex = EXCLUDED.patient_sex,
    accession_number = EXCLUDED.accession_number, study_id = EXCLUDED.study_id,
    study_date = EXCLUDED.study_date, study_time = EXCLUDED.study_time,
    study_description = EXCLUDED.study_description,
    referring_physician = EXCLUDED.referring_physician, calling_ae = EXCLUDED.calling_ae,
    last_received_at = now()
RETURNING id"""

_UPSERT_SERIES = """
INSERT INTO received_series (id, study_id, series_instance_uid, modality, series_number,
    series_description)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (series_instance_uid) DO UPDATE SET
    study_id = EXCLUDED.study_id, modality = EXCLUDED.modality,
    series_number = EXCLUDED.series_number, series_description = EXCLUDED.series_description,
    last_received_at = now()
RETURNING id"""

_INSERT_INSTANCE = """
INSERT INTO received_instances (id, study_id, series_id, sop_instance_uid, sop_class_uid,
    transfer_syntax_uid, instance_number, number_of_frames, rel_path, size, sha256, calling_ae,
    source_address)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (sop_instance_uid) DO NOTHING
RETURNING id"""

_REPLACE_INSTANCE = """
UPDATE received_instances SET study_id = $2, series_id = $3, sop_class_uid = $4,
    transfer_syntax_uid = $5, instance_number = $6, number_of_frames = $7, rel_path = $8,
    size = $9, sha256 = $10, calling_ae = $11, source_address = $12, received_at = now(),
    replacements = replacements + 1
WHERE id = $1"""


async def index_instance(
    pool: asyncpg.Pool, facts: InstanceFacts, duplicates: Duplicates
) -> IndexOutcome:
    """Index one stored file and enqueue InstanceReceived, in one transaction.

    A second copy of a SOP Instance UID replaces the first (row updated, old file returned for
    deletion after commit) or, with keep-first, changes nothing. Concurrent copies serialise on
    the row lock, so there is never a duplicate row.
    """
    async with pool.acquire() as conn, conn.transaction():
        # Serialise concurrent copies of one UID; the SELECT below then sees the winner's row.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", facts["sop_instance_uid"]
        )
        prev = await conn.fetchrow(
            "SELECT id, rel_path FROM received_instances WHERE sop_instance_uid = $1 FOR UPDATE",
            facts["sop_instance_uid"],
        )
        if prev is not None and duplicates == "keep-first":
            return IndexOutcome(str(prev["id"]), kept_existing=True)
        study_id, series_id = await _upsert_parents(conn, facts)
        instance_id: uuid.UUID
        if prev is None:
            new_id = uuid.uuid4()
            inserted = await conn.fetchval(
                _INSERT_INSTANCE,
                new_id,
                study_id,
                series_id,
                facts["sop_instance_uid"],
                facts["sop_class_uid"],
                facts.transfer_syntax_uid,
                facts["instance_number"],
                facts["number_of_frames"],
                facts.rel_path,
                facts.size,
                facts.sha256,
                facts.calling_ae,
                facts.source_address,
            )
            if inserted is None:  # cannot happen under the lock; refuse rather than guess
                raise RuntimeError("concurrent insert of the same SOP Instance UID")
            instance_id = new_id
        else:
            instance_id = prev["id"]
            await conn.execute(
                _REPLACE_INSTANCE,
                instance_id,
                study_id,
                series_id,
                facts["sop_class_uid"],
                facts.transfer_syntax_uid,
                facts["instance_number"],
                facts["number_of_frames"],
                facts.rel_path,
                facts.size,
                facts.sha256,
                facts.calling_ae,
                facts.source_address,
            )
        event = _event(facts, str(instance_id), replaced=prev is not None)
        await enqueue(conn, event, f"scp.received.{uuid.uuid4().hex}")
    return IndexOutcome(str(instance_id), replaced_rel_path=prev["rel_path"] if prev else None)


async def _upsert_parents(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, f: InstanceFacts
) -> tuple[uuid.UUID, uuid.UUID]:
    study_id: uuid.UUID = await conn.fetchval(
        _UPSERT_STUDY,
        uuid.uuid4(),
        f["study_instance_uid"],
        f["patient_name"],
        f["patient_id"],
        f["patient_birth_date"],
        f["patient_sex"],
        f["accession_number"],
        f["study_id"],
        f["study_date"],
        f["study_time"],
        f["study_description"],
        f["referring_physician"],
        f.calling_ae,
    )
    series_id: uuid.UUID = await conn.fetchval(
        _UPSERT_SERIES,
        uuid.uuid4(),
        study_id,
        f["series_instance_uid"],
        f["modality"],
        f["series_number"],
        f["series_description"],
    )
    return study_id, series_id


def _event(f: InstanceFacts, instance_id: str, *, replaced: bool) -> InstanceReceived:
    return InstanceReceived(
        instance_id=instance_id,
        sop_instance_uid=f["sop_instance_uid"],
        sop_class_uid=f["sop_class_uid"],
        study_instance_uid=f["study_instance_uid"],
        series_instance_uid=f["series_instance_uid"],
        transfer_syntax_uid=f.transfer_syntax_uid,
        calling_ae=f.calling_ae,
        rel_path=f.rel_path,
        size=f.size,
        sha256=f.sha256,
        replaced=replaced,
    )


async def count_rows(pool: asyncpg.Pool) -> dict[str, int]:
    """Row counts of the index (health detail and tests)."""
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM received_studies) AS studies,
                  (SELECT count(*) FROM received_series) AS series,
                  (SELECT count(*) FROM received_instances) AS instances"""
    )
    assert row is not None
    return dict(row)
