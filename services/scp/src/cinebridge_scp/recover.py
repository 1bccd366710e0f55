"""Rebuild index rows from received files: the fsync'd file is the record, the row its index.

A C-STORE is answered 0x0000 once its file is durable under `received/` and its row committed.
The commit does not wait for PostgreSQL's WAL flush (repository.open_index_pool), and a crash
can fall between the file's rename and the row's commit, so a file may lack its row. The sweep
finds such files (older than any store still in flight), checks them as Ingest would, and
indexes them with an outbox event, under the station's duplicate policy — except that a row
whose own file is gone is always replaced. A file that fails the check goes to `quarantine/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.store import MediaStore, sha256_file
from cinebridge_common.uids import is_valid_uid

from . import metrics, repository
from .ingest import UID_FIELDS, InstanceFacts, read_attributes
from .walk import MalformedDataset

log = logging.getLogger(__name__)

#: Rows looked up per query.
BATCH = 1000


@dataclass(frozen=True)
class Orphan:
    rel_path: str
    path: Path


class Recovery:
    """One sweep at a time; run by the service process only (never by its workers)."""

    def __init__(
        self,
        store: MediaStore,
        pool: asyncpg.Pool,
        duplicates: repository.Duplicates,
        max_depth: int,
        in_flight_s: float,
    ) -> None:
        self.store = store
        self.pool = pool
        self.duplicates = duplicates
        self.max_depth = max_depth
        #: A file younger than this may belong to a C-STORE still being indexed.
        self.in_flight_s = in_flight_s
        self.started_at = time.time()
        self.counters: Counter[str] = Counter()
        self._lock = asyncio.Lock()

    async def sweep(self, days: int) -> Counter[str]:
        """Index every orphan of the last `days` days (UTC day folders); returns the counts."""
        async with self._lock:
            counts: Counter[str] = Counter()
            candidates = await asyncio.to_thread(self._candidates, days)
            for start in range(0, len(candidates), BATCH):
                batch = candidates[start : start + BATCH]
                known = await self._indexed([o.rel_path for o in batch])
                for orphan in batch:
                    if orphan.rel_path not in known:
                        counts[await self._recover(orphan)] += 1
            self.counters.update(counts)
            for outcome, count in counts.items():
                metrics.RECOVERED.labels(outcome).inc(count)
            if counts:
                log.warning("received files without index rows handled", extra=kv(**counts))
            return counts

    def _candidates(self, days: int) -> list[Orphan]:
        now = time.time()
        cutoff = max(self.started_at, now - self.in_flight_s)
        today = dt.datetime.now(dt.UTC).date()
        found: list[Orphan] = []
        for back in range(days):
            day = today - dt.timedelta(days=back)
            rel_dir = f"received/{day:%Y/%m/%d}"
            folder = self.store.root / rel_dir
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    if not entry.name.endswith(".dcm") or not entry.is_file(follow_symlinks=False):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat(follow_symlinks=False).st_ctime < cutoff:
                            found.append(Orphan(f"{rel_dir}/{entry.name}", Path(entry.path)))
        return found

    async def _indexed(self, rel_paths: list[str]) -> set[str]:
        return await repository.indexed_paths(self.pool, rel_paths)

    async def _recover(self, orphan: Orphan) -> str:
        try:
            facts = await asyncio.to_thread(self._facts, orphan)
        except FileNotFoundError:
            return "vanished"  # removed meanwhile (a refused store's cleanup)
        except (MalformedDataset, ValueError, OSError) as exc:
            await asyncio.to_thread(self._quarantine, orphan, str(exc))
            return "quarantined"
        existing = await repository.path_of(self.pool, facts["sop_instance_uid"])
        policy = self.duplicates
        if existing is not None and not await asyncio.to_thread(self._exists, existing):
            policy = "replace"  # the row names a file that is gone: this copy takes its place
        outcome = await repository.index_instance(self.pool, facts, policy)
        if outcome.kept_existing:
            await asyncio.to_thread(self.store.delete, orphan.rel_path)
            return "duplicate_removed"
        if outcome.replaced_rel_path:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.delete, outcome.replaced_rel_path)
        log.info(
            "index row rebuilt from received file",
            extra=kv(instance=outcome.instance_id, rel_path=orphan.rel_path),
        )
        return "recovered"

    def _exists(self, rel_path: str) -> bool:
        try:
            return self.store.resolve(rel_path).is_file()
        except ValueError:
            return False

    def _facts(self, orphan: Orphan) -> InstanceFacts:
        size = orphan.path.stat().st_size
        ts, attrs = read_attributes(str(orphan.path), size, self.max_depth)
        for name in UID_FIELDS:
            if not is_valid_uid(attrs[name]):
                raise ValueError(f"{name} missing or not a valid UID")
        return InstanceFacts(
            attrs,
            ts,
            attrs.get("source_ae", ""),
            "",
            orphan.rel_path,
            size,
            sha256_file(orphan.path),
        )

    def _quarantine(self, orphan: Orphan, reason: str) -> None:
        target = self.store.new_relative("quarantine", "dcm")
        with contextlib.suppress(FileNotFoundError):
            self.store.commit_temp(orphan.path, target)
            metrics.QUARANTINED.inc()
            log.warning(
                "received file without index row failed its check, quarantined",
                extra=kv(rel_path=orphan.rel_path, quarantine=target, reason=reason[:200]),
            )
