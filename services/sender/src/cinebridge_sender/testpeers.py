"""Test and benchmark helpers: sample Part 10 instances and a programmable in-process C-STORE SCP.

Used by the sender's unit and integration tests and by `bench/send.py`; the service never
imports it.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MPEG4HP41,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    from PIL import Image  # only tests and the benchmark make JPEGs

    img = Image.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, 128))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_instance(
    path: Path,
    *,
    kind: str = "jpeg",
    study_uid: str | None = None,
    sop_instance_uid: str | None = None,
    payload_bytes: int = 0,
    seed: int = 0,
) -> Dataset:
    """Write a Secondary Capture Part 10 file: `jpeg` (JPEG Baseline still), `raw` (Explicit VR
    LE, `payload_bytes` of 8-bit grey pixels) or `video` (MPEG-4 AVC, `payload_bytes` of opaque
    stream bytes: nothing here decodes it). Returns the dataset (pixel data included)."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Sender"
    ds.PatientID = "SENDER-1"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = seed + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if kind == "jpeg":
        ts = JPEGBaseline8Bit
        ds.Rows, ds.Columns = 48, 64
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.PixelData = encapsulate([jpeg_bytes(seed=seed)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    elif kind == "raw":
        ts = ExplicitVRLittleEndian
        side = max(2, int((payload_bytes or 4096) ** 0.5))
        side += side % 2
        ds.Rows = ds.Columns = side
        ds.PixelData = bytes((i * 7 + seed) % 256 for i in range(256)) * (side * side // 256) + bytes(
            side * side % 256
        )
    elif kind == "video":
        ts = MPEG4HP41
        ds.Rows, ds.Columns = 1080, 1920
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_PARTIAL_420"
        ds.PlanarConfiguration = 0
        ds.NumberOfFrames = 1
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 33.3
        size = payload_bytes or 65536
        size += size % 2
        ds.PixelData = encapsulate([(bytes(range(256)) * (size // 256 + 1))[:size]], has_bot=False)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        raise ValueError(f"unknown kind {kind!r}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def dataset_bytes(path: Path) -> bytes:
    """The data set part of a Part 10 file (after the file meta): what crosses the wire."""
    _, offset = split_dataset(path)
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()


StatusScript = Callable[[str, int], int | float]


@dataclass
class ScriptedScp:
    """A Storage SCP whose answers are scripted: `script(sop_uid, nth_time_seen)` returns a
    status code, or a float meaning "hang that many seconds, then answer 0000". `reject`
    ("permanent" | "transient") makes it refuse every association (PS3.8 7.1.1.9). Accepts the given
    transfer syntaxes only (default: ILE, Explicit LE, JPEG Baseline, MPEG-4)."""

    script: StatusScript = field(default=lambda _uid, _n: 0x0000)
    transfer_syntaxes: list[str] = field(
        default_factory=lambda: [ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit,
                                 MPEG4HP41]
    )
    reject: str | None = None
    ae_title: str = "SCRIPTED"
    received: dict[str, bytes] = field(default_factory=dict)
    received_ts: dict[str, str] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    associations: int = 0
    port: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> int:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0
        ae.add_supported_context(Verification)
        ae.add_supported_context(SECONDARY_CAPTURE, self.transfer_syntaxes)
        if self.reject == "permanent":  # (1, 1, 3): calling AE title not recognised
            ae.require_calling_aet = ["NOBODY-AT-ALL"]
        elif self.reject == "transient":  # (2, 3, 2): local limit exceeded
            ae._maximum_associations = 0  # the public setter refuses values below 1
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda _e: 0x0000),
                    (evt.EVT_ESTABLISHED, self._on_established)]
        self._server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self.port

    def _on_established(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            n = self.seen.get(uid, 0) + 1
            self.seen[uid] = n
        answer = self.script(uid, n)
        if isinstance(answer, float):
            time.sleep(answer)
            answer = 0x0000
        if answer in (0x0000, 0xB000, 0xB006, 0xB007):
            with self._lock:
                self.received[uid] = event.request.DataSet.getvalue()
                self.received_ts[uid] = str(event.context.transfer_syntax)
        return int(answer)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> ScriptedScp:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def instances(root: Path, count: int, **kwargs: Any) -> Iterator[tuple[Path, Dataset]]:
    for n in range(count):
        path = root / f"i{n:05d}.dcm"
        yield path, make_instance(path, seed=n, **kwargs)
