"""The sender's Storage Commitment SQL: transactions, their deliveries, the ledger's questions.

A transaction is opened in the same database transaction that records the last delivery of a
study to a destination as sent (`after_sent`), with its `RequestCommitment` job in the outbox;
its report is applied per delivery in one transaction (`apply_report`), and instances the
archive lists as failed are queued to be sent again (a new generation, as Forward does).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from cinebridge_common import commitment as sc
from cinebridge_common import outbox
from cinebridge_common.messages import RequestCommitment, StudyCommitment
from cinebridge_common.replay import LostWork
from cinebridge_common.uids import make_uid

from .repository import Conn, Db, _announce, _plain

#: Delivery states of an instance the archive acknowledged (Table 11: stored, maybe warned).
STORED = ("sent", "warning")
#: Delivery states still on their way (the study is not fully sent yet).
UNDERWAY = ("queued", "sending", "failed-retrying")


def new_transaction_uid(destination_id: uuid.UUID, study_id: uuid.UUID | None) -> str:
    # Unique per request (PS3.4 J.3.2.1.1): random, not derived from the study.
    return make_uid("commitment", str(destination_id), str(study_id), uuid.uuid4().hex)


def commit_job(transaction_uid: str, attempts: int = 0) -> tuple[RequestCommitment, str]:
    job = RequestCommitment(job_key=transaction_uid, transaction_uid=transaction_uid)
    return job, f"commit-{transaction_uid}-a{attempts}"


async def after_sent(
    conn: Conn, destination_id: uuid.UUID, study_id: uuid.UUID | None
) -> str | None:
    """Called where a delivery becomes sent: when the destination requires commitment and
    every delivery of the study to it is settled, open a transaction for the stored ones not
    yet asked for. Returns its Transaction UID, or None."""
    if study_id is None:
        return None
    required = await conn.fetchval(
        "SELECT commitment_required FROM destinations WHERE id = $1", destination_id
    )
    if not required:
        return None
    # Serialises the check per destination: two batches finishing the same study at once
    # would each see the other's delivery still sending and both wait for the other.
    await conn.execute("SELECT 1 FROM destinations WHERE id = $1 FOR NO KEY UPDATE", destination_id)
    underway = await conn.fetchval(
        """SELECT count(*) FROM deliveries
           WHERE study_id = $1 AND destination_id = $2 AND state = ANY($3::text[])""",
        study_id,
        destination_id,
        list(UNDERWAY),
    )
    if underway:
        return None
    return await open_transaction(conn, destination_id, study_id, request=1)


async def open_transaction(
    conn: Conn,
    destination_id: uuid.UUID,
    study_id: uuid.UUID | None,
    *,
    request: int,
    delivery_ids: Sequence[uuid.UUID] | None = None,
) -> str | None:
    """A transaction for the stored deliveries of the study not yet asked for (or for
    `delivery_ids`), its items, the deliveries marked requested and its job in the outbox."""
    uid = new_transaction_uid(destination_id, study_id)
    if delivery_ids is None:
        rows = await conn.fetch(
            """SELECT id FROM deliveries
               WHERE study_id = $1 AND destination_id = $2 AND state = ANY($3::text[])
                 AND commitment IS NULL ORDER BY id""",
            study_id,
            destination_id,
            list(STORED),
        )
        delivery_ids = [r["id"] for r in rows]
    if not delivery_ids:
        return None
    await conn.execute(
        """INSERT INTO commitment_transactions (transaction_uid, destination_id, study_id, request)
           VALUES ($1, $2, $3, $4)""",
        uid,
        destination_id,
        study_id,
        request,
    )
    await conn.execute(
        """INSERT INTO commitment_items (transaction_uid, delivery_id)
           SELECT $1, unnest($2::uuid[])""",
        uid,
        list(delivery_ids),
    )
    await conn.execute(
        """UPDATE deliveries SET commitment = 'requested', commitment_reason = NULL,
               commitment_requests = commitment_requests + 1, updated_at = now()
           WHERE id = ANY($1::uuid[])""",
        list(delivery_ids),
    )
    job, msg_id = commit_job(uid)
    await outbox.enqueue(_plain(conn), job, msg_id)
    return uid


@dataclass(frozen=True)
class Transaction:
    transaction_uid: str
    destination_id: uuid.UUID
    study_id: uuid.UUID | None
    state: str
    request: int
    attempts: int
    references: list[sc.Reference]


async def get_transaction(conn: Db, uid: str) -> Transaction | None:
    row = await conn.fetchrow(
        """SELECT transaction_uid, destination_id, study_id, state, request, attempts
           FROM commitment_transactions WHERE transaction_uid = $1""",
        uid,
    )
    if row is None:
        return None
    refs = await conn.fetch(
        """SELECT i.sop_class_uid, i.sop_instance_uid
           FROM commitment_items c JOIN deliveries d ON d.id = c.delivery_id
                JOIN outgoing_instances i ON i.id = d.instance_id
           WHERE c.transaction_uid = $1 ORDER BY i.sop_instance_uid""",
        uid,
    )
    references = [sc.Reference(r["sop_class_uid"], r["sop_instance_uid"]) for r in refs]
    return Transaction(**dict(row), references=references)


async def mark_requested(pool: asyncpg.Pool, uid: str, timeout_s: float) -> None:
    """N-ACTION-RSP 0000: the report is due within the destination's time-out. A report that
    came first (on a new association) already answered it: left alone."""
    await pool.execute(
        """UPDATE commitment_transactions SET state = 'requested', requested_at = now(),
               attempts = attempts + 1, last_error = NULL,
               next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
           WHERE transaction_uid = $1 AND state = 'pending'""",
        uid,
        float(timeout_s),
    )


async def action_failed(pool: asyncpg.Pool, uid: str, error: str, delay_s: float) -> None:
    """The N-ACTION did not get through (archive down, refused status): asked again later."""
    await pool.execute(
        """UPDATE commitment_transactions SET attempts = attempts + 1, last_error = $2,
               next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
           WHERE transaction_uid = $1 AND state = 'pending'""",
        uid,
        error,
        float(delay_s),
    )


async def mark_unsupported(pool: asyncpg.Pool, uid: str, reason: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """UPDATE commitment_transactions SET state = 'unsupported', last_error = $2,
                   answered_at = now(), updated_at = now()
               WHERE transaction_uid = $1 AND state = 'pending'""",
            uid,
            reason,
        )
        await conn.execute(
            """UPDATE deliveries SET commitment = 'unsupported', commitment_reason = $2,
                   updated_at = now()
               WHERE id IN (SELECT delivery_id FROM commitment_items WHERE transaction_uid = $1)
                 AND commitment = 'requested'""",
            uid,
            reason,
        )


@dataclass(frozen=True)
class Applied:
    committed: int
    resent: int
    failed: int


async def apply_report(conn: Conn, report: sc.Report) -> Applied | None:
    """Apply an N-EVENT-REPORT to the deliveries of its transaction (None: not one of ours).
    Failed instances are sent again while the destination's retries allow, then commit-failed;
    an instance the report does not mention counts as failed (J.3.3: each is in one list)."""
    txn = await conn.fetchrow(
        """SELECT t.transaction_uid, t.destination_id, dst.commitment_retries
           FROM commitment_transactions t JOIN destinations dst ON dst.id = t.destination_id
           WHERE t.transaction_uid = $1 FOR UPDATE OF t""",
        report.transaction_uid,
    )
    if txn is None:
        return None
    items = await conn.fetch(
        """SELECT d.id, d.commitment, d.commitment_requests, i.sop_instance_uid
           FROM commitment_items c JOIN deliveries d ON d.id = c.delivery_id
                JOIN outgoing_instances i ON i.id = d.instance_id
           WHERE c.transaction_uid = $1""",
        report.transaction_uid,
    )
    by_uid = {r["sop_instance_uid"]: r for r in items}
    committed = [
        by_uid[r.sop_instance_uid]["id"] for r in report.committed if r.sop_instance_uid in by_uid
    ]
    reasons = {f.sop_instance_uid: f.reason for f in report.failed}
    told = {r.sop_instance_uid for r in report.committed} | set(reasons)
    failed = [r for uid, r in by_uid.items() if uid in reasons or uid not in told]
    await conn.execute(
        """UPDATE deliveries SET commitment = 'committed', commitment_reason = NULL,
               committed_at = now(), updated_at = now()
           WHERE id = ANY($1::uuid[]) AND commitment IS DISTINCT FROM 'committed'""",
        committed,
    )
    resent = gave_up = 0
    for row in failed:
        if row["commitment"] == "committed":
            continue  # a later transaction already committed it
        reason = reasons.get(row["sop_instance_uid"], sc.PROCESSING_FAILURE)
        why = f"Failure Reason {reason:04X}" + (
            "" if row["sop_instance_uid"] in told else " (not in the report)"
        )
        if row["commitment_requests"] <= txn["commitment_retries"]:
            await _send_again(conn, row["id"], why)
            resent += 1
        else:
            await conn.execute(
                """UPDATE deliveries SET commitment = 'failed', commitment_reason = $2,
                       updated_at = now() WHERE id = $1""",
                row["id"],
                why,
            )
            gave_up += 1
    await conn.execute(
        """UPDATE commitment_transactions SET state = 'answered', answered_at = now(),
               updated_at = now() WHERE transaction_uid = $1""",
        report.transaction_uid,
    )
    return Applied(len(committed), resent, gave_up)


async def _send_again(conn: Conn, delivery_id: uuid.UUID, why: str) -> None:
    """The archive did not commit it: store it again (new generation), then ask again. The
    row queued again wakes the sender's workers through the queue's trigger
    (R_sender_queue.sql)."""
    row = await conn.fetchrow(
        """UPDATE deliveries SET state = 'queued', attempts = 0, next_attempt_at = now(),
               generation = generation + 1, last_status = NULL, last_error = NULL,
               commitment = NULL, commitment_reason = $2, updated_at = now()
           WHERE id = $1
           RETURNING id, instance_id, destination_id, study_id, state, attempts, generation""",
        delivery_id,
        why,
    )
    assert row is not None
    await _announce(conn, dict(row))


async def expire(conn: Conn) -> tuple[int, int]:
    """Transactions whose report is overdue: asked again in a new transaction while the
    destination's retries allow, else their deliveries are commit-failed. (re-asked, failed)"""
    rows = await conn.fetch(
        """SELECT t.transaction_uid, t.destination_id, t.study_id, t.request,
                  dst.commitment_retries
           FROM commitment_transactions t JOIN destinations dst ON dst.id = t.destination_id
           WHERE t.state = 'requested' AND t.next_attempt_at < now()
           ORDER BY t.next_attempt_at LIMIT 200 FOR UPDATE OF t SKIP LOCKED"""
    )
    again = failed = 0
    for t in rows:
        waiting = [
            r["id"]
            for r in await conn.fetch(
                """SELECT d.id FROM commitment_items c JOIN deliveries d ON d.id = c.delivery_id
                   WHERE c.transaction_uid = $1 AND d.commitment = 'requested'""",
                t["transaction_uid"],
            )
        ]
        if t["request"] <= t["commitment_retries"] and waiting:
            await conn.execute(
                """UPDATE commitment_transactions SET state = 'superseded',
                       last_error = 'no N-EVENT-REPORT in time', updated_at = now()
                   WHERE transaction_uid = $1""",
                t["transaction_uid"],
            )
            await open_transaction(
                conn,
                t["destination_id"],
                t["study_id"],
                request=t["request"] + 1,
                delivery_ids=waiting,
            )
            again += 1
            continue
        why = f"no N-EVENT-REPORT after {t['request']} requests"
        await conn.execute(
            """UPDATE commitment_transactions SET state = 'failed', last_error = $2,
                   updated_at = now() WHERE transaction_uid = $1""",
            t["transaction_uid"],
            why,
        )
        await conn.execute(
            """UPDATE deliveries SET commitment = 'failed', commitment_reason = $2,
                   updated_at = now() WHERE id = ANY($1::uuid[])""",
            waiting,
            why,
        )
        failed += 1
    return again, failed


async def overdue_pending(pool: asyncpg.Pool, grace_s: float) -> list[asyncpg.Record]:
    """Pending transactions whose job was lost (dead-lettered, or the outbox relay down long)."""
    return list(
        await pool.fetch(
            """SELECT transaction_uid, attempts FROM commitment_transactions
               WHERE state = 'pending' AND next_attempt_at < now() - make_interval(secs => $1)
               LIMIT 200""",
            float(grace_s),
        )
    )


async def republish(pool: asyncpg.Pool, rows: Sequence[asyncpg.Record], sweep: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for row in rows:
            job, msg_id = commit_job(row["transaction_uid"], row["attempts"])
            await outbox.enqueue(_plain(conn), job, f"{msg_id}-s{sweep}")


async def open_missing(pool: asyncpg.Pool) -> int:
    """Studies fully settled at a destination that requires commitment but never asked (the
    requirement was switched on later, or a Forward reset them): open their transactions."""
    opened = 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT d.destination_id, d.study_id
               FROM deliveries d JOIN destinations dst ON dst.id = d.destination_id
               WHERE dst.commitment_required AND dst.kind = 'dimse' AND d.study_id IS NOT NULL
               GROUP BY d.destination_id, d.study_id
               HAVING bool_or(d.commitment IS NULL AND d.state = ANY($1::text[]))
                  AND NOT bool_or(d.state = ANY($2::text[]))
               LIMIT 200""",
            list(STORED),
            list(UNDERWAY),
        )
        for row in rows:
            if await open_transaction(conn, row["destination_id"], row["study_id"], request=1):
                opened += 1
    return opened


# -- the ledger's questions ---------------------------------------------------------------------


@dataclass(frozen=True)
class CommittedStudy:
    study_id: str
    instances: int
    committed_at: dt.datetime


async def committed_studies(
    pool: asyncpg.Pool, before_s: float, limit: int, of: Sequence[str] | None = None
) -> list[CommittedStudy]:
    """Studies every enabled destination marked "commitment required" has committed whole
    (a delivery per instance, each committed `before_s` ago or more), of `of` when given. None
    while no destination requires commitment: nothing is proven kept anywhere."""
    only = [uuid.UUID(s) for s in of] if of is not None else None
    rows = await pool.fetch(
        """WITH req AS (SELECT id FROM destinations WHERE commitment_required AND enabled),
                studies AS (SELECT study_id, count(*) AS n FROM outgoing_instances
                            WHERE study_id IS NOT NULL
                              AND ($3::uuid[] IS NULL OR study_id = ANY($3::uuid[]))
                            GROUP BY study_id)
           SELECT s.study_id, s.n,
                  (SELECT max(d.committed_at) FROM deliveries d
                   WHERE d.study_id = s.study_id
                     AND d.destination_id IN (SELECT id FROM req)) AS committed_at
           FROM studies s
           WHERE EXISTS (SELECT 1 FROM req)
             AND NOT EXISTS (
                 SELECT 1 FROM req r
                 WHERE (SELECT count(*) FROM deliveries d
                        WHERE d.study_id = s.study_id AND d.destination_id = r.id
                          AND d.commitment = 'committed'
                          AND d.committed_at <= now() - make_interval(secs => $1)) < s.n)
           ORDER BY s.study_id LIMIT $2""",
        float(before_s),
        limit,
        only,
    )
    return [CommittedStudy(str(r["study_id"]), r["n"], r["committed_at"]) for r in rows]


def badge(states: Sequence[str], commitments: Sequence[str | None], required: bool) -> str:
    """One state per study and destination, from its deliveries: the worst one shows."""
    if any(s in UNDERWAY for s in states):
        return "sending"
    if any(s == "failed-permanent" for s in states):
        return "failed"
    if not required:
        return "sent"
    if any(c == "failed" for c in commitments):
        return "commit-failed"
    if any(c == "unsupported" for c in commitments):
        return "unsupported"
    if all(c == "committed" for c in commitments):
        return "committed"
    if any(c == "requested" for c in commitments):
        return "requested"
    return "sent"


async def study_status(pool: asyncpg.Pool, study_ids: Sequence[str]) -> list[StudyCommitment]:
    rows = await pool.fetch(
        """SELECT d.study_id, dst.id AS destination_id, dst.name, dst.commitment_required,
                  array_agg(d.state) AS states, array_agg(d.commitment) AS commitments
           FROM deliveries d JOIN destinations dst ON dst.id = d.destination_id
           WHERE d.study_id = ANY($1::uuid[])
           GROUP BY d.study_id, dst.id, dst.name, dst.commitment_required
           ORDER BY d.study_id, dst.name""",
        [uuid.UUID(s) for s in study_ids],
    )
    return [
        StudyCommitment(
            study_id=str(r["study_id"]),
            destination_id=str(r["destination_id"]),
            destination=r["name"],
            state=badge(r["states"], r["commitments"], r["commitment_required"]),
            instances=len(r["states"]),
            committed=sum(1 for c in r["commitments"] if c == "committed"),
        )
        for r in rows
    ]


async def commitment_stats(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Per destination that requires commitment and commitment state ('none': stored, not
    asked yet): deliveries, and the age of the oldest stored but uncommitted one."""
    return list(
        await pool.fetch(
            """SELECT dst.name, coalesce(d.commitment, 'none') AS state, count(*) AS n,
                      coalesce(extract(epoch FROM now() - min(d.delivered_at)), 0) AS oldest_s
               FROM deliveries d JOIN destinations dst ON dst.id = d.destination_id
               WHERE dst.commitment_required AND d.state = ANY($1::text[])
               GROUP BY dst.name, coalesce(d.commitment, 'none')""",
            list(STORED),
        )
    )


async def overdue_studies(pool: asyncpg.Pool, age_s: float, limit: int = 1000) -> list[str]:
    """Studies with a stored delivery to a destination that requires commitment, sent more
    than `age_s` ago and neither committed nor unsupported."""
    rows = await pool.fetch(
        """SELECT DISTINCT d.study_id
           FROM deliveries d JOIN destinations dst ON dst.id = d.destination_id
           WHERE dst.commitment_required AND d.study_id IS NOT NULL
             AND d.state = ANY($1::text[])
             AND d.commitment IS DISTINCT FROM 'committed'
             AND d.commitment IS DISTINCT FROM 'unsupported'
             AND d.delivered_at < now() - make_interval(secs => $2)
           LIMIT $3""",
        list(STORED),
        float(age_s),
        limit,
    )
    return [str(r["study_id"]) for r in rows]


#: The N-ACTION job lost with NATS's JetStream store (cinebridge_common.replay): done once its
#: transaction is no longer pending (by its key), or gone. The commitment sweep would publish it
#: again too, but only once overdue; this is at once.
LOST_WORK = [
    LostWork(
        stream="CB_JOBS",
        subject=RequestCommitment.subject,
        done="""NOT EXISTS (SELECT 1 FROM commitment_transactions t
                            WHERE t.transaction_uid = body->>'transaction_uid'
                              AND t.state = 'pending')""",
    )
]
