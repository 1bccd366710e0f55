"""Interop with outside peers: DCMTK echoscu/storescu, Orthanc, pynetdicom proposing everything."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pydicom

from cinebridge_common.testing import require_tool


#: storescu proposes only uncompressed syntaxes unless told; this profile proposes each
#: instance's own syntax so nothing is converted on the way (byte-identical check below).
STORESCU_CONFIG = """
[[TransferSyntaxes]]
[Explicit]
TransferSyntax1 = LittleEndianExplicit
[Implicit]
TransferSyntax1 = LittleEndianImplicit
[JPEGBaseline]
TransferSyntax1 = JPEGBaseline
[MPEG4]
TransferSyntax1 = MPEG4HighProfile/Level4.1
[[PresentationContexts]]
[Folder]
PresentationContext1 = CTImageStorage\\Explicit
PresentationContext2 = CTImageStorage\\Implicit
PresentationContext3 = SecondaryCaptureImageStorage\\JPEGBaseline
PresentationContext4 = VideoEndoscopicImageStorage\\MPEG4
[[Profiles]]
[Folder]
PresentationContexts = Folder
"""


async def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool off the event loop (the SCP under test indexes on this loop)."""
    exe = require_tool(tool)
    return await asyncio.to_thread(
        subprocess.run, [exe, *args], capture_output=True, text=True, timeout=timeout,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )


async def test_echoscu(scp: Any) -> None:
    result = await dcmtk("echoscu", "-aec", scp.ae_title, "127.0.0.1", str(scp.port))
    assert result.returncode == 0, result.stderr
    assert await asyncio.to_thread(scp.echo) == 0


async def test_storescu_folder_of_classes_and_syntaxes(scp: Any, dicom: Any, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    study = pydicom.uid.generate_uid()
    made = [
        dicom.make_ct(folder / "ct1.dcm", study=study),
        dicom.make_ct(folder / "ct2.dcm", study=study, ts=pydicom.uid.ImplicitVRLittleEndian),
        dicom.make_jpeg_sc(folder / "sc.dcm", study=study),
        dicom.make_video(folder / "video.dcm", study=study),
    ]
    config = tmp_path / "storescu.cfg"
    config.write_text(STORESCU_CONFIG)
    result = await dcmtk("storescu", "-aec", scp.ae_title, "-xf", str(config), "Folder",
                         "+sd", "+r", "127.0.0.1", str(scp.port), str(folder))
    assert result.returncode == 0, result.stderr + result.stdout
    rows = await scp.rows()
    assert rows["instances"] == len(made) and rows["events"] == len(made)
    assert rows["studies"] == 1
    stored = scp.stored_files()
    assert len(stored) == len(made)
    by_uid = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in stored}
    for original in made:
        ds = pydicom.dcmread(original, stop_before_pixels=True)
        copy = by_uid[ds.SOPInstanceUID]
        assert dicom.dataset_bytes(copy) == dicom.dataset_bytes(original), original.name
        assert (pydicom.dcmread(copy, stop_before_pixels=True).file_meta.TransferSyntaxUID
                == ds.file_meta.TransferSyntaxUID)
        row = await scp.pool.fetchrow(
            "SELECT * FROM received_instances WHERE sop_instance_uid = $1", ds.SOPInstanceUID)
        assert row["size"] == copy.stat().st_size and row["calling_ae"] == "STORESCU"
    assert scp.temp_files() == []
