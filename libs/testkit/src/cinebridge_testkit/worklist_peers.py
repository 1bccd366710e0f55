"""Test and benchmark peers: a programmable in-process worklist SCP, an in-process MPPS SCP,
`wlmscpfs`, Orthanc, and a service run as a process of its own (to be killed mid-work).

Used by the worklist's unit and integration tests and by `bench/worklist.py`; the service
never imports it.
"""

from __future__ import annotations

import abc
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from cinebridge_common.embedded import free_port
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from . import wait_port

#: Modality Worklist Information Model - FIND (PS3.4 K.6.1.2) and Verification (PS3.4 A.4).
ModalityWorklistInformationFind = UID("1.2.840.10008.5.1.4.31")
Verification = UID("1.2.840.10008.1.1")
#: The uncompressed syntaxes a worklist SCU proposes (PS3.5 A.1, A.2, A.3).
TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
#: Modality Performed Procedure Step SOP Class (PS3.4 F.7.1), taken from the standard rather than
#: from the code under test, and the syntaxes the peer accepts for it.
MPPS_SOP_CLASS = UID("1.2.840.10008.3.1.2.3.3")
MPPS_TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")


@dataclass(frozen=True)
class WorklistPeer:
    """Where an outside worklist server listens, and which called AE title reaches it."""

    name: str
    port: int
    called_ae: str


@dataclass
class _InProcessScp(abc.ABC):
    """A pynetdicom SCP in this process's threads (`block=False`): one start, one stop."""

    port: int = 0
    _server: Any = None

    def _serve(
        self, ae_title: str, contexts: Sequence[tuple[str, list[str]]], handlers: Any
    ) -> None:
        ae = AE(ae_title=ae_title)
        for sop_class, syntaxes in contexts:
            ae.add_supported_context(sop_class, syntaxes)
        ae.add_supported_context(Verification)
        ae.network_timeout = 30
        self._configure(ae)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.socket.getsockname()[1])

    def _configure(self, ae: AE) -> None:  # noqa: B027 (an optional hook, not abstract)
        """What a peer sets on its AE beyond the contexts."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Serve the peer's contexts with its handlers (each peer knows its own)."""

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class FakeRis(_InProcessScp):
    """An in-process Modality Worklist SCP whose answers and faults the test decides.

    `entries()` is called per query and may be a lazy generator (100,000 matches without
    100,000 datasets in memory). Faults: `abort_after` entries, `sleep_after` entries for
    `sleep_s`, a `final_status` other than success. The SCP honours C-CANCEL (PS3.4 C.4.1.3.2)
    and counts what it sent.
    """

    entries: Callable[[], Iterable[Dataset]] = lambda: ()
    transfer_syntaxes: list[str] = field(default_factory=lambda: list(TRANSFER_SYNTAXES))
    abort_after: int | None = None
    sleep_after: int | None = None
    sleep_s: float = 0.0
    final_status: int | None = None
    #: Only these calling AE titles are accepted (others: A-ASSOCIATE-RJ, PS3.8 9.3.4).
    allowed_calling: list[str] = field(default_factory=list)
    requests: list[Dataset] = field(default_factory=list)
    sent: int = 0
    cancelled: bool = False

    def _handle_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.requests.append(event.identifier)
        for index, entry in enumerate(self.entries()):
            if self.abort_after is not None and index >= self.abort_after:
                event.assoc.abort()
                return
            if self.sleep_after is not None and index == self.sleep_after:
                time.sleep(self.sleep_s)
            if event.is_cancelled:
                self.cancelled = True
                yield 0xFE00, None
                return
            self.sent += 1
            yield 0xFF00, entry
        if self.final_status is not None:
            yield self.final_status, None

    def _configure(self, ae: AE) -> None:
        ae.require_calling_aet = self.allowed_calling

    def start(self) -> Self:
        find = ModalityWorklistInformationFind
        contexts = [(find, list(self.transfer_syntaxes))] if self.transfer_syntaxes else []
        self._serve("FAKERIS", contexts, [(evt.EVT_C_FIND, self._handle_find)])
        return self


@dataclass
class MppsRequest:
    """One N-CREATE or N-SET the MPPS SCP received, and the status it answered."""

    operation: str  # "N-CREATE" or "N-SET"
    sop_instance_uid: str
    dataset: Dataset
    status: int


@dataclass
class FakeMpps(_InProcessScp):
    """An in-process Modality Performed Procedure Step SCP (PS3.4 F.7.2.1, F.7.2.2) that
    records every request. It keeps each step like a RIS would: N-CREATE of a known instance
    answers 0111, N-SET of an unknown one 0112, N-SET of a step already COMPLETED or
    DISCONTINUED 0110 with Error ID A710. `statuses` answers the next requests with the given
    codes instead (then success again), as a failing or refusing RIS would.
    """

    statuses: list[int] = field(default_factory=list)
    requests: list[MppsRequest] = field(default_factory=list)
    steps: dict[str, Dataset] = field(default_factory=dict)

    def _answer(self, operation: str, uid: str, ds: Dataset) -> int:
        if self.statuses:
            status = self.statuses.pop(0)
        elif operation == "N-CREATE":
            status = 0x0111 if uid in self.steps else 0x0000
        elif uid not in self.steps:
            status = 0x0112
        elif self.steps[uid].PerformedProcedureStepStatus != "IN PROGRESS":
            status = 0x0110
        else:
            status = 0x0000
        self.requests.append(MppsRequest(operation, uid, ds, status))
        return status

    def _handle_create(self, event: Any) -> tuple[Any, Dataset | None]:
        uid = str(event.request.AffectedSOPInstanceUID)
        ds = event.attribute_list
        status = self._answer("N-CREATE", uid, ds)
        if status == 0x0000:
            self.steps[uid] = copy.deepcopy(ds)  # the request stays as it was received
        return status, (ds if status == 0x0000 else None)

    def _handle_set(self, event: Any) -> tuple[Any, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID)
        ds = event.modification_list
        status = self._answer("N-SET", uid, ds)
        if status == 0x0110 and not self.statuses and uid in self.steps:
            answer = Dataset()
            answer.Status = 0x0110
            answer.ErrorID = 0xA710  # PS3.4 F.7.2.2.2: may no longer be updated
            return answer, None
        if status == 0x0000:
            self.steps[uid].update(ds)
        return status, (self.steps[uid] if status == 0x0000 else None)

    def start(self) -> Self:
        handlers = [(evt.EVT_N_CREATE, self._handle_create), (evt.EVT_N_SET, self._handle_set)]
        self._serve("FAKEMPPS", [(MPPS_SOP_CLASS, list(MPPS_TRANSFER_SYNTAXES))], handlers)
        return self

    def by_step(self) -> dict[str, list[MppsRequest]]:
        """The requests received, per MPPS SOP Instance UID, in the order they came."""
        out: dict[str, list[MppsRequest]] = {}
        for request in self.requests:
            out.setdefault(request.sop_instance_uid, []).append(request)
        return out


class _Process:
    """A peer process in its own process group, stopped on exit."""

    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                # Orthanc takes ~3 s to stop gracefully; a test peer has nothing to keep.
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the process ends mid-work, with nothing flushed or released."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Wlmscpfs(_Process):
    """DCMTK `wlmscpfs` serving `root/<called AE>/*.wl`, returning each file's character set."""

    def __init__(self, root: Path, log: Path, *extra: str) -> None:
        exe = shutil.which("wlmscpfs")
        if exe is None:
            raise RuntimeError("wlmscpfs (DCMTK) is not installed")
        self.port = free_port()
        # TCP_NODELAY=1: Debian's DCMTK leaves Nagle on otherwise (docs/peers.md, "Nagle").
        env = {**os.environ, "TCP_NODELAY": "1"}
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [exe, "--data-files-path", str(root), "--keep-char-set", *extra, str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_port(self.port, self.proc, "wlmscpfs", 10)

    def stop(self) -> None:
        super().stop()
        self._log.close()


class OrthancWorklists(_Process):
    """Orthanc with the folder-based worklists plugin reading the same `*.wl` files."""

    aet = "ORTHANC"

    def __init__(self, folder: Path, workdir: Path, log: Path) -> None:
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not Path(exe).exists() or not ORTHANC_PLUGIN.exists():
            raise RuntimeError("Orthanc or its worklists plugin is not installed")
        self.port = free_port()
        self.http_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cinebridge-test",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            # Unknown calling AEs (SPACS and the tests' own) may echo and query worklists.
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowFindWorklist": True,
            "Plugins": [str(ORTHANC_PLUGIN)],
            "Worklists": {"Enable": True, "Database": str(folder)},
            # Orthanc transcodes worklist answers to its default encoding; with the default
            # (Latin1) a UTF-8 name loses every character outside Latin-1 (seen: "ŁUKASIEWICZ"
            # → "UKASIEWICZ"). A RIS front-end on Orthanc should run with Utf8.
            "DefaultEncoding": "Utf8",
        }
        (workdir / "orthanc.json").write_text(json.dumps(config))
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [exe, str(workdir / "orthanc.json")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, self.proc, "Orthanc", 30)

    def stop(self) -> None:
        super().stop()
        self._log.close()


class ServiceProcess(_Process):
    """A CineBridge service as a process of its own (`python -m <module>`), configured by its
    environment, so a test can SIGKILL it in the middle of its work and start it again."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module, self.env, self.log = module, env, log
        self.starts = 0

    def start(self) -> ServiceProcess:
        self.starts += 1
        full = {**os.environ, "CB_HEALTH_PORT": "0", **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module], env=full, stdout=out, stderr=subprocess.STDOUT
            )
        return self
