"""The SCP process SIGKILLed while four associations store into it: nothing acknowledged is lost.

0x0000 is answered only once the file, its rename and its directory are fsync'd and the
instance's row is committed (the rows of concurrent associations in one group transaction,
group_index.py). So whatever group was open when the process died, every instance a sender saw
acknowledged has its row, and the file that row names holds the bytes it was sent.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import asyncpg
import pydicom
import pytest
from cinebridge_common.embedded import free_port
from cinebridge_testkit import wait_for_sync
from pynetdicom import AE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SENDERS = 4
PER_SENDER = 150
#: Acknowledged instances before the kill: enough that groups of several associations formed.
ACKNOWLEDGED_BEFORE_KILL = 40
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _send(port: int, files: dict[str, Path], acknowledged: list[str], lock: threading.Lock) -> None:
    """Store the files over one association until it breaks; record each 0x0000."""
    ae = AE(ae_title="KILLTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CT, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", port, ae_title="CINEBRIDGE")
    if not assoc.is_established:
        return
    try:
        for uid, path in files.items():
            status = assoc.send_c_store(path)
            if not assoc.is_established or "Status" not in status:
                return  # the SCP died: this instance was not acknowledged
            if status.Status == 0x0000:
                with lock:
                    acknowledged.append(uid)
    finally:
        if assoc.is_established:
            assoc.abort()


async def test_sigkill_mid_association_loses_no_acknowledged_instance(
    nats_url: str, database_url: str, db_pool: asyncpg.Pool, tmp_path: Path, dicom: Any
) -> None:
    folders = []
    for n in range(SENDERS):
        folder = tmp_path / f"sender{n}"
        folder.mkdir()
        paths = [dicom.make_ct(folder / f"{m}.dcm", size=64) for m in range(PER_SENDER)]
        folders.append({_uid(p): p for p in paths})
    media, port = tmp_path / "media", free_port()
    env = dict(
        os.environ,
        CB_NATS_URL=nats_url,
        CB_DATABASE_URL=database_url,
        CB_MEDIA_ROOT=str(media),
        CB_SCP_PORT=str(port),
        CB_HEALTH_PORT="0",
        CB_INSTANCE_ID="scp-killed",
        CB_LOG_LEVEL="WARNING",
    )
    with open(tmp_path / "scp.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cinebridge_scp"], env=env, stdout=log, stderr=log
        )
    acknowledged: list[str] = []
    lock = threading.Lock()
    senders = [
        threading.Thread(target=_send, args=(port, files, acknowledged, lock), daemon=True)
        for files in folders
    ]
    try:
        wait_for_sync(lambda: _listening(port), 120, what="the SCP's DICOM port")
        for sender in senders:
            sender.start()
        wait_for_sync(
            lambda: len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL,
            120,
            what=f"{ACKNOWLEDGED_BEFORE_KILL} acknowledged instances",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for sender in senders:
            sender.join(60)
            assert not sender.is_alive()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    rows = {
        r["sop_instance_uid"]: (r["rel_path"], r["sha256"])
        for r in await db_pool.fetch(
            "SELECT sop_instance_uid, rel_path, sha256 FROM received_instances"
        )
    }
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= ACKNOWLEDGED_BEFORE_KILL
    assert [uid for uid in acked if uid not in rows] == []
    sent = {uid: path for files in folders for uid, path in files.items()}
    for uid in acked:
        rel_path, sha256 = rows[uid]
        stored = media / rel_path
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha256
        assert pydicom.dcmread(stored).PixelData == pydicom.dcmread(sent[uid]).PixelData
