"""Storage peers for tests and benchmarks: a programmable in-process C-STORE SCP, DCMTK
`storescp` and Orthanc (DIMSE and DICOMweb)."""

from __future__ import annotations

import abc
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pydicom.dataset import Dataset
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import AE, evt

from . import wait_port
from .commitment_peers import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE, commitment_dataset
from .instances import SECONDARY_CAPTURE, VERIFICATION

StatusScript = Callable[[str, int], int | float]


class _ServerPeer(abc.ABC):
    """What the pynetdicom server peers below share: `start()` serves in this process's threads
    (`block=False`) and sets `_server`; a stop, and the with-block around both."""

    _server: Any

    @abc.abstractmethod
    def start(self, port: int = 0) -> int:
        """Serve on `port` (0: a free one) and return the port."""

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ScriptedScp(_ServerPeer):
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


@dataclass
class CommitmentScp(_ServerPeer):
    """A Storage Commitment Push Model SCP (PS3.4 J.3) on pynetdicom that answers every
    N-ACTION with 0000 and, unless `report` is False, sends its N-EVENT-REPORT on the same
    association right after: every referenced instance committed but those in `fail` (Failure
    Reason 0112, no such object instance). `requests` keeps each Action Information received.
    With `report_first` the report goes before the N-ACTION-RSP, from the N-ACTION handler
    itself (PS3.4 J.3.3 does not order them): the response follows once it was answered."""

    report: bool = True
    report_first: bool = False
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
        if self.report and self.report_first:
            self._send_report(event.assoc, info, after_s=0.0)
        elif self.report:
            threading.Thread(
                target=self._send_report, args=(event.assoc, info), daemon=True
            ).start()
        return 0x0000, None

    def _send_report(self, assoc: Any, info: Dataset, after_s: float = 0.2) -> None:
        # By default after the N-ACTION-RSP has gone out: the handler returns it first.
        time.sleep(after_s)
        refs = [
            (str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID))
            for r in info.ReferencedSOPSequence
        ]
        failed = [r for r in refs if r[1] in self.fail]
        committed = [r for r in refs if r[1] not in self.fail]
        report = commitment_dataset(str(info.TransactionUID), committed, failed)
        status = assoc.send_n_event_report(
            report, 2 if failed else 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
        answer = status[0] if status else None
        with self._lock:
            self.reports_answered.append(int(answer.Status) if answer else -1)


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
        wait_port(self.port, self.proc, "storescp")

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
        wait_port(self.dicom_port, self.proc, "Orthanc", 30)
        wait_port(self.http_port, self.proc, "Orthanc", 30)

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
