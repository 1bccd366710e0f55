"""`cinebridge-convert --send`: files handed to the running station's sender, as the service does.

The converter service announces each instance (InstanceCreated through the outbox) and the
sender queues its deliveries; here the files are first copied into the station's media store
(the sender reads only from there), announced without auto-send, then queued to the one
destination asked for with the statement's "Forward" job, so the sender's retries, resting of a
down destination and delivery states apply unchanged. The sender owns `outgoing_instances` and
`deliveries`; this module only reads them (services/sender/README.md documents the columns).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cinebridge_common import outbox
from cinebridge_common.bus import Bus, BusError
from cinebridge_common.db import DatabaseUnavailable, create_pool
from cinebridge_common.messages import (
    Destination,
    DestinationListReply,
    DestinationListRequest,
    ForwardStudy,
    InstanceCreated,
)
from cinebridge_common.settings import ServiceSettings
from cinebridge_common.store import MediaStore
from pydicom import dcmread

from . import handoff_repository
from .convert import final_relative

#: Delivery states after which the sender does nothing more on its own (Table 11 outcomes).
DELIVERED = frozenset({"sent", "warning"})
FINAL = DELIVERED | {"failed-permanent"}
CHUNK = 4 << 20

Report = Callable[[dict[str, str]], None]


class StationUnavailable(RuntimeError):
    """The station's database, bus or sender cannot be reached: worth running again."""


class UnknownDestination(ValueError):
    """No enabled destination of that name is configured at the station."""


@dataclass(frozen=True)
class Delivery:
    path: Path
    sop_instance_uid: str
    state: str
    error: str | None


class Station:
    """The running station's database, bus and media store, opened for one run."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.store = MediaStore(settings.media_root)
        self.pool: asyncpg.Pool
        self.bus: Bus

    async def __aenter__(self) -> Station:
        try:
            dsn = self.settings.database_url.get_secret_value()
            self.pool = await create_pool(dsn, max_size=2, timeout_s=10.0)
        except DatabaseUnavailable as exc:
            raise StationUnavailable(str(exc)) from exc
        try:
            self.bus = await Bus.connect(
                self.settings.nats_url, f"cinebridge-convert@{self.settings.instance_id}"
            )
        except Exception as exc:
            await self.pool.close()
            raise StationUnavailable(f"NATS at {self.settings.nats_url}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.close()
        await self.pool.close()

    async def destination(self, name: str) -> Destination:
        """The enabled destination called `name`, asked of the sender (it owns the table)."""
        try:
            reply = await self.bus.request(DestinationListRequest(), DestinationListReply)
        except (BusError, TimeoutError) as exc:
            raise StationUnavailable(f"the station's sender does not answer: {exc}") from exc
        if not reply.ok:
            raise StationUnavailable(f"the station's sender: {reply.error}")
        found = {d.name: d for d in reply.destinations}
        chosen = found.get(name)
        if chosen is None or not chosen.enabled or chosen.id is None:
            known = ", ".join(sorted(n for n, d in found.items() if d.enabled)) or "none"
            raise UnknownDestination(f"no enabled destination named {name!r} (configured: {known})")
        return chosen

    async def hand_over(self, files: list[Path], destination: Destination) -> list[str]:
        """Copy each file into the store, announce it, and queue it to `destination`;
        returns the instance ids (the sender's `outgoing_instances.id`)."""
        events = [await asyncio.to_thread(self._place, path) for path in files]
        async with self.pool.acquire() as conn, conn.transaction():
            for event in events:
                await outbox.enqueue(conn, event, msg_id=f"instance-created-{event.instance_id}")
        ids = [e.instance_id for e in events]
        await self._recorded(ids)
        run = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            for instance_id in ids:
                job = ForwardStudy(
                    job_key=f"convert-send-{run}-{instance_id}",
                    instance_id=instance_id,
                    destination_ids=[str(destination.id)],
                    requested_by="cinebridge-convert",
                )
                await outbox.enqueue(conn, job, msg_id=job.job_key)
        return ids

    def _place(self, path: Path) -> InstanceCreated:
        """The file in the media store under the converter's name for its UID, fsync'd."""
        ds = dcmread(path, stop_before_pixels=True)
        uid = str(ds.SOPInstanceUID)
        rel = final_relative(uid, dt.datetime.now(dt.UTC))
        digest = hashlib.sha256()
        with open(path, "rb") as src, self.store.open_atomic(rel) as out:
            while block := src.read(CHUNK):
                digest.update(block)
                out.write(block)
        instance_id = uuid.uuid5(uuid.NAMESPACE_OID, uid)
        return InstanceCreated(
            instance_id=str(instance_id),
            media_id=str(uuid.uuid5(instance_id, "cinebridge-convert")),
            study_id="",  # not a study of the station's list: sent, not shown
            sop_instance_uid=uid,
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            rel_path=rel,
            size=os.path.getsize(path),
            sha256=digest.hexdigest(),
            auto_send=False,
        )

    async def _recorded(self, ids: list[str], timeout_s: float = 60.0) -> None:
        """Forward finds only instances the sender has recorded: wait until it has them all."""
        wanted = [uuid.UUID(i) for i in ids]
        deadline = time.monotonic() + timeout_s
        while True:
            count = await handoff_repository.recorded_count(self.pool, wanted)
            if count == len(wanted):
                return
            if time.monotonic() > deadline:
                raise StationUnavailable(
                    f"the station's sender recorded {count} of {len(wanted)} instances in "
                    f"{timeout_s:.0f} s (is it running?)"
                )
            await asyncio.sleep(0.2)

    async def wait_delivered(
        self, ids: list[str], destination: Destination, timeout_s: float, report: Report
    ) -> dict[str, tuple[str, str | None]]:
        """Instance id -> (state, last error) once every delivery is final, or at `timeout_s`
        (a delivery still retrying then is reported as it stands; the station keeps trying)."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, tuple[str, str | None]] = {}
        while True:
            states = await handoff_repository.delivery_states(
                self.pool, uuid.UUID(str(destination.id)), [uuid.UUID(i) for i in ids]
            )
            report({i: states.get(i, ("queued", None))[0] for i in ids})
            if len(states) == len(ids) and all(s in FINAL for s, _ in states.values()):
                return states
            if time.monotonic() > deadline:
                return states
            await asyncio.sleep(0.25)
