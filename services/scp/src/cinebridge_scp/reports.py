"""Sends the Storage Commitment reports the SCP owes on a new association (PS3.4 J.3.3).

Each report was stored (repository.owe_report) before its N-ACTION-RSP went out; this loop sends
the due ones, each on its own association from a worker thread, and keeps what happened: sent
with the requester's status, or tried again with backoff (doubling, capped) until the attempts
run out, then abandoned with its reason, visible in the table, the health detail and metrics.
Every SCP process runs it; the lease in claim_reports keeps a report with one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.supervise import backoff_delay
from cinebridge_dicom import requestor

from . import metrics, repository
from .commitment import send_report
from .settings import ScpSettings

log = logging.getLogger(__name__)

#: Reports claimed at once: one, so that its lease covers only its own attempt.
_BATCH = 1


class ReportSender:
    def __init__(self, pool: asyncpg.Pool, settings: ScpSettings) -> None:
        self.pool = pool
        self.settings = settings
        #: Set when a report became due (its N-ACTION-RSP went out): no wait for the poll.
        self.wake = asyncio.Event()
        self.owed = 0

    async def run(self) -> None:
        s = self.settings
        while True:
            try:
                claimed = await repository.claim_reports(self.pool, self.lease_s(), _BATCH)
                for owed in claimed:
                    await self.send(owed)
                self.owed = await repository.owed_reports(self.pool, 30)
                metrics.COMMITMENT_REPORTS_OWED.set(self.owed)
            except (OSError, asyncpg.PostgresError) as exc:  # the database may be down
                log.warning("commitment reports not read", extra=kv(error=repr(exc)[:200]))
                claimed = []
            if claimed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), s.scp_commitment_report_poll_s)
            self.wake.clear()

    def lease_s(self) -> float:
        """Longer than one attempt can take (connect and ACSE 10 s each, the report's send
        and its response `dimse_s` each, the release), so no two processes send a report at
        once; a process killed while sending leaves it to another once the lease ends."""
        return 4 * self.settings.scp_commitment_report_dimse_s + 30.0

    async def send(self, owed: repository.OwedReport) -> None:
        s = self.settings
        try:
            status = await asyncio.to_thread(
                send_report, owed.to, owed.report, s.scp_commitment_report_dimse_s
            )
        except requestor.AssociationError as exc:
            attempt = owed.attempts + 1
            give_up = not exc.transient or attempt >= s.scp_commitment_report_attempts
            retry = (
                None
                if give_up
                else backoff_delay(
                    attempt,
                    s.scp_commitment_report_backoff_s,
                    s.scp_commitment_report_backoff_cap_s,
                )
            )
            await repository.report_not_sent(self.pool, owed.id, exc.reason, retry)
            metrics.COMMITMENT_REPORTS_SENT.labels("abandoned" if give_up else "retry").inc()
            log.warning(
                "commitment report not sent",
                extra=kv(
                    transaction=owed.report.transaction_uid,
                    peer=owed.to.ae_title,
                    attempt=attempt,
                    reason=exc.reason,
                    retry_s=None if retry is None else round(retry, 1),
                ),
            )
            return
        # Any answer ends it: a failure status is the requester's to act on (PS3.7 10.1.1.1.8).
        await repository.report_sent(self.pool, owed.id, status)
        metrics.COMMITMENT_REPORTS_SENT.labels("sent").inc()
