"""Storage Commitment in the sender: the N-ACTION job, reports from the SCP, the sweep, the
ledger's RPCs and metrics (PS3.4 Annex J, IHE RAD-10)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from cinebridge_common import commitment as sc
from cinebridge_common.bus import Delivery, Retry
from cinebridge_common.logging import kv
from cinebridge_common.messages import (
    CommitmentReported,
    CommitmentStatusReply,
    CommitmentStatusRequest,
    CommittedStudiesReply,
    CommittedStudiesRequest,
    Reply,
    RequestCommitment,
)
from prometheus_client import Gauge

from . import commitment, scu
from . import commitment_repository as crepo
from . import repository as repo
from .batches import SenderDeps, peer_for

log = logging.getLogger(__name__)

DELIVERIES = Gauge(
    "cinebridge_sender_commitment_deliveries",
    "Stored deliveries to destinations requiring Storage Commitment, by commitment state "
    "(none, requested, committed, failed, unsupported)",
    ["destination", "state"],
)
OLDEST_UNCOMMITTED = Gauge(
    "cinebridge_sender_oldest_uncommitted_age_seconds",
    "Age since it was sent of the oldest stored delivery not committed (nor unsupported)",
    ["destination"],
)
OVERDUE = Gauge(
    "cinebridge_sender_uncommitted_overdue_studies",
    "Studies stored at a destination requiring commitment and not committed "
    "CB_SENDER_COMMITMENT_OVERDUE_S after they were sent",
)
#: Longest report wait after a time-out: re-requests back off up to a day.
_MAX_WAIT_S = 86400.0


async def handle_request_commitment(
    msg: RequestCommitment, delivery: Delivery, deps: SenderDeps
) -> None:
    """Send the N-ACTION of a pending transaction; the database says whether it still is."""
    txn = await crepo.get_transaction(deps.pool, msg.transaction_uid)
    if txn is None or txn.state != "pending":
        return
    destination = await repo.get_destination(deps.pool, str(txn.destination_id))
    if destination is None or destination.kind != "dimse":
        return
    peer = await peer_for(deps, destination)
    answered = deps.answered.setdefault(txn.transaction_uid, threading.Event())
    try:
        async with delivery.working():
            outcome = await asyncio.to_thread(
                commitment.request,
                peer,
                deps.settings.timeouts(),
                txn.transaction_uid,
                txn.references,
                min(
                    deps.settings.sender_commitment_same_association_wait_s,
                    destination.commitment_timeout_s,
                ),
                answered,
            )
    except scu.AssociationFailed as exc:
        await _not_through(deps, txn, exc.reason)
        return
    finally:
        deps.answered.pop(txn.transaction_uid, None)
    fields = kv(transaction=txn.transaction_uid, destination=destination.name, outcome=outcome.kind)
    log.info("storage commitment requested", extra=fields)
    if outcome.kind == "unsupported":
        await crepo.mark_unsupported(deps.pool, txn.transaction_uid, outcome.reason)
    elif outcome.kind == "refused":
        await _not_through(deps, txn, outcome.reason)
    else:
        wait = min(destination.commitment_timeout_s * 2.0 ** (txn.request - 1), _MAX_WAIT_S)
        await crepo.mark_requested(deps.pool, txn.transaction_uid, wait)
        if outcome.report is not None:
            await apply(deps, outcome.report)


async def _not_through(deps: SenderDeps, txn: crepo.Transaction, reason: str) -> None:
    delay = deps.settings.backoff().delay_s(txn.attempts + 1)
    await crepo.action_failed(deps.pool, txn.transaction_uid, reason, delay)
    log.warning(
        "storage commitment request failed",
        extra=kv(transaction=txn.transaction_uid, reason=reason, retry_s=round(delay, 1)),
    )
    raise Retry(f"N-ACTION not through: {reason}", delay=delay)


async def apply(deps: SenderDeps, report: sc.Report) -> crepo.Applied | None:
    async with deps.pool.acquire() as conn, conn.transaction():
        applied = await crepo.apply_report(conn, report)
    if applied is not None:
        event = deps.answered.get(report.transaction_uid)
        if event is not None:
            event.set()
        log.info(
            "storage commitment report",
            extra=kv(
                transaction=report.transaction_uid,
                committed=applied.committed,
                resent=applied.resent,
                failed=applied.failed,
            ),
        )
    return applied


async def handle_commitment_reported(
    msg: CommitmentReported, _d: Delivery, deps: SenderDeps
) -> None:
    """A report the archive sent to the station's SCP on a new association."""
    report = sc.Report(msg.transaction_uid)
    for ref in msg.references:
        if ref.failure_reason is None:
            report.committed.append(sc.Reference(ref.sop_class_uid, ref.sop_instance_uid))
        else:
            report.failed.append(
                sc.Failure(ref.sop_class_uid, ref.sop_instance_uid, ref.failure_reason)
            )
    if await apply(deps, report) is None:
        # Another application's transaction (the SCP serves every AE that stores to it).
        log.info(
            "storage commitment report for no transaction of ours",
            extra=kv(transaction=msg.transaction_uid, calling_ae=msg.calling_ae),
        )


async def sweep(deps: SenderDeps, sweep_number: int) -> None:
    """Time-outs re-requested or failed, lost jobs re-published, studies never asked opened;
    then the metrics."""
    async with deps.pool.acquire() as conn, conn.transaction():
        again, failed = await crepo.expire(conn)
    if again or failed:
        log.warning(
            "storage commitment reports overdue", extra=kv(asked_again=again, failed=failed)
        )
    grace = max(deps.settings.sender_lease_s, deps.settings.sender_backoff_cap_s) * 2
    lost = await crepo.overdue_pending(deps.pool, grace)
    if lost:
        await crepo.republish(deps.pool, lost, sweep_number)
    await crepo.open_missing(deps.pool)
    await refresh_metrics(deps)


async def refresh_metrics(deps: SenderDeps) -> None:
    oldest: dict[str, float] = {}
    for row in await crepo.commitment_stats(deps.pool):
        DELIVERIES.labels(row["name"], row["state"]).set(row["n"])
        oldest.setdefault(row["name"], 0.0)
        if row["state"] in ("none", "requested", "failed"):
            oldest[row["name"]] = max(oldest[row["name"]], float(row["oldest_s"]))
    for name, age in oldest.items():
        OLDEST_UNCOMMITTED.labels(name).set(age)
    overdue = await crepo.overdue_studies(deps.pool, deps.settings.sender_commitment_overdue_s)
    OVERDUE.set(len(overdue))


async def handle_committed_studies(req: CommittedStudiesRequest, deps: SenderDeps) -> Reply:
    limit = max(1, min(req.limit, 10000))
    if len(req.study_ids) > 1000:
        return CommittedStudiesReply(ok=False, error="at most 1000 studies per request")
    try:
        studies = await crepo.committed_studies(
            deps.pool, req.committed_before_s, limit, req.study_ids or None
        )
    except ValueError as exc:
        return CommittedStudiesReply(ok=False, error=f"bad study id: {exc}")
    return CommittedStudiesReply(
        study_ids=[s.study_id for s in studies],
        instances={s.study_id: s.instances for s in studies},
        committed_at={s.study_id: s.committed_at for s in studies},
    )


async def handle_commitment_status(req: CommitmentStatusRequest, deps: SenderDeps) -> Reply:
    if len(req.study_ids) > 1000:
        return CommitmentStatusReply(ok=False, error="at most 1000 studies per request")
    study_ids = req.study_ids
    if req.overdue:
        study_ids = await crepo.overdue_studies(
            deps.pool, deps.settings.sender_commitment_overdue_s
        )
    try:
        studies = await crepo.study_status(deps.pool, study_ids)
    except ValueError as exc:
        return CommitmentStatusReply(ok=False, error=f"bad study id: {exc}")
    return CommitmentStatusReply(studies=studies)


#: (stream, durable, message, handler) and (request, handler): added to the sender's tables.
CONSUMERS: list[tuple[str, str, Any, Any]] = [
    ("CB_JOBS", "sender-commit", RequestCommitment, handle_request_commitment),
    ("CB_EVENTS", "sender-commitment-reported", CommitmentReported, handle_commitment_reported),
]
RPC: list[tuple[Any, Any]] = [
    (CommittedStudiesRequest, handle_committed_studies),
    (CommitmentStatusRequest, handle_commitment_status),
]
