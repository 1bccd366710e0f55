"""A real Storage SCP (ScpApp.run) on a free port, plus instances made with pydicom/ffmpeg."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pydicom
import pytest
from cinebridge_common.embedded import free_port
from cinebridge_scp.app import ScpApp
from cinebridge_scp.receive import ReceiveConfig
from cinebridge_scp.settings import ScpSettings
from cinebridge_testkit import require_tool
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE, build_context

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
ECHO = "1.2.840.10008.1.1"


@dataclass
class RunningScp:
    app: ScpApp
    port: int
    ae_title: str
    media_root: Path
    pool: asyncpg.Pool
    settings: ScpSettings

    async def rows(self) -> dict[str, int]:
        row = await self.pool.fetchrow(
            """SELECT (SELECT count(*) FROM received_studies) AS studies,
                      (SELECT count(*) FROM received_series) AS series,
                      (SELECT count(*) FROM received_instances) AS instances,
                      (SELECT count(*) FROM outbox WHERE subject = 'cb.evt.instance.received')
                          AS events"""
        )
        assert row is not None
        return dict(row)

    def stored_files(self) -> list[Path]:
        return sorted(p for p in (self.media_root / "received").rglob("*") if p.is_file())

    def temp_files(self) -> list[Path]:
        """Partial files in the receive area (not the empty spares it makes ahead)."""
        # Listed before the spares are asked for: a spare made after the listing is not in it,
        # and one listed was made before, so it is among the spares unless a receive took it.
        files = [p for p in (self.media_root / ".tmp").rglob("*") if p.is_file()]
        spares = set(self.app.spares.ready()) if self.app.spares is not None else set()
        return sorted(p for p in files if p not in spares)

    def echo(self, timeout_s: float = 5.0) -> int:
        return pynetdicom_echo(self.port, self.ae_title, timeout_s)


def pynetdicom_echo(port: int, ae_title: str, timeout_s: float = 5.0) -> int:
    """C-ECHO with pynetdicom; returns the status (or -1 when not associated)."""
    ae = AE(ae_title="ECHOSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(ECHO)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return -1
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else -1
    finally:
        assoc.release()


def scp_settings(nats_url: str, media_root: Path, **extra: Any) -> ScpSettings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "media_root": media_root,
        "scp_port": free_port(),
        "health_port": 0,
        "instance_id": "scp-test",
        "heartbeat_interval_s": 1.0,
    }
    values.update(extra)
    return ScpSettings(**values)


async def start_scp(
    settings: ScpSettings, receive_config: Callable[[Path], ReceiveConfig] | None = None
) -> tuple[ScpApp, asyncio.Task[None]]:
    app = ScpApp(settings)
    if receive_config is not None:
        tmp = settings.media_root / ".tmp" / "scp-injected"
        tmp.mkdir(parents=True, exist_ok=True)
        app.receive_config = receive_config(tmp)
    task = asyncio.create_task(app.run())
    for _ in range(300):
        if app.listener is not None or task.done():
            break
        await asyncio.sleep(0.05)
    if task.done():
        task.result()
    assert app.listener is not None, "SCP did not start within 15 s"
    return app, task


async def stop_scp(app: ScpApp, task: asyncio.Task[None]) -> None:
    assert app.ctx is not None
    app.ctx.stop.set()
    await asyncio.wait_for(task, 20)


@pytest.fixture
def scp_factory(
    nats_url: str, database_url: str, tmp_path: Path, db_pool: asyncpg.Pool
) -> Callable[..., Any]:
    """`async with scp_factory(**settings) as scp:` a running SCP; stopped on exit."""

    class _Runner:
        def __init__(
            self, receive_config: Callable[[Path], ReceiveConfig] | None = None, **extra: Any
        ) -> None:
            extra.setdefault("database_url", database_url)
            self.settings = scp_settings(nats_url, media_root=tmp_path / "media", **extra)
            self.receive_config = receive_config

        async def __aenter__(self) -> RunningScp:
            self.app, self.task = await start_scp(self.settings, self.receive_config)
            return RunningScp(
                self.app,
                self.settings.scp_port,
                self.settings.scp_ae_title,
                self.settings.media_root,
                db_pool,
                self.settings,
            )

        async def __aexit__(self, *exc: object) -> None:
            await stop_scp(self.app, self.task)

    return _Runner


@pytest.fixture
async def scp(scp_factory: Callable[..., Any]) -> AsyncIterator[RunningScp]:
    async with scp_factory() as running:
        yield running


# ---------------------------------------------------------------- instances for the tests


def base_dataset(
    sop_class: str,
    *,
    study: str | None = None,
    series: str | None = None,
    patient: str = "Doe^Jane",
    patient_id: str = "PID-1",
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20261129"
    ds.StudyTime = "080000"
    ds.AccessionNumber = "ACC1"
    ds.StudyDescription = "Colonoscopy"
    ds.Modality = "ES"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    ds.save_as(
        path,
        enforce_file_format=True,
        implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
        little_endian=True,
    )
    return path


def make_ct(path: Path, *, size: int = 256, ts: str = ExplicitVRLittleEndian, **kw: Any) -> Path:
    ds = base_dataset(CT, **kw)
    ds.Modality = "CT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = os.urandom(size * size * 2)
    return save(ds, path, ts)


def ffmpeg(*args: str) -> None:
    exe = require_tool("ffmpeg")
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=60)


def make_jpeg_sc(path: Path, **kw: Any) -> Path:
    jpg = path.with_suffix(".jpg")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240", "-frames:v", "1", str(jpg))
    ds = base_dataset(SC, **kw)
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = 240, 320
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([jpg.read_bytes()])
    ds["PixelData"].VR = "OB"
    jpg.unlink()
    return save(ds, path, JPEGBaseline8Bit)


def make_video(path: Path, seconds: float = 1.0, **kw: Any) -> Path:
    """Video Endoscopic Image with an H.264 High@4.1 elementary stream (PS3.5 8.2.8)."""
    h264 = path.with_suffix(".h264")
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=640x480:rate=25:duration={seconds}",
        "-c:v",
        "libx264",
        "-profile:v",
        "high",
        "-level",
        "4.1",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "ultrafast",
        "-f",
        "h264",
        str(h264),
    )
    ds = base_dataset(VIDEO_ENDOSCOPIC, **kw)
    ds.Rows, ds.Columns = 480, 640
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = int(25 * seconds)
    ds.FrameTime = 40.0
    ds.CineRate = 25
    ds.PixelData = encapsulate([h264.read_bytes()], has_bot=False)
    ds["PixelData"].VR = "OB"
    h264.unlink()
    return save(ds, path, MPEG4HP41)


def dataset_bytes(path: Path) -> bytes:
    """The dataset part of a Part 10 file (everything after the file meta group)."""
    with open(path, "rb") as fh:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
        assert ds.file_meta is not None
    data = path.read_bytes()
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return data[meta_end:]


def pynetdicom_store(port: int, ae_title: str, paths: list[Path], **assoc_kw: Any) -> list[int]:
    """C-STORE each file with pynetdicom; returns the statuses (-1 = no response)."""
    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    datasets = [pydicom.dcmread(p) for p in paths]
    seen: dict[tuple[str, str], None] = {}
    for ds in datasets:
        seen[(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)] = None
    contexts = [build_context(sop, [ts]) for sop, ts in seen]
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title=ae_title, **assoc_kw)
    assert assoc.is_established, "association refused"
    statuses = []
    try:
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if rsp else -1)
    finally:
        assoc.release()
    return statuses


@pytest.fixture
def dicom() -> Any:
    """The instance makers and helpers above, for test modules (importlib mode: no imports)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        CT=CT,
        SC=SC,
        VIDEO_ENDOSCOPIC=VIDEO_ENDOSCOPIC,
        ECHO=ECHO,
        base_dataset=base_dataset,
        save=save,
        make_ct=make_ct,
        make_jpeg_sc=make_jpeg_sc,
        make_video=make_video,
        dataset_bytes=dataset_bytes,
        store=pynetdicom_store,
        echo=pynetdicom_echo,
        ffmpeg=ffmpeg,
    )


# ---------------------------------------------------------------- raw PDUs (PS3.8 section 9)


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU; `length` lets a test announce a length that lies."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def associate_rq(
    called: str = "CINEBRIDGE",
    calling: str = "RAWSCU",
    max_pdu: int = 16384,
    contexts: list[tuple[int, str, list[str]]] | None = None,
) -> bytes:
    contexts = contexts or [(1, ECHO, ["1.2.840.10008.1.2"]), (3, CT, ["1.2.840.10008.1.2.1"])]
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for cx_id, abstract, syntaxes in contexts:
        body = bytes([cx_id, 0, 0, 0]) + _item(0x30, abstract.encode())
        body += b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items += _item(0x20, body)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.3.4")
    items += _item(0x50, user)
    head = struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16)
    return pdu(0x01, head + bytes(32) + items)


def command_set(**elements: Any) -> bytes:
    """A DIMSE command set, Implicit VR Little Endian with group length (PS3.7 6.3.1)."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, ds)
    raw = body.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(raw)) + raw


def p_data(context_id: int, header: int, data: bytes, pdv_length: int | None = None) -> bytes:
    pdv_len = len(data) + 2 if pdv_length is None else pdv_length
    return pdu(0x04, struct.pack(">LBB", pdv_len, context_id, header) + data)


def echo_rq(context_id: int = 1, message_id: int = 1) -> bytes:
    cmd = command_set(
        AffectedSOPClassUID=ECHO,
        CommandField=0x0030,
        MessageID=message_id,
        CommandDataSetType=0x0101,
    )
    return p_data(context_id, 0x03, cmd)


def store_rq(sop_class: str, sop_instance: str, context_id: int = 3) -> bytes:
    cmd = command_set(
        AffectedSOPClassUID=sop_class,
        CommandField=0x0001,
        MessageID=7,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=sop_instance,
    )
    return p_data(context_id, 0x03, cmd)


class RawPeer:
    """A TCP peer that speaks raw bytes to the SCP."""

    def __init__(self, port: int, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_pdu(self) -> tuple[int, bytes] | None:
        """Next PDU (type, body), or None when the SCP closed the connection."""
        try:
            head = self._exact(6)
            if head is None:
                return None
            pdu_type, _, length = struct.unpack(">BBL", head)
            body = self._exact(length)
            return None if body is None else (pdu_type, body)
        except OSError:
            return None

    def _exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def closed_by_peer(self, timeout_s: float = 5.0) -> bool:
        """Drain until the SCP closes; True if it did within the timeout."""
        self.sock.settimeout(timeout_s)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except (TimeoutError, OSError):
            return False

    def associate(self, **kw: Any) -> tuple[int, bytes] | None:
        self.send(associate_rq(**kw))
        return self.read_pdu()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def raw() -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        pdu=pdu,
        associate_rq=associate_rq,
        command_set=command_set,
        p_data=p_data,
        echo_rq=echo_rq,
        store_rq=store_rq,
        Peer=RawPeer,
    )
