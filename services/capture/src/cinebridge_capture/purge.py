"""The local purge policy's planner (docs/purge.md): which studies' local data may go, and the
steps of each purge. Every capture process runs it periodically; a PostgreSQL advisory lock lets
one run at a time. A study is purged only when the sender lists it as committed by every
destination marked "commitment required" (`cb.rpc.sender.commitment.committed`, IHE RAD-10):
never inferred here, never when the sender cannot be asked. Each step is journalled in
`capture_purges`, so a kill at any point leaves nothing purged that is not committed and the next
run finishes what was started."""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from cinebridge_common.bus import Bus
from cinebridge_common.logging import kv
from cinebridge_common.messages import CommittedStudiesReply, CommittedStudiesRequest
from cinebridge_common.messages.purge import MediaStoreLow, PurgeReason
from cinebridge_common.read_models import missing_read_models, waiting_message
from cinebridge_common.station import StationSettings, load_station_settings
from cinebridge_common.store import MediaStore, UnsafePath

from . import purge_repository as repo
from .metrics import PURGED, STORE_LOW

log = logging.getLogger(__name__)

#: The sender answers from one query per study asked; 1000 is its bound per request.
ASK_BATCH = 1000
DAY_S = 86400.0
#: The other owners' read models the planner reads: how many instances the converter made of a
#: study, against how many the sender lists as committed. Until it exists (the converter never
#: started on this station) nothing is planned, and health says why.
READ_MODELS = ["converted_instances"]


class SenderUnavailable(Exception):
    """The sender could not say which studies are committed: nothing is purged this run."""


@dataclass
class PurgeDeps:
    pool: asyncpg.Pool
    store: MediaStore
    bus: Bus
    batch: int = 200
    ask_timeout_s: float = 10.0
    #: What the planner waits for, as last logged (`_read_models_present`).
    waiting: str = ""


@dataclass
class PurgeRun:
    """What one run did (logged; the tests read it)."""

    locked: bool = False
    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    store_low: bool = False
    #: Why nothing was planned: "waiting for converter to start (...)" (read_models.py).
    waiting: str = ""


@dataclass(frozen=True)
class Space:
    free: int
    total: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 100.0


def media_store_space(root: Path) -> Space:
    usage = shutil.disk_usage(root)
    return Space(usage.free, usage.total)


def pick_for_space(
    committed: list[repo.Candidate], space: Space, high_percent: float
) -> list[repo.Candidate]:
    """Oldest first (the list's order) until the expected free space reaches the high watermark.
    A study frees its media files and about as much again in DICOM files (the converter wraps
    the same compressed pictures and video), so each counts twice its media bytes."""
    target = space.total * high_percent / 100.0
    free = float(space.free)
    picked: list[repo.Candidate] = []
    for candidate in committed:
        if free >= target:
            break
        picked.append(candidate)
        free += 2 * candidate.media_bytes
    return picked


async def committed_of(
    deps: PurgeDeps, candidates: list[repo.Candidate], before_s: float
) -> set[str]:
    """Which of the candidates the sender lists as committed at least `before_s` ago, with as
    many instances as the converter made for it: an instance made but not yet handed to the
    sender (its announcement still on the bus) would not count against the study there."""
    ids = [c.study_id for c in candidates]
    committed: set[str] = set()
    made = await repo.instance_counts(deps.pool, ids)
    for start in range(0, len(ids), ASK_BATCH):
        chunk = ids[start : start + ASK_BATCH]
        request = CommittedStudiesRequest(
            study_ids=chunk, committed_before_s=before_s, limit=len(chunk)
        )
        try:
            reply = await deps.bus.request(request, CommittedStudiesReply, deps.ask_timeout_s)
        except Exception as exc:
            raise SenderUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not reply.ok:
            raise SenderUnavailable(reply.error or "refused")
        committed.update(
            s for s in reply.study_ids if reply.instances.get(s, -1) >= made.get(s, 0) > 0
        )
    return committed


async def purge_once(deps: PurgeDeps) -> PurgeRun:
    """One run: finish open purges, then start the ones the policy allows now."""
    run = PurgeRun()
    async with repo.planner_lock(deps.pool) as locked:
        if not locked:
            return run  # another capture process is running it
        run.locked = True
        run.finished += await finish_open(deps)
        station = await load_station_settings(deps.pool)
        if station.purge_enabled and await _read_models_present(deps, run):
            await _plan(deps, station, run)
        else:
            STORE_LOW.set(0)
    return run


async def _read_models_present(deps: PurgeDeps, run: PurgeRun) -> bool:
    """Whether the read models the planner reads exist; the wait is logged when it begins."""
    run.waiting = waiting_message(await missing_read_models(deps.pool, READ_MODELS))
    if run.waiting != deps.waiting:
        deps.waiting = run.waiting
        if run.waiting:
            log.warning("purge planner waiting", extra=kv(reason=run.waiting))
    return not run.waiting


@dataclass
class _Plan:
    retention: list[repo.Candidate] = field(default_factory=list)
    #: Committed, retention not reached: what the watermark may take, oldest first.
    committed: list[repo.Candidate] = field(default_factory=list)
    kept: int = 0


async def _survey(deps: PurgeDeps, station: StationSettings, low: bool) -> _Plan:
    """Every candidate, a page at a time (oldest first), so that old studies kept uncommitted
    never hide newer committed ones behind a page limit."""
    plan = _Plan()
    retention_s = station.purge_retention_days * DAY_S
    after: repo.Candidate | None = None
    while True:
        page = await repo.candidates(deps.pool, deps.batch, after)
        if not page:
            return plan
        past = await committed_of(deps, page, retention_s)
        plan.retention += [c for c in page if c.study_id in past]
        committed = await committed_of(deps, page, 0.0) if low else past
        plan.committed += [c for c in page if c.study_id in committed - past]
        plan.kept += sum(1 for c in page if c.study_id not in committed)
        if len(page) < deps.batch:
            return plan
        after = page[-1]


async def _plan(deps: PurgeDeps, station: StationSettings, run: PurgeRun) -> None:
    space = await asyncio.to_thread(media_store_space, deps.store.root)
    low = space.free_percent < station.purge_low_watermark_percent
    plan = await _survey(deps, station, low)
    picks: list[tuple[repo.Candidate, PurgeReason]] = [(c, "retention") for c in plan.retention]
    if low:
        freed = sum(2 * c.media_bytes for c in plan.retention)
        after = Space(space.free + freed, space.total)
        chosen = pick_for_space(plan.committed, after, _high(station))
        picks += [(c, "watermark") for c in chosen]
    for candidate, reason in picks:
        if await repo.start_purge(deps.pool, candidate.study_id, reason):
            log.info("purge started", extra=kv(study=candidate.study_id, reason=reason))
            run.started.append(candidate.study_id)
    run.finished += await finish_open(deps)
    run.store_low = low and not picks
    STORE_LOW.set(1 if run.store_low else 0)
    if run.store_low:
        await _warn_store_low(deps, station, space, plan.kept)


def _high(station: StationSettings) -> float:
    return max(station.purge_high_watermark_percent, station.purge_low_watermark_percent)


async def _warn_store_low(
    deps: PurgeDeps, station: StationSettings, space: Space, uncommitted: int
) -> None:
    held = await repo.held_count(deps.pool)
    log.warning(
        "media store below the low watermark, nothing purgeable",
        extra=kv(free_percent=round(space.free_percent, 2), kept=uncommitted, held=held),
    )
    event = MediaStoreLow(
        free_percent=round(space.free_percent, 3),
        low_watermark_percent=station.purge_low_watermark_percent,
        kept_uncommitted=uncommitted,
        kept_held=held,
    )
    await deps.bus.publish_core(event)


async def finish_open(deps: PurgeDeps) -> list[str]:
    """Carry every journalled purge as far as it can go now: remove the media files not yet
    removed; mark the study purged once the converter reported its DICOM files gone."""
    finished = []
    for purge in await repo.open_purges(deps.pool):
        if not purge.media_removed:
            await remove_media(deps, purge.study_id)
        if await finish_study(deps.pool, purge.study_id):
            finished.append(str(purge.study_id))
    return finished


async def remove_media(deps: PurgeDeps, study_id: uuid.UUID) -> None:
    """Remove the study's media files, then mark them (a kill in between: removed again, which
    finds them gone). Thumbnails and the live preview are made from the sources in memory:
    a study has no other preview data on disk."""
    files = await repo.media_files(deps.pool, study_id)
    for item in files:
        try:
            await asyncio.to_thread(deps.store.delete, item.rel_path)
        except UnsafePath:
            # Never a file of the store, so nothing of it to remove; the row is marked all the same.
            log.warning("media path outside the store", extra=kv(media=str(item.media_id)))
    await repo.media_removed(deps.pool, study_id, files)


async def finish_study(pool: asyncpg.Pool, study_id: uuid.UUID) -> bool:
    event = await repo.finish(pool, study_id)
    if event is None:
        return False
    PURGED.labels(event.reason).inc()
    log.info(
        "study purged",
        extra=kv(
            study=event.study_id,
            reason=event.reason,
            media=event.media_files,
            instances=event.instances,
        ),
    )
    return True
