"""Test and benchmark helpers: sample Part 10 instances and a programmable in-process C-STORE SCP.

Used by the sender's unit and integration tests and by `bench/send.py`; the service never
imports it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VERIFICATION = "1.2.840.10008.1.1"


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
        ds.PixelData = bytes((i * 7 + seed) % 256 for i in range(256)) * (
            side * side // 256
        ) + bytes(side * side % 256)
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


def write_large_video(path: Path, size: int) -> None:
    """A Part 10 MPEG-4 AVC instance with `size` bytes of opaque stream, written in 1 MB pieces
    (the generator never holds the video in memory): the multi-GB case of the sender's tests
    and benchmark."""
    make_instance(path, kind="video", payload_bytes=2)
    data = path.read_bytes()
    cut = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data, the last element
    size += size % 2
    with open(path, "wb") as fh:
        fh.write(data[:cut])
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")  # OB, undefined length
        fh.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", 0))  # empty Basic Offset Table
        fh.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", size))  # one fragment
        block = bytes(range(256)) * 4096
        left = size
        while left:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
        fh.write(b"\xfe\xff\xdd\xe0" + struct.pack("<I", 0))  # sequence delimiter


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
        default_factory=lambda: [
            ImplicitVRLittleEndian,
            ExplicitVRLittleEndian,
            JPEGBaseline8Bit,
            MPEG4HP41,
        ]
    )
    reject: str | None = None
    ae_title: str = "SCRIPTED"
    #: TLS server context (PS3.15 B.1): the SCP then speaks DICOM over TLS only.
    tls: Any = None
    received: dict[str, bytes] = field(default_factory=dict)
    received_ts: dict[str, str] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    associations: int = 0
    #: How associations ended: A-RELEASE or A-ABORT (PS3.8 7.2, 7.3) from the requestor.
    released: int = 0
    aborted: int = 0
    port: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> int:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0
        ae.add_supported_context(VERIFICATION)
        ae.add_supported_context(SECONDARY_CAPTURE, self.transfer_syntaxes)
        if self.reject == "permanent":  # (1, 1, 3): calling AE title not recognised
            ae.require_calling_aet = ["NOBODY-AT-ALL"]
        elif self.reject == "transient":  # (2, 3, 2): local limit exceeded
            ae._maximum_associations = 0  # the public setter refuses values below 1
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda _e: 0x0000),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, lambda _e: self._count("released")),
            (evt.EVT_ABORTED, lambda _e: self._count("aborted")),
        ]
        self._server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=handlers, ssl_context=self.tls
        )
        self.port = int(self._server.server_address[1])
        return self.port

    def _on_established(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def wait_ended(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until `count` associations ended (released or aborted): the SCP learns of an
        ending after the requestor has moved on."""
        deadline = time.monotonic() + timeout_s
        while self.released + self.aborted < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.released + self.aborted} of {count} associations ended")
            time.sleep(0.02)

    def _count(self, ending: str) -> None:
        with self._lock:
            setattr(self, ending, getattr(self, ending) + 1)

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


STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


@dataclass
class CommitmentScp:
    """A Storage Commitment Push Model SCP (PS3.4 J.3) on pynetdicom that answers every
    N-ACTION with 0000 and, unless `report` is False, sends its N-EVENT-REPORT on the same
    association right after: every referenced instance committed but those in `fail` (Failure
    Reason 0112, no such object instance). `requests` keeps each Action Information received."""

    report: bool = True
    fail: set[str] = field(default_factory=set)
    ae_title: str = "COMMIT"
    requests: list[Dataset] = field(default_factory=list)
    reports_answered: list[int] = field(default_factory=list)
    port: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> int:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(VERIFICATION)
        ae.add_supported_context(
            STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        # An archive: it stores what the sender sends (the stills' syntaxes), then commits.
        ae.add_supported_context(
            SECONDARY_CAPTURE, [ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit]
        )
        handlers: list[Any] = [
            (evt.EVT_N_ACTION, self._on_action),
            (evt.EVT_C_STORE, lambda _e: 0x0000),
        ]
        self._server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self.port

    def _on_action(self, event: Any) -> tuple[int, None]:
        info = event.action_information
        with self._lock:
            self.requests.append(info)
        if self.report:
            threading.Thread(
                target=self._send_report, args=(event.assoc, info), daemon=True
            ).start()
        return 0x0000, None

    def _send_report(self, assoc: Any, info: Dataset) -> None:
        # After the N-ACTION-RSP has gone out (PS3.4 J.3.3): the handler returns it first.
        time.sleep(0.2)
        report = Dataset()
        report.TransactionUID = info.TransactionUID
        ok, failed = [], []
        for ref in info.ReferencedSOPSequence:
            item = Dataset()
            item.ReferencedSOPClassUID = ref.ReferencedSOPClassUID
            item.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID
            if str(ref.ReferencedSOPInstanceUID) in self.fail:
                item.FailureReason = 0x0112
                failed.append(item)
            else:
                ok.append(item)
        if ok:
            report.ReferencedSOPSequence = ok
        if failed:
            report.FailedSOPSequence = failed
        status = assoc.send_n_event_report(
            report, 2 if failed else 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
        answer = status[0] if status else None
        with self._lock:
            self.reports_answered.append(int(answer.Status) if answer else -1)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> CommitmentScp:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def instances(root: Path, count: int, **kwargs: Any) -> Iterator[tuple[Path, Dataset]]:
    for n in range(count):
        path = root / f"i{n:05d}.dcm"
        yield path, make_instance(path, seed=n, **kwargs)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"peer not listening on {port} after {timeout_s} s")


@dataclass
class DcmtkStorescp:
    """DCMTK `storescp` writing what it receives to `out_dir` (TCP_NODELAY on, docs/peers.md)."""

    binary: str
    out_dir: Path
    port: int
    ae_title: str = "STORESCP"
    extra_args: tuple[str, ...] = ()
    #: +xa: accept every transfer syntax it knows (JPEG, MPEG-2/4 included), no conversion;
    #: without it storescp accepts the uncompressed syntaxes only.
    accept_compressed: bool = True
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TCP_NODELAY": "1"}
        args = [
            self.binary,
            "-od",
            str(self.out_dir),
            "-aet",
            self.ae_title,
            *(["+xa"] if self.accept_compressed else []),
            *self.extra_args,
            str(self.port),
        ]
        log = open(self.out_dir.parent / f"storescp-{self.port}.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        _wait_port(self.port, self.proc)

    def received(self) -> dict[str, Path]:
        """SOP Instance UID -> received file (storescp names files `<modality>.<uid>`)."""
        return {p.name.split(".", 1)[1]: p for p in self.out_dir.iterdir() if p.is_file()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


#: Where Debian's `orthanc-dicomweb` puts the DICOMweb plugin.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def dicomweb_plugin() -> Path:
    """The Orthanc DICOMweb plugin (Debian `orthanc-dicomweb`, .ci/packages.txt); a missing one
    fails the test that needs it."""
    if not DICOMWEB_PLUGIN.is_file():
        raise FileNotFoundError(f"{DICOMWEB_PLUGIN} missing: install orthanc-dicomweb")
    return DICOMWEB_PLUGIN


@dataclass
class OrthancPeer:
    """An Orthanc with its own storage, DICOM on `dicom_port`, REST on `http_port` (loopback).
    With `dicomweb`, its DICOMweb plugin serves STOW-RS/QIDO-RS under `/dicom-web`; with `users`,
    HTTP basic authentication guards REST and DICOMweb alike."""

    binary: str
    work_dir: Path
    dicom_port: int
    http_port: int
    ae_title: str = "ORTHANC"
    dicomweb: bool = False
    users: dict[str, str] = field(default_factory=dict)
    #: Orthanc's DicomModalities: name -> [AE title, host, port]. A Storage Commitment
    #: requester must be listed: Orthanc sends its report to the AE it knows by that title.
    modalities: dict[str, list[Any]] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": "cinebridge-test",
            "StorageDirectory": str(self.work_dir / "db"),
            "IndexDirectory": str(self.work_dir / "db"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "HttpBindAddress": "127.0.0.1",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [str(dicomweb_plugin())] if self.dicomweb else [],
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
        }
        if self.dicomweb:
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        path = self.work_dir / "orthanc.json"
        path.write_text(json.dumps(config))
        log = open(self.work_dir / "orthanc.log", "ab")
        self.proc = subprocess.Popen([self.binary, str(path)], stdout=log, stderr=log)
        _wait_port(self.dicom_port, self.proc, 30)
        _wait_port(self.http_port, self.proc, 30)

    def _request(self, path: str, data: bytes | None = None) -> urllib.request.Request:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data)
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def _open(self, path: str, data: bytes | None = None) -> Any:
        return urllib.request.urlopen(self._request(path, data), timeout=60)  # noqa: S310

    def _get(self, path: str) -> bytes:
        with self._open(path) as response:
            body: bytes = response.read()
            return body

    def _post(self, path: str, data: bytes) -> bytes:
        with self._open(path, data) as response:
            body: bytes = response.read()
            return body

    def clear(self) -> None:
        """Delete every stored patient (and with them every instance): a benchmark's next run
        stores again instead of finding each SOP Instance UID already there."""
        for patient in json.loads(self._get("/patients")):
            request = self._request(f"/patients/{patient}")
            request.method = "DELETE"
            with urllib.request.urlopen(request, timeout=60):  # noqa: S310 - loopback http
                pass

    def delete_instance(self, sop_instance_uid: str) -> None:
        """Remove one stored instance over REST (a commitment request then lists it failed)."""
        found = json.loads(self._post("/tools/lookup", sop_instance_uid.encode()).decode() or "[]")
        orthanc_id = next(f["ID"] for f in found if f["Type"] == "Instance")
        request = self._request(f"/instances/{orthanc_id}")
        request.method = "DELETE"
        with urllib.request.urlopen(request, timeout=60):  # noqa: S310 - loopback http
            pass

    def instance_count(self) -> int:
        return len(json.loads(self._get("/instances")))

    def file_digest(self, sop_instance_uid: str) -> tuple[int, str]:
        """(size, SHA-256) of one stored file, read over REST in pieces (for multi-GB files)."""
        found = json.loads(self._post("/tools/lookup", sop_instance_uid.encode()).decode() or "[]")
        orthanc_id = next(f["ID"] for f in found if f["Type"] == "Instance")
        digest = hashlib.sha256()
        size = 0
        with self._open(f"/instances/{orthanc_id}/file") as response:
            while block := response.read(1 << 20):
                digest.update(block)
                size += len(block)
        return size, digest.hexdigest()

    def received(self) -> dict[str, bytes]:
        """SOP Instance UID -> the stored Part 10 file, fetched over REST."""
        out = {}
        for orthanc_id in json.loads(self._get("/instances")):
            tags = json.loads(self._get(f"/instances/{orthanc_id}/simplified-tags"))
            out[tags["SOPInstanceUID"]] = self._get(f"/instances/{orthanc_id}/file")
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def dataset_bytes_of(part10: bytes) -> bytes:
    """The data set part of a Part 10 file held in memory."""
    with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
        fh.write(part10)
        fh.flush()
        return dataset_bytes(Path(fh.name))


class StallingProxy:
    """A TCP relay to `target_port` that, on its first `stall_connections` connections, stops
    relaying after `stall_after` bytes from the client while keeping the socket open: a PACS
    that hangs mid-transfer."""

    def __init__(self, target_port: int, stall_after: int, stall_connections: int = 1) -> None:
        self.target_port = target_port
        self.stall_after = stall_after
        self.stall_connections = stall_connections
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            stall = self.connections <= self.stall_connections
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._open += [client, upstream]
            limit = self.stall_after if stall else None
            threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    threading.Event().wait()  # hang: read nothing more, close nothing
                dst.sendall(data)
                sent += len(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self._open:
            # shutdown, not just close: a close() does not wake a recv() blocked in another
            # thread nor send the FIN, so the PACS behind us would wait on its socket forever
            # and keep the test process from exiting.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TlsRelay:
    """An https front for a plain-http peer on loopback (Debian's Orthanc 1.10 with `SslEnabled`
    logs that it listens but accepts no connection, docs/peers.md): TLS with `cert`/`key` on
    `port`, relayed to `target_port`."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()  # a client that refused our certificate
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self._open += [client, upstream]
        threading.Thread(
            target=StallingProxy._pipe, args=(upstream, client, None), daemon=True
        ).start()
        StallingProxy._pipe(client, upstream, None)

    def close(self) -> None:
        self.listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
