"""Modality Worklist C-FIND SCU and C-ECHO with the limits of statement Tables 16, 17 and 26.

Blocking (one socket, no threads); the service calls these through `asyncio.to_thread`.
- Pending responses (FF00/FF01) are collected until the final status (Table 16).
- Abort or connection loss keeps what arrived and says the list may be incomplete (Table 17).
- One deadline for the whole query (Table 26 "client execution time to receive data", 10 s).
- More than `max_entries` matches: C-CANCEL (PS3.7 9.3.2.3), extra responses are dropped
  undecoded, and the association is aborted if the server does not stop within a grace period.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

from cinebridge_common.logging import kv
from cinebridge_common.messages import WorklistItem
from cinebridge_common.messages.worklist import QueryOutcome
from cinebridge_common.uids import make_uid
from cinebridge_dicom import dimse, requestor
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.dsutils import encode

from .items import MalformedEntry, decode_entry

log = logging.getLogger(__name__)

#: Statement Table 12 (PS3.4 K.4): Modality Worklist Information Model - FIND.
ModalityWorklistInformationFind = UID("1.2.840.10008.5.1.4.31")
#: Verification SOP Class (PS3.4 A.4).
Verification = UID("1.2.840.10008.1.1")
#: Statement Table 15: the three uncompressed syntaxes, in this order of preference.
TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
_PENDING = (0xFF00, 0xFF01)
_CANCEL = 0xFE00
MESSAGE_ID = 1  # one outstanding C-FIND per association (statement §4.2.3.2.3)
PRIORITY_LOW = 2  # (0000,0700) LOW, the default of pynetdicom and DCMTK (PS3.7 9.3.2.1)
#: Our Implementation Class UID (PS3.7 D.3.3.2): derived, stable, under 2.25 (no org root).
IMPLEMENTATION_CLASS_UID = make_uid("cinebridge", "implementation-class")
IMPLEMENTATION_VERSION = "CINEBRIDGE_01"


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    called_ae: str
    calling_ae: str


@dataclass(frozen=True)
class FindLimits:
    """Statement Table 26 defaults: 10 s connect, 10 s to receive data, 16 384-byte PDUs."""

    timeout_s: float = 10.0
    max_entries: int = 1000
    connect_timeout_s: float = 10.0
    cancel_grace_s: float = 2.0
    max_pdu: int = 16384
    #: One response identifier larger than this aborts the association (a hostile RIS).
    max_identifier_bytes: int = 1 << 20


@dataclass
class FindResult:
    outcome: QueryOutcome
    items: list[WorklistItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    detail: str = ""
    status: int | None = None
    elapsed_s: float = 0.0
    dropped: int = 0

    @property
    def incomplete(self) -> bool:
        return self.outcome != "complete"


@dataclass
class EchoResult:
    reachable: bool
    rtt_ms: float | None = None
    reason: str | None = None


def find_command() -> bytes:
    return dimse.request(
        dimse.C_FIND_RQ,
        MESSAGE_ID,
        ModalityWorklistInformationFind,
        has_data_set=True,
        priority=PRIORITY_LOW,
    )


class _Collector:
    """Reads the C-FIND responses under one deadline and the entry limit."""

    def __init__(self, assoc: requestor.Association, limits: FindLimits, charset: str) -> None:
        self.assoc = assoc
        (self.context,) = assoc.contexts.values()
        self.limits = limits
        self.charset = charset
        self.deadline = time.monotonic() + limits.timeout_s
        self.result = FindResult(outcome="complete")
        self.cancelled_at: float | None = None
        self.syntax = UID(self.context.transfer_syntax)
        self.implicit, self.little = self.syntax.is_implicit_VR, self.syntax.is_little_endian

    def _limit(self) -> float:
        if self.cancelled_at is not None:
            return self.cancelled_at + self.limits.cancel_grace_s
        return self.deadline

    def run(self, identifier: Dataset) -> FindResult:
        encoded = encode(identifier, self.implicit, self.little, False)
        if encoded is None:
            raise ValueError("the query identifier cannot be encoded")
        self.assoc.send_message(self.context, find_command(), encoded)
        while True:
            try:
                # Every response must answer our C-FIND (Message ID Being Responded To).
                message = self.assoc.receive_response(MESSAGE_ID, dimse.C_FIND_RSP, self._limit())
            except requestor.Expired:
                self._expired()
                return self.result
            except requestor.AssociationError as exc:
                return self._lost(str(exc))
            if message.status is None:
                self.assoc.abort()
                return self._lost("a C-FIND response without a status")
            if message.status not in _PENDING:
                return self._final(message.status)
            self._pending(message.dataset)

    def _pending(self, data: bytes | None) -> None:
        result = self.result
        if self.cancelled_at is not None:
            result.dropped += 1
            return
        if len(result.items) >= self.limits.max_entries:
            self._cancel()
            result.dropped += 1
            return
        try:
            if not data:
                raise MalformedEntry("a pending response without an identifier")
            result.items.append(
                decode_entry(
                    data,
                    implicit=self.implicit,
                    little=self.little,
                    fallback_charset=self.charset,
                ).keep_as_text()  # see `WorklistItem.keep_as_text`: no GC pause needed
            )
        except MalformedEntry as exc:
            number = len(result.items) + len(result.warnings) + 1
            result.warnings.append(f"entry {number} skipped: {exc}")

    def _cancel(self) -> None:
        self.cancelled_at = time.monotonic()
        self.result.outcome = "too_many"
        self.result.detail = (
            f"more than {self.limits.max_entries} entries match: too many results, "
            "narrow the search"
        )
        with contextlib.suppress(OSError, requestor.AssociationError):
            self.assoc.cancel(self.context, MESSAGE_ID)  # a dead link shows on the next receive

    def _expired(self) -> None:
        if self.cancelled_at is None:
            self.result.outcome = "timeout"
            self.result.detail = (
                f"the worklist server did not finish within {self.limits.timeout_s:g} s; "
                "the list may be incomplete"
            )
        else:
            self.result.warnings.append("the server kept answering after C-CANCEL; aborted")
        self.assoc.abort()

    def _lost(self, why: str) -> FindResult:
        if self.cancelled_at is None:
            self.result.outcome = "partial"
            self.result.detail = f"{why}; the list may be incomplete"
        return self.result

    def _final(self, code: int) -> FindResult:
        self.result.status = code
        if self.cancelled_at is not None:
            return self.result  # 0xFE00 (or whatever the server says after our C-CANCEL)
        if code == 0x0000:
            return self.result
        if code == _CANCEL:
            self.result.outcome = "partial"
            self.result.detail = "the server cancelled the query; the list may be incomplete"
        elif 0xB000 <= code <= 0xBFFF:
            self.result.warnings.append(f"the server answered with warning status 0x{code:04X}")
        else:
            self.result.outcome = "failed"
            self.result.detail = f"the server failed the query with status 0x{code:04X}"
        return self.result


def _associate(peer: Peer, abstract_syntax: str, limits: FindLimits) -> requestor.Association:
    settings = requestor.Settings(
        calling_ae=peer.calling_ae,
        called_ae=peer.called_ae,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION,
        max_pdu=limits.max_pdu,
        connect_s=limits.connect_timeout_s,
        acse_s=limits.connect_timeout_s,
        network_s=limits.timeout_s,
        dimse_s=limits.timeout_s,
        max_dataset=limits.max_identifier_bytes,
    )
    return requestor.Association.request(
        peer.host, peer.port, settings, [(abstract_syntax, list(TRANSFER_SYNTAXES))]
    )


def find_worklist(peer: Peer, identifier: Dataset, limits: FindLimits, charset: str) -> FindResult:
    """One Modality Worklist C-FIND; never raises for network or peer faults."""
    started = time.monotonic()
    try:
        assoc = _associate(peer, ModalityWorklistInformationFind, limits)
    except requestor.AssociationError as exc:
        return FindResult(
            outcome="unreachable", detail=str(exc), elapsed_s=time.monotonic() - started
        )
    try:
        result = _Collector(assoc, limits, charset).run(identifier)
    except (ValueError, OSError) as exc:
        result = FindResult(outcome="failed", detail=f"C-FIND could not be sent: {exc}")
    finally:
        if assoc.is_established:
            assoc.release()
    result.elapsed_s = time.monotonic() - started
    # Table 17: a broken exchange goes to the application log (no patient data: counts only).
    log.log(
        logging.INFO if result.outcome == "complete" else logging.WARNING,
        "worklist query done",
        extra=kv(
            called_ae=peer.called_ae,
            outcome=result.outcome,
            entries=len(result.items),
            skipped=len(result.warnings),
            dropped=result.dropped,
            ms=round(result.elapsed_s * 1000),
        ),
    )
    return result


def echo(peer: Peer, timeout_s: float = 10.0) -> EchoResult:
    """C-ECHO (Verification, PS3.7 9.1.5) within Table 26's limit."""
    started = time.monotonic()
    limits = FindLimits(timeout_s=timeout_s, connect_timeout_s=timeout_s)
    try:
        assoc = _associate(peer, Verification, limits)
    except requestor.AssociationError as exc:
        return EchoResult(reachable=False, reason=str(exc))
    try:
        status = assoc.send_c_echo()
    except (requestor.AssociationError, OSError) as exc:
        return EchoResult(reachable=False, reason=f"no C-ECHO response: {exc}")
    finally:
        if assoc.is_established:
            assoc.release()
    if status != 0x0000:
        return EchoResult(reachable=False, reason=f"C-ECHO status {status!r}")
    return EchoResult(reachable=True, rtt_ms=round((time.monotonic() - started) * 1000, 1))
