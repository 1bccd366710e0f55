"""Interop matrix, sending side: the station's C-STORE requestor sends to every outside Storage
SCP, and each instance arrives with its data set as the file holds it.

Receivers: DCMTK storescp, Orthanc, pynetdicom's storescp app (uncompressed syntaxes only: the
app accepts no JPEG or MPEG syntax, so it gets an Explicit VR Little Endian instance), and
dcmjs-dimse (npm, pinned in tests/peers/dcmjs-dimse/package.json; it decodes and writes each
data set again, so its files are compared element by element and its video by the stream the
fragments hold). GDCM has no Storage SCP (gdcmscu is a requestor only): it is in the storing
side of the matrix (tests/integration/scp/test_scp_interop_matrix.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from cinebridge_common.embedded import free_port

# The station's C-STORE requestor, today in the sender service: the one place to re-point.
from cinebridge_sender.scu import Item, Peer, Timeouts, send_batch
from cinebridge_testkit import require_tool, stop_process
from cinebridge_testkit.instances import dataset_bytes, dataset_bytes_of, make_instance
from cinebridge_testkit.nodepeer import node_peer
from cinebridge_testkit.storage_peers import DcmtkStorescp, OrthancPeer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _items(tmp: Path, kinds: list[str]) -> list[Item]:
    out = []
    for n, kind in enumerate(kinds):
        path = tmp / f"{kind}-{n}.dcm"
        payload = 1_500_000 if kind == "video" else 100_000
        ds = make_instance(path, kind=kind, payload_bytes=payload, seed=n)
        out.append(
            Item(
                kind,
                path,
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                str(ds.file_meta.TransferSyntaxUID),
            )
        )
    return out


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the peer exited ({proc.returncode})"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise AssertionError(f"no peer listening on {port} after {timeout_s} s")


@contextlib.contextmanager
def _process(
    command: list[str], port: int, log: Path, env: dict[str, str] | None
) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    try:
        _wait_port(port, proc)
        yield
    finally:
        stop_process(proc)


def _by_uid(folder: Path) -> dict[str, Path]:
    found = {}
    for path in folder.iterdir():
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            found[str(ds.SOPInstanceUID)] = path
    return found


def _send(port: int, ae: str, items: list[Item]) -> list[str]:
    results = send_batch(Peer(ae, "127.0.0.1", port), items, Timeouts())
    return [r.outcome for r in results]


def _fragments_stream(value: bytes) -> bytes:
    """The bytes the fragments of encapsulated Pixel Data hold, Basic Offset Table left out."""
    out, pos, first = b"", 0, True
    while pos + 8 <= len(value):
        tag, length = struct.unpack_from("<II", value, pos)
        if tag != 0xE000FFFE:
            break
        if not first:
            out += value[pos + 8 : pos + 8 + length]
        first, pos = False, pos + 8 + length
    return out


def _same_elements(got: Path, sent: Path) -> list[str]:
    a, b = pydicom.dcmread(got), pydicom.dcmread(sent)
    found = []
    for tag in sorted(set(a.keys()) | set(b.keys())):
        if tag not in a or tag not in b:
            found.append(f"{tag} only on one side")
        elif tag == 0x7FE00010 and b.file_meta.TransferSyntaxUID.is_encapsulated:
            if _fragments_stream(a[tag].value) != _fragments_stream(b[tag].value):
                found.append(f"{tag} stream differs")
        elif a[tag].value != b[tag].value:
            found.append(f"{tag} differs")
    return found


ALL_KINDS = ["raw", "jpeg", "video"]


async def test_dcmtk_storescp_receives_byte_identical(tmp_path: Path) -> None:
    items = _items(tmp_path, ALL_KINDS)
    peer = DcmtkStorescp(require_tool("storescp"), tmp_path / "storescp" / "out", free_port())
    peer.start()
    try:
        outcomes = await asyncio.to_thread(_send, peer.port, peer.ae_title, items)
        received = peer.received()
    finally:
        peer.stop()
    assert outcomes == ["sent"] * 3
    for item in items:
        assert dataset_bytes(received[item.sop_instance_uid]) == dataset_bytes(item.path)


async def test_orthanc_receives_byte_identical(tmp_path: Path) -> None:
    items = _items(tmp_path, ALL_KINDS)
    peer = OrthancPeer(require_tool("Orthanc"), tmp_path / "orthanc", free_port(), free_port())
    peer.start()
    try:
        outcomes = await asyncio.to_thread(_send, peer.dicom_port, "ORTHANC", items)
        received = peer.received()
    finally:
        peer.stop()
    assert outcomes == ["sent"] * 3
    for item in items:
        assert dataset_bytes_of(received[item.sop_instance_uid]) == dataset_bytes(item.path)


async def test_pynetdicom_storescp_app_receives_byte_identical(tmp_path: Path) -> None:
    items = _items(tmp_path, ["raw", "raw"])
    out, port = tmp_path / "pynetdicom", free_port()
    out.mkdir()
    command = [sys.executable, "-m", "pynetdicom", "storescp", str(port)]
    command += ["-aet", "PYSTORESCP", "-od", str(out)]
    with _process(command, port, tmp_path / "pynetdicom.log", None):
        outcomes = await asyncio.to_thread(_send, port, "PYSTORESCP", items)
    assert outcomes == ["sent"] * 2
    received = _by_uid(out)
    for item in items:
        assert dataset_bytes(received[item.sop_instance_uid]) == dataset_bytes(item.path)


async def test_dcmjs_dimse_scp_receives_every_element(tmp_path: Path) -> None:
    items = _items(tmp_path, ALL_KINDS)
    peer = node_peer(ROOT / "tests" / "peers" / "dcmjs-dimse")
    out, port = tmp_path / "dcmjs", free_port()
    out.mkdir()
    command = peer.command("storescp.js", str(port), str(out))
    with _process(command, port, tmp_path / "dcmjs.log", peer.env()):
        outcomes = await asyncio.to_thread(_send, port, "DCMJSSCP", items)
    assert outcomes == ["sent"] * 3, (tmp_path / "dcmjs.log").read_text()
    received = _by_uid(out)
    for item in items:
        assert _same_elements(received[item.sop_instance_uid], item.path) == [], item.key
