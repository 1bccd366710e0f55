"""One batch: the deliveries a queue worker claimed for a destination, sent over one association
(or as STOW-RS requests), each answer recorded.

Results are recorded as each C-STORE-RSP arrives (the SCU thread crosses into the event loop
through one bridge), so a crash mid-batch loses at most the instance in flight, which is sent
again after its lease expires (the PACS keeps one copy per SOP Instance UID).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.messages import Destination
from cinebridge_common.messages.sender import DeliveryState
from cinebridge_common.station import load_station_settings
from cinebridge_common.store import MediaStore, UnsafePath
from cinebridge_dicom import tls

from . import commitment_repository, metrics, scu, stow
from . import destination_repository as destinations
from . import queue_repository as qrepo
from . import repository as repo
from .policy import Outcome
from .settings import SenderSettings

log = logging.getLogger(__name__)


@dataclass
class SenderDeps:
    """What the sender's handlers need (built once by the composition root)."""

    pool: asyncpg.Pool
    store: MediaStore
    settings: SenderSettings
    owner: str
    #: Storage Commitment transactions whose N-ACTION association waits for a report: set
    #: when the report arrives another way (on the SCP), so the wait ends.
    answered: dict[str, threading.Event] = field(default_factory=dict)


async def peer_for(deps: SenderDeps, destination: Destination) -> scu.Peer:
    calling = destination.calling_ae_title
    if not calling:
        calling = (await load_station_settings(deps.pool)).local_ae_title
    assert destination.ae_title and destination.host and destination.port  # kind "dimse"
    return scu.Peer(
        ae_title=destination.ae_title,
        host=destination.host,
        port=destination.port,
        calling_ae_title=calling,
        tls=tls_context(deps.settings) if destination.tls else None,
    )


def tls_context(settings: SenderSettings) -> ssl.SSLContext:
    """PS3.15 B.9 secure transport (`cinebridge_dicom.tls`): the PACS's certificate checked
    against the CA bundle (the system's when none is set), ours presented when configured."""
    return tls.client_context(
        ca_bundle=settings.sender_tls_ca_file,
        certificate=settings.sender_tls_cert_file,
        private_key=settings.sender_tls_key_file,
    )


def _item(deps: SenderDeps, row: repo.DeliveryRow) -> scu.Item:
    try:
        path = deps.store.resolve(row.rel_path)
    except UnsafePath:
        # Leaves the path unresolvable: the SCU reports "file missing" (permanent).
        path = deps.store.root / ".missing" / str(row.id)
    return scu.Item(
        key=str(row.id),
        path=path,
        sop_class_uid=row.sop_class_uid,
        sop_instance_uid=row.sop_instance_uid,
        transfer_syntax_uid=row.transfer_syntax_uid,
    )


async def send_batch(
    deps: SenderDeps, destination: Destination, batch: Sequence[repo.DeliveryRow]
) -> dict[uuid.UUID, DeliveryState]:
    """Send a claimed batch, renewing its leases meanwhile; the state each delivery was left in."""
    log.info("batch claimed", extra=kv(destination=destination.name, instances=len(batch)))
    renewer = asyncio.create_task(_renew(deps, [r.id for r in batch]))
    try:
        return await _run(deps, destination, batch)
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer


class Cancelled(Exception):
    """The service is stopping: the SCU thread abandons the batch (leases expire, it resumes)."""


async def _run(
    deps: SenderDeps, destination: Destination, batch: Sequence[repo.DeliveryRow]
) -> dict[uuid.UUID, DeliveryState]:
    if destination.kind == "dicomweb":
        return await _run_stow(deps, destination, batch)
    loop = asyncio.get_running_loop()
    attempts = {r.id: r.attempts for r in batch}
    states: dict[uuid.UUID, DeliveryState] = {}
    stop = threading.Event()

    async def record(result: scu.ItemResult) -> None:
        key = uuid.UUID(result.key)
        states[key] = await _record(deps, destination.name, key, attempts[key], result)

    def on_result(result: scu.ItemResult) -> None:
        # Runs in the SCU thread: wait until the answer is durable before sending the next one,
        # but give up at once when the service stops (the event loop will not run it any more).
        future = asyncio.run_coroutine_threadsafe(record(result), loop)
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                future.result(timeout=0.2)
                return
        future.cancel()
        raise Cancelled("stopping" if stop.is_set() else "recording the result timed out")

    peer = await peer_for(deps, destination)
    items = [_item(deps, r) for r in batch]
    # A handful of small instances is not worth a second association (negotiation costs more).
    associations = max(1, min(destination.max_associations, len(items) // 8))
    try:
        await asyncio.to_thread(
            scu.send_parallel,
            peer,
            items,
            deps.settings.timeouts(),
            associations=associations,
            decompress_stills=destination.profile == "decompress-stills",
            on_result=on_result,
        )
    except scu.AssociationFailed as exc:
        await _association_failed(deps, destination, batch, exc, states)
    except asyncio.CancelledError:
        stop.set()
        raise
    else:
        await destinations.destination_ok(deps.pool, batch[0].destination_id)
    return states


async def archive_for(deps: SenderDeps, destination: Destination) -> stow.Archive:
    assert destination.id is not None and destination.base_url is not None
    secret = await destinations.destination_secret(deps.pool, destination.id)
    return stow.Archive(
        base_url=destination.base_url,
        auth=stow.make_auth(destination.auth, destination.username, secret),
        verify=stow.verify_context(destination.tls_verify, destination.ca_file),
    )


async def _run_stow(
    deps: SenderDeps, destination: Destination, batch: Sequence[repo.DeliveryRow]
) -> dict[uuid.UUID, DeliveryState]:
    """The batch over STOW-RS (PS3.18 §10.5): the same records, states and destination backoff
    as an association; a request failing as a whole counts as a failed association."""
    attempts = {r.id: r.attempts for r in batch}
    states: dict[uuid.UUID, DeliveryState] = {}

    async def record(result: scu.ItemResult) -> None:
        key = uuid.UUID(result.key)
        states[key] = await _record(deps, destination.name, key, attempts[key], result)

    try:
        archive = await archive_for(deps, destination)
        async with stow.client(archive, deps.settings.timeouts()) as http:
            await stow.send(
                http,
                archive,
                [_item(deps, r) for r in batch],
                record,
                max_request_bytes=deps.settings.sender_stow_request_max_mb << 20,
                lanes=destination.max_associations,
            )
    except (stow.ArchiveFailed, OSError) as exc:
        failure = exc if isinstance(exc, stow.ArchiveFailed) else _ca_unreadable(exc)
        await _association_failed(deps, destination, batch, failure, states)
    else:
        await destinations.destination_ok(deps.pool, batch[0].destination_id)
    return states


def _ca_unreadable(exc: OSError) -> stow.ArchiveFailed:
    # ssl.create_default_context(cafile=...) of a missing or unreadable CA file.
    return stow.ArchiveFailed(f"CA file unusable: {exc.strerror or exc}", transient=False)


async def _association_failed(
    deps: SenderDeps,
    destination: Destination,
    batch: Sequence[repo.DeliveryRow],
    exc: scu.AssociationFailed | stow.ArchiveFailed,
    states: dict[uuid.UUID, DeliveryState],
) -> None:
    log.warning("association failed", extra=kv(destination=destination.name, reason=exc.reason))
    metrics.ASSOCIATION_FAILURES.labels(destination.name).inc()
    # The destination as a whole backs off; the batch retries together, as one association.
    delay = await destinations.destination_failed(
        deps.pool, batch[0].destination_id, exc.reason, deps.settings.backoff()
    )
    outcome: Outcome = "failed-retrying" if exc.transient else "failed-permanent"
    now = time.time()
    for row in batch:
        result = scu.ItemResult(str(row.id), outcome, None, exc.reason, now, now)
        states[row.id] = await _record(
            deps, destination.name, row.id, row.attempts, result, retry_in_s=delay
        )


async def _record(
    deps: SenderDeps,
    destination: str,
    delivery_id: uuid.UUID,
    attempts_before: int,
    result: scu.ItemResult,
    *,
    retry_in_s: float | None = None,
) -> DeliveryState:
    failures = attempts_before + 1
    state: DeliveryState = result.outcome
    error = result.error
    retry_in = 0.0
    if state == "failed-retrying":
        if failures >= deps.settings.sender_max_attempts:
            state = "failed-permanent"
            error = f"gave up after {failures} attempts: {error}"
        elif retry_in_s is not None:
            retry_in = retry_in_s
        else:
            retry_in = deps.settings.backoff().delay_s(failures)
    started = dt.datetime.fromtimestamp(result.started_at, dt.UTC)
    stored = await qrepo.record_result(
        deps.pool,
        delivery_id,
        deps.owner,
        state=state,
        status=result.status,
        error=error,
        started_at=started,
        retry_in_s=retry_in,
        on_stored=commitment_repository.after_sent,
    )
    metrics.record_attempt(
        destination, stored, result.status, result.started_at, result.finished_at
    )
    log.info(
        "delivery attempt",
        extra=kv(delivery=delivery_id, state=stored, status=_hex(result.status), error=error),
    )
    return stored


def _hex(status: int | None) -> str:
    return "-" if status is None else f"{status:04X}"


async def _renew(deps: SenderDeps, ids: list[uuid.UUID]) -> None:
    interval = max(deps.settings.sender_lease_s / 3, 0.5)
    while True:
        await asyncio.sleep(interval)
        try:
            await qrepo.renew_leases(deps.pool, ids, deps.owner, deps.settings.sender_lease_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("lease renewal failed", extra=kv(error=repr(exc)))
