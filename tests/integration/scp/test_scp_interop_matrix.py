"""Interop matrix, storing side: every outside C-STORE SCU stores the same three instances into
the SCP (a CT in Implicit VR Little Endian, a JPEG Baseline still, an MPEG-4 AVC video), and
each arrives byte-identical (its data set as sent) and indexed once. dcmjs-dimse re-encodes
every data set it sends, so for it the data sets are compared element by element.

Peers: DCMTK storescu, GDCM gdcmscu, pynetdicom's storescu app, dcmjs-dimse (npm, pinned in
tests/peers/dcmjs-dimse/package.json). Orthanc's C-STORE into the SCP is
test_scp_interop.py::test_orthanc_rest_store; DCMTK echoscu is test_scp_interop.py::test_echoscu.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from cinebridge_testkit import require_tool
from cinebridge_testkit.dcmtk import STILLS_AND_VIDEO, storescu_profile
from cinebridge_testkit.nodepeer import node_peer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _storescu(port: int, ae: str, files: list[Path], tmp: Path) -> list[str]:
    config = storescu_profile(tmp / "storescu.cfg", "Matrix", STILLS_AND_VIDEO)
    exe = require_tool("storescu")
    return [exe, "-xf", str(config), "Matrix", "-aec", ae, "127.0.0.1", str(port), *map(str, files)]


def _gdcmscu(port: int, ae: str, files: list[Path], tmp: Path) -> list[str]:
    """gdcmscu takes one -i per run; Debian's 3.0.21 aborts ("ProtocolStream as nullptr is
    invalid") after the C-STORE is answered, whatever the SCP (DCMTK storescp too), so its exit
    status says nothing here: what arrived, byte for byte, is the verdict."""
    exe = require_tool("gdcmscu")
    script = "; ".join(
        f"{exe} --store --call {ae} --aetitle GDCMSCU -i {f} 127.0.0.1 {port}" for f in files
    )
    return ["/bin/sh", "-c", f"{{ {script}; }} || true"]


def _pynetdicom_app(port: int, ae: str, files: list[Path], tmp: Path) -> list[str]:
    # --required-contexts: one context per file with its own syntax (no conversion).
    return [
        sys.executable,
        "-m",
        "pynetdicom",
        "storescu",
        "127.0.0.1",
        str(port),
        *map(str, files),
        "-aec",
        ae,
        "--required-contexts",
    ]


def _dcmjs(port: int, ae: str, files: list[Path], tmp: Path) -> list[str]:
    peer = node_peer(ROOT / "tests" / "peers" / "dcmjs-dimse")
    return peer.command("storescu.js", "127.0.0.1", str(port), ae, *map(str, files))


def _env(name: str) -> dict[str, str] | None:
    if name == "dcmjs-dimse":
        return node_peer(ROOT / "tests" / "peers" / "dcmjs-dimse").env()
    return None


#: Peers that decode each file and encode it again before sending (dcmjs-dimse parses it with
#: dcmjs): the SCP cannot receive the file's own bytes, so the data sets are compared.
RE_ENCODING = {"dcmjs-dimse"}


def _fragments(value: bytes) -> list[bytes]:
    """The fragments of encapsulated Pixel Data without its Basic Offset Table (PS3.5 A.4)."""
    out, pos = [], 0
    while pos + 8 <= len(value):
        tag, length = struct.unpack_from("<II", value, pos)
        if tag != 0xE000FFFE:
            break
        out.append(value[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return out[1:]


def _differences(got: pydicom.Dataset, sent: pydicom.Dataset) -> list[str]:
    """Elements that differ; encapsulated Pixel Data by the stream its fragments hold: dcmjs
    re-fragments on the way (a filled Basic Offset Table and two fragments where the file has
    an empty table and the one fragment PS3.5 8.2.7 asks of MPEG-4 AVC video)."""
    found = []
    for tag in sorted(set(got.keys()) | set(sent.keys())):
        if tag not in got or tag not in sent:
            found.append(f"{tag} only on one side")
        elif tag == 0x7FE00010 and sent.file_meta.TransferSyntaxUID.is_encapsulated:
            if b"".join(_fragments(got[tag].value)) != b"".join(_fragments(sent[tag].value)):
                found.append(f"{tag} stream differs")
        elif got[tag].value != sent[tag].value:
            found.append(f"{tag} {sent[tag]!r:.80} -> {got[tag]!r:.80}")
    return found


SENDERS = {
    "dcmtk-storescu": _storescu,
    "gdcm-gdcmscu": _gdcmscu,
    "pynetdicom-storescu": _pynetdicom_app,
    "dcmjs-dimse": _dcmjs,
}


@pytest.mark.parametrize("name", sorted(SENDERS))
async def test_peer_stores_three_instances_byte_identical(
    scp: Any, dicom: Any, tmp_path: Path, name: str
) -> None:
    files = [
        dicom.make_ct(tmp_path / "ct.dcm", size=64, ts="1.2.840.10008.1.2"),
        dicom.make_jpeg_sc(tmp_path / "sc.dcm"),
        dicom.make_video(tmp_path / "video.dcm", seconds=0.5),
    ]
    command = SENDERS[name](scp.port, scp.ae_title, files, tmp_path)
    proc = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=180, env=_env(name)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = scp.stored_files()
    assert len(stored) == 3, (stored, proc.stdout, proc.stderr)
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in stored}
    for sent in files:
        uid = str(pydicom.dcmread(sent, stop_before_pixels=True).SOPInstanceUID)
        assert uid in by_uid, f"{sent.name} did not arrive"
        if name in RE_ENCODING:
            assert _differences(pydicom.dcmread(by_uid[uid]), pydicom.dcmread(sent)) == []
        else:
            assert dicom.dataset_bytes(by_uid[uid]) == dicom.dataset_bytes(sent), sent.name
    rows = await scp.rows()
    assert rows["instances"] == 3 and rows["events"] == 3
