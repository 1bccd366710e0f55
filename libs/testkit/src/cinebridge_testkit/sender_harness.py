"""Integration-test harness: the sender as a real process on its own NATS and database, fed
with instances written into the media store. Only tests import it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats
from cinebridge_common.messages import (
    DestinationListReply,
    DestinationListRequest,
    InstanceCreated,
)
from cinebridge_common.store import MediaStore
from pydicom import dcmread

from . import kill_process, require_tool, stop_process, wait_for
from .instances import make_instance
from .reaper import spawn

#: Short timings so the fault tests finish in seconds (production defaults: 30 s x2 up to 10 min).
FAST_ENV = {
    "CB_SENDER_BACKOFF_BASE_S": "0.5",
    "CB_SENDER_BACKOFF_FACTOR": "2",
    "CB_SENDER_BACKOFF_CAP_S": "4",
    "CB_SENDER_CONNECT_TIMEOUT_S": "2",
    "CB_SENDER_ACSE_TIMEOUT_S": "3",
    "CB_SENDER_DIMSE_TIMEOUT_S": "5",
    "CB_SENDER_NETWORK_TIMEOUT_S": "5",
    "CB_SENDER_LEASE_S": "4",
    "CB_SENDER_SWEEP_INTERVAL_S": "2",
    "CB_HEARTBEAT_INTERVAL_S": "2",
}


@dataclass
class SenderHarness:
    nats: EmbeddedNats
    database_url: str
    store: MediaStore
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, destinations: list[dict[str, Any]] | None = None, **env: str) -> None:
        if destinations is not None:
            self.env["CB_SENDER_SEED_DESTINATIONS"] = json.dumps(destinations)
        self.env.update(env)
        full = {
            **os.environ,
            **FAST_ENV,
            "CB_NATS_URL": self.nats.url,
            "CB_DATABASE_URL": self.database_url,
            "CB_MEDIA_ROOT": str(self.store.root),
            "CB_INSTANCE_ID": f"sender-test-{self.starts}",
            "CB_HEALTH_PORT": "0",
            **self.env,
        }
        self.starts += 1
        log = open(self.tmp / "sender.log", "ab")
        self.proc = spawn(
            [sys.executable, "-m", "cinebridge_sender"], env=full, stdout=log, stderr=log
        )

    async def answering(self, timeout_s: float = 120.0) -> None:
        """Wait until the started sender answers on the bus (its RPC handlers subscribed): a
        process importing and connecting on a loaded machine takes seconds, and a client that
        asks before then is told that no service answers."""
        bus = await Bus.connect(self.nats.url, "sender-harness-probe")
        try:

            async def answers() -> bool:
                try:
                    reply = await bus.request(DestinationListRequest(), DestinationListReply, 2.0)
                except Exception:
                    return False
                return reply.ok

            await wait_for(answers, timeout_s, 0.2, what="the sender answering on the bus")
        finally:
            await bus.close()

    def kill(self) -> None:
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)

    def log_text(self) -> str:
        path = self.tmp / "sender.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def make(
        self,
        n: int,
        *,
        kind: str = "jpeg",
        study_id: str | None = None,
        payload_bytes: int = 0,
        auto_send: bool = True,
    ) -> list[InstanceCreated]:
        """Write `n` instances of one study into the media store; return their announcements."""
        study_id = study_id or str(uuid.uuid4())
        study_uid = "2.25." + str(uuid.UUID(study_id).int)
        out = []
        for i in range(n):
            rel = self.store.new_relative("dicom", "dcm")
            path = self.store.resolve(rel)
            make_instance(path, kind=kind, study_uid=study_uid, payload_bytes=payload_bytes, seed=i)
            out.append(self.created(rel, study_id, auto_send=auto_send))
        return out

    def created(self, rel: str, study_id: str, *, auto_send: bool = True) -> InstanceCreated:
        """The announcement of a Part 10 file already written at `rel` in the media store."""
        path = self.store.resolve(rel)
        ds = dcmread(path, stop_before_pixels=True)
        return InstanceCreated(
            instance_id=str(uuid.uuid4()),
            media_id=str(uuid.uuid4()),
            study_id=study_id,
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            rel_path=rel,
            size=path.stat().st_size,
            sha256=self.store.sha256(rel),
            auto_send=auto_send,
        )

    def peak_rss(self) -> int:
        """VmHWM (peak resident memory) of the running sender process, in bytes."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")

    async def announce(self, bus: Bus, msgs: list[InstanceCreated]) -> None:
        for msg in msgs:
            await bus.publish(msg, msg_id=f"created-{msg.instance_id}")


async def delivery_states(pool: asyncpg.Pool) -> dict[str, int]:
    return {str(k): n for k, n in (await delivery_counts(pool, "state")).items()}


async def delivery_counts(
    pool: asyncpg.Pool, column: Literal["state", "commitment"]
) -> dict[str | None, int]:
    """Deliveries per delivery state, or per commitment state (None: not asked)."""
    rows = await pool.fetch(f"SELECT {column} AS k, count(*) AS n FROM deliveries GROUP BY 1")
    return {r["k"]: int(r["n"]) for r in rows}


async def wait_states(
    pool: asyncpg.Pool,
    expected: dict[str, int] | dict[str | None, int],
    timeout_s: float,
    harness: SenderHarness,
    column: Literal["state", "commitment"] = "state",
) -> None:
    """Wait until the deliveries per `column` are `expected`; else the sender's log and the
    counts as they are, and the test fails."""

    async def check() -> bool:
        return await delivery_counts(pool, column) == expected

    try:
        await wait_for(check, timeout_s, interval_s=0.2, what=f"deliveries' {column} {expected}")
    except AssertionError:
        print(harness.log_text()[-8000:])
        print(f"{column} now:", await delivery_counts(pool, column))
        raise


def tool(name: str) -> str:
    path = require_tool(name)
    return shutil.which(path) or path
