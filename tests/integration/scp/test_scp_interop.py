"""Interop with outside peers: DCMTK echoscu/storescu, Orthanc, pynetdicom proposing everything."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pydicom
from cinebridge_common.conformance import SCP_TRANSFER_SYNTAXES, STORAGE_SOP_CLASSES
from cinebridge_common.embedded import free_port
from cinebridge_testkit import require_tool, wait_for
from cinebridge_testkit.dcmtk import STILLS_AND_VIDEO, storescu_profile
from pynetdicom import AE, build_context


async def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool off the event loop (the SCP under test indexes on this loop)."""
    exe = require_tool(tool)
    return await asyncio.to_thread(
        subprocess.run,
        [exe, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )


async def test_echoscu(scp: Any) -> None:
    result = await dcmtk("echoscu", "-aec", scp.ae_title, "127.0.0.1", str(scp.port))
    assert result.returncode == 0, result.stderr
    assert await asyncio.to_thread(scp.echo) == 0


async def test_storescu_folder_of_classes_and_syntaxes(
    scp: Any, dicom: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    study = pydicom.uid.generate_uid()
    made = [
        dicom.make_ct(folder / "ct1.dcm", study=study),
        dicom.make_ct(folder / "ct2.dcm", study=study, ts=pydicom.uid.ImplicitVRLittleEndian),
        dicom.make_jpeg_sc(folder / "sc.dcm", study=study),
        dicom.make_video(folder / "video.dcm", study=study),
    ]
    contexts = [("CTImageStorage", "LittleEndianExplicit"), *STILLS_AND_VIDEO]
    config = storescu_profile(tmp_path / "storescu.cfg", "Folder", contexts)
    result = await dcmtk(
        "storescu",
        "-aec",
        scp.ae_title,
        "-xf",
        str(config),
        "Folder",
        "+sd",
        "+r",
        "127.0.0.1",
        str(scp.port),
        str(folder),
    )
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
        assert (
            pydicom.dcmread(copy, stop_before_pixels=True).file_meta.TransferSyntaxUID
            == ds.file_meta.TransferSyntaxUID
        )
        row = await scp.pool.fetchrow(
            "SELECT * FROM received_instances WHERE sop_instance_uid = $1", ds.SOPInstanceUID
        )
        assert row["size"] == copy.stat().st_size and row["calling_ae"] == "STORESCU"
    assert scp.temp_files() == []


def _orthanc_config(tmp: Path, http_port: int, dicom_port: int, scp: Any) -> Path:
    config = {
        "Name": "cb-test",
        "StorageDirectory": str(tmp / "db"),
        "IndexDirectory": str(tmp / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": {"cb": [scp.ae_title, "127.0.0.1", scp.port]},
        "Plugins": [],
        "StableAge": 1,
        "HttpTimeout": 30,
        "DicomScuTimeout": 30,
    }
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config))
    return path


async def test_orthanc_rest_store(scp: Any, dicom: Any, tmp_path: Path) -> None:
    orthanc = require_tool("Orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = _orthanc_config(tmp_path, http_port, dicom_port, scp)
    proc = subprocess.Popen(
        [orthanc, str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"TCP_NODELAY": "1"},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/system")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, 30, what="Orthanc HTTP")
            made = [dicom.make_ct(tmp_path / "o1.dcm"), dicom.make_jpeg_sc(tmp_path / "o2.dcm")]
            ids = []
            for path in made:
                reply = await http.post("/instances", content=path.read_bytes())
                assert reply.status_code == 200, reply.text
                ids.append(reply.json()["ID"])
            reply = await http.post(
                "/modalities/cb/store", json={"Resources": ids, "Synchronous": True}
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["FailedInstancesCount"] == 0
    finally:
        proc.terminate()
        proc.wait(10)
    rows = await scp.rows()
    assert rows["instances"] == 2
    calling = await scp.pool.fetchval("SELECT DISTINCT calling_ae FROM received_instances")
    assert calling == "ORTHANC"
    for path in made:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        sha = await scp.pool.fetchval(
            "SELECT sha256 FROM received_instances WHERE sop_instance_uid = $1", uid
        )
        assert sha is not None


def _propose_all(port: int, ae_title: str) -> tuple[int, list[str]]:
    """Every (Table 22 class, Table 23 syntax) pair in its own context, 128 per association."""
    pairs = [(sop, ts) for _, sop in STORAGE_SOP_CLASSES for _, ts in SCP_TRANSFER_SYNTAXES]
    accepted = 0
    refused: list[str] = []
    for start in range(0, len(pairs), 128):
        ae = AE(ae_title="PROPOSEALL")
        ae.acse_timeout = ae.network_timeout = 30
        contexts = [build_context(sop, ts) for sop, ts in pairs[start : start + 128]]
        assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title=ae_title)
        assert assoc.is_established
        for cx in assoc.accepted_contexts:
            assert cx.transfer_syntax[0] == pairs[start + (int(cx.context_id) - 1) // 2][1]
        accepted += len(assoc.accepted_contexts)
        refused += [f"{cx.abstract_syntax}/{cx.transfer_syntax}" for cx in assoc.rejected_contexts]
        assoc.release()
    return accepted, refused


async def test_every_table22_class_with_every_table23_syntax(scp: Any) -> None:
    accepted, refused = await asyncio.to_thread(_propose_all, scp.port, scp.ae_title)
    assert refused == []
    assert accepted == len(STORAGE_SOP_CLASSES) * len(SCP_TRANSFER_SYNTAXES)


def _propose_outside_tables(port: int, ae_title: str) -> dict[str, int]:
    ae = AE(ae_title="OUTSIDE")
    contexts = [
        build_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.201"),  # HTJ2K: not T23
        build_context("1.2.840.10008.5.1.4.1.1.999", "1.2.840.10008.1.2.1"),  # not in T22
        build_context(
            "1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.50"]
        ),  # peer order
    ]
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title=ae_title)
    assert assoc.is_established
    try:
        result = {f"{cx.context_id}": int(cx.result) for cx in assoc.rejected_contexts}
        result.update(
            {f"{cx.context_id}:{cx.transfer_syntax[0]}": 0 for cx in assoc.accepted_contexts}
        )
        return result
    finally:
        assoc.release()


async def test_outside_tables_refused_and_peer_order_kept(scp: Any) -> None:
    result = await asyncio.to_thread(_propose_outside_tables, scp.port, scp.ae_title)
    # PS3.8 Table 9-18: 4 = transfer syntaxes not supported, 3 = abstract syntax not supported.
    assert result == {"1": 4, "3": 3, "5:1.2.840.10008.1.2.4.50": 0}
