"""Modality Worklist C-FIND SCU and C-ECHO with the limits of statement Tables 16, 17 and 26.

Blocking (pynetdicom runs its own threads); the service calls these through `asyncio.to_thread`.
- Pending responses (FF00/FF01) are collected until the final status (Table 16).
- Abort or connection loss keeps what arrived and says the list may be incomplete (Table 17).
- One deadline for the whole query (Table 26 "client execution time to receive data", 10 s):
  pynetdicom's DIMSE timeout is re-armed with the time left before each response.
- More than `max_entries` matches: C-CANCEL (PS3.7 9.3.2.3), extra responses are dropped
  undecoded, and the association is aborted if the server does not stop within a grace period.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO

from cinebridge_common.logging import kv
from cinebridge_common.messages import WorklistItem
from cinebridge_common.messages.worklist import QueryOutcome
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext

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


def _quiet_pynetdicom() -> None:
    # pynetdicom logs every identifier at INFO by default: patient data in logs (dicom-notes 4.4).
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def _ae(calling_ae: str, limits: FindLimits) -> AE:
    _quiet_pynetdicom()
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = limits.connect_timeout_s
    ae.acse_timeout = limits.connect_timeout_s
    ae.network_timeout = limits.timeout_s
    ae.dimse_timeout = limits.timeout_s
    return ae


def _associate(ae: AE, peer: Peer, limits: FindLimits) -> tuple[Association | None, str]:
    try:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.called_ae, max_pdu=limits.max_pdu)
    except (OSError, ValueError, RuntimeError) as exc:
        return None, f"cannot connect to {peer.host}:{peer.port}: {exc}"
    if assoc.is_established:
        raw = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        if raw is not None:
            with contextlib.suppress(OSError):
                # Small DIMSE messages must not wait for a delayed ACK (peer-notes: Nagle).
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return assoc, ""
    if assoc.is_rejected:
        return None, f"{peer.called_ae}@{peer.host}:{peer.port} rejected the association"
    where = f"{peer.called_ae}@{peer.host}:{peer.port}"
    return None, f"no association with {where} (refused or timed out)"


def _end(assoc: Association, final_received: bool) -> None:
    if not assoc.is_established:
        return
    if final_received:
        # Table 26: A-RELEASE-RP is not waited for long; the results are already in hand.
        assoc.acse_timeout = 1.0
        assoc.release()
    else:
        assoc.abort()


def _mwl_context(assoc: Association) -> PresentationContext:
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == ModalityWorklistInformationFind:
            return cx
    raise RuntimeError("the server accepted no Modality Worklist presentation context")


def _send_find(assoc: Association, identifier: Dataset) -> tuple[int, UID]:
    """Send the C-FIND-RQ (PS3.7 9.1.2.1); returns the context id and its transfer syntax.

    The responses are then read from the DIMSE queue as raw bytes rather than through
    `send_c_find`, whose pydicom decoding of every identifier costs more than the exchange.
    """
    cx = _mwl_context(assoc)
    syntax = UID(cx.transfer_syntax[0])
    context_id = int(cx.context_id or 0)
    request = C_FIND()
    request.MessageID = MESSAGE_ID
    request.AffectedSOPClassUID = ModalityWorklistInformationFind
    request.Priority = 2  # LOW (PS3.7 9.3.2.1): the default of pynetdicom and DCMTK
    encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian, False)
    if encoded is None:
        raise ValueError("the query identifier cannot be encoded")
    request.Identifier = BytesIO(encoded)
    assoc.dimse.send_msg(request, context_id)
    return context_id, syntax


@contextlib.contextmanager
def _reactor_paused(assoc: Association) -> Iterator[None]:
    """Keep the association's reactor thread off the DIMSE queue while we read responses.

    pynetdicom's own `send_*` methods do exactly this (association.py, "Pause the reactor to
    prevent a race condition"); without it the reactor takes responses off the queue and they
    are lost. Private attributes of pynetdicom 3.0.4 (pinned); the unit tests cover the loss.
    """
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 1.0
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0001)
    try:
        yield
    finally:
        assoc._reactor_checkpoint.set()


class _Collector:
    """Reads the C-FIND responses under one deadline and the entry limit."""

    def __init__(self, assoc: Association, limits: FindLimits, charset: str) -> None:
        self.assoc = assoc
        self.limits = limits
        self.charset = charset
        self.deadline = time.monotonic() + limits.timeout_s
        self.result = FindResult(outcome="complete")
        self.cancelled_at: float | None = None
        self.final_received = False
        self.context_id = 0
        self.syntax = ImplicitVRLittleEndian

    def _limit(self) -> float:
        if self.cancelled_at is not None:
            return self.cancelled_at + self.limits.cancel_grace_s
        return self.deadline

    def run(self, identifier: Dataset) -> FindResult:
        with _reactor_paused(self.assoc):
            return self._run(identifier)

    def _run(self, identifier: Dataset) -> FindResult:
        self.context_id, self.syntax = _send_find(self.assoc, identifier)
        while True:
            remaining = self._limit() - time.monotonic()
            if remaining <= 0:
                self._expired()
                return self.result
            self.assoc.dimse_timeout = remaining
            _, response = self.assoc.dimse.get_msg(block=True)
            if response is None:
                if time.monotonic() >= self._limit() - 0.05:
                    self._expired()
                    return self.result
                return self._lost("association aborted or connection lost")
            if not isinstance(response, C_FIND) or response.Status is None:
                self.assoc.abort()
                return self._lost(f"unexpected {type(response).__name__} from the server")
            code = int(response.Status)
            if code not in _PENDING:
                return self._final(code)
            self._pending(response.Identifier)

    def _pending(self, identifier: BytesIO | None) -> None:
        result = self.result
        if self.cancelled_at is not None:
            result.dropped += 1
            return
        if len(result.items) >= self.limits.max_entries:
            self._cancel()
            result.dropped += 1
            return
        data = identifier.getvalue() if identifier is not None else b""
        try:
            if not data:
                raise MalformedEntry("a pending response without an identifier")
            result.items.append(
                decode_entry(
                    data,
                    implicit=self.syntax.is_implicit_VR,
                    little=self.syntax.is_little_endian,
                    fallback_charset=self.charset,
                )
            )
        except MalformedEntry as exc:
            result.warnings.append(
                f"entry {len(result.items) + len(result.warnings) + 1} skipped: {exc}"
            )

    def _cancel(self) -> None:
        self.cancelled_at = time.monotonic()
        self.result.outcome = "too_many"
        self.result.detail = (
            f"more than {self.limits.max_entries} entries match: too many results, "
            "narrow the search"
        )
        self.assoc.send_c_cancel(MESSAGE_ID, self.context_id)

    def _expired(self) -> None:
        if self.cancelled_at is None:
            self.result.outcome = "timeout"
            self.result.detail = (
                f"the worklist server did not finish within {self.limits.timeout_s:g} s; "
                "the list may be incomplete"
            )
        else:
            self.result.warnings.append("the server kept answering after C-CANCEL; aborted")
        if self.assoc.is_established:
            self.assoc.abort()

    def _lost(self, why: str) -> FindResult:
        if self.cancelled_at is None:
            self.result.outcome = "partial"
            self.result.detail = f"{why}; the list may be incomplete"
        return self.result

    def _final(self, code: int) -> FindResult:
        self.final_received = True
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


def find_worklist(peer: Peer, identifier: Dataset, limits: FindLimits, charset: str) -> FindResult:
    """One Modality Worklist C-FIND; never raises for network or peer faults."""
    started = time.monotonic()
    ae = _ae(peer.calling_ae, limits)
    ae.add_requested_context(ModalityWorklistInformationFind, TRANSFER_SYNTAXES)
    assoc, why = _associate(ae, peer, limits)
    if assoc is None:
        return FindResult(outcome="unreachable", detail=why, elapsed_s=time.monotonic() - started)
    collector = _Collector(assoc, limits, charset)
    try:
        result = collector.run(identifier)
    except (ValueError, RuntimeError) as exc:
        result = FindResult(outcome="failed", detail=f"C-FIND could not be sent: {exc}")
    finally:
        _end(assoc, collector.final_received)
    result.elapsed_s = time.monotonic() - started
    log.info(
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
    """C-ECHO (Verification, PS3.7 9.1.5) with Table 26's connect limit."""
    started = time.monotonic()
    limits = FindLimits(timeout_s=timeout_s, connect_timeout_s=timeout_s)
    ae = _ae(peer.calling_ae, limits)
    ae.add_requested_context(Verification)
    assoc, why = _associate(ae, peer, limits)
    if assoc is None:
        return EchoResult(reachable=False, reason=why)
    try:
        status = assoc.send_c_echo()
    finally:
        _end(assoc, final_received=True)
    if "Status" not in status:
        return EchoResult(reachable=False, reason="no C-ECHO response (timeout or abort)")
    if status.Status != 0x0000:
        return EchoResult(reachable=False, reason=f"C-ECHO status 0x{status.Status:04X}")
    return EchoResult(reachable=True, rtt_ms=round((time.monotonic() - started) * 1000, 1))
