"""C-STORE and C-ECHO SCU on cinebridge_dicom's requestor: files streamed as they are, one
association per batch.

Blocking code, run in a worker thread (`asyncio.to_thread`). No NATS or database here: results
go to a callback as each instance is answered, so the caller can record progress mid-batch.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from cinebridge_common import conformance
from cinebridge_dicom import requestor
from cinebridge_dicom.files import data_set_offset
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from .policy import Outcome, classify_status

VERIFICATION = conformance.VERIFICATION_SOP_CLASS[1]
ILE = conformance.IMPLICIT_VR_LITTLE_ENDIAN
JPEG_BASELINE = conformance.JPEG_BASELINE
#: PS3.8 9.3.2.2: at most 128 presentation contexts (odd ids 1..255) per association.
MAX_CONTEXTS = 128
#: Our implementation identity (CineBridge is not VideoStation: conformance.py, Tables 4/8).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1351.1"
IMPLEMENTATION_VERSION_NAME = "CINEBRIDGE_01"
#: Largest P-DATA we accept, announced in A-ASSOCIATE-RQ (PS3.8 D.1); responses are tiny.
OUR_MAX_PDU = 65536


@dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str
    port: int
    calling_ae_title: str = conformance.DEFAULT_CLIENT_AE_TITLE
    tls: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Timeouts:
    """Table 26: 10 s TCP connect and A-ASSOCIATE-AC. The statement waits for a DIMSE-RSP
    forever (0 s); we do not, so a hanging PACS ends in a retry instead of a stuck job."""

    connect_s: float = 10.0
    acse_s: float = 10.0
    dimse_s: float = 120.0
    network_s: float = 60.0


@dataclass(frozen=True)
class Item:
    """One instance to send: a Part 10 file and what its file meta says."""

    key: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class ItemResult:
    key: str
    outcome: Outcome
    status: int | None
    error: str | None
    started_at: float
    finished_at: float


class AssociationFailed(Exception):
    """No association: connection refused/timed out, rejected, or no context accepted."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


OnResult = Callable[[ItemResult], None]


def contexts_for(items: Sequence[Item], decompress_stills: bool) -> list[tuple[str, list[str]]]:
    """Tables 9/10: per (SOP class, transfer syntax) a context offering the instance's own
    syntax plus Implicit VR Little Endian (footnote 1), preceded by one with the own syntax
    alone. With `decompress_stills`, JPEG stills
    also get an Explicit VR Little Endian context to fall back to."""
    seen: dict[tuple[str, str], None] = {}
    for item in items:
        seen[(item.sop_class_uid, item.transfer_syntax_uid)] = None
        if decompress_stills and item.transfer_syntax_uid == JPEG_BASELINE:
            seen[(item.sop_class_uid, ExplicitVRLittleEndian)] = None
    out: list[tuple[str, list[str]]] = []
    for sop_class, ts in seen:
        if ts == ILE:
            out.append((sop_class, [ILE]))
            continue
        # An acceptor may pick any syntax of a context, and several (pynetdicom among them)
        # prefer ILE over JPEG/MPEG when both are offered. Proposing the own syntax alone as well
        # lets an SCP that supports it say so; the [own, ILE] context is the statement's.
        out.append((sop_class, [ts]))
        out.append((sop_class, [ts, ILE]))
    if len(out) > MAX_CONTEXTS:
        raise ValueError(f"{len(out)} presentation contexts needed, at most {MAX_CONTEXTS}")
    return out


def _settings(peer: Peer, timeouts: Timeouts) -> requestor.Settings:
    return requestor.Settings(
        calling_ae=peer.calling_ae_title,
        called_ae=peer.ae_title,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        max_pdu=OUR_MAX_PDU,
        connect_s=timeouts.connect_s,
        acse_s=timeouts.acse_s,
        network_s=timeouts.network_s,
        dimse_s=timeouts.dimse_s,
        tls=peer.tls,
    )


def _associate(
    peer: Peer, timeouts: Timeouts, contexts: Sequence[tuple[str, Sequence[str]]]
) -> requestor.Association:
    try:
        return requestor.Association.request(
            peer.host, peer.port, _settings(peer, timeouts), contexts
        )
    except requestor.AssociationError as exc:
        raise AssociationFailed(exc.reason, transient=exc.transient) from exc


def send_batch(
    peer: Peer,
    items: Sequence[Item],
    timeouts: Timeouts,
    *,
    decompress_stills: bool = False,
    on_result: OnResult | None = None,
) -> list[ItemResult]:
    """Send `items` over one association; every item gets exactly one result.

    Raises AssociationFailed when no association could be made (nothing was sent). A failure of
    one instance does not stop the others (statement §4.2.2.3.1.3); if the association itself
    is lost, the instance in flight and the rest fail transiently.
    """
    assoc = _associate(peer, timeouts, contexts_for(items, decompress_stills))
    results: list[ItemResult] = []

    def report(result: ItemResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    try:
        for index, item in enumerate(items):
            if not assoc.is_established:
                now = time.time()
                lost = "association ended before this instance was sent"
                for rest in items[index:]:
                    report(ItemResult(rest.key, "failed-retrying", None, lost, now, now))
                break
            report(_store_one(assoc, item, decompress_stills))
    except BaseException:
        assoc.abort()  # the caller gave up mid-batch (stopping): no orderly release
        raise
    if _refused_compressed(assoc, items, decompress_stills):
        # Statement §4.2.2.3.1.3: when the SCP marks the compression-related context unsupported
        # the client aborts the association (it converts no transfer syntax); the instances that
        # could be sent were sent first, since the client always tries all of them.
        assoc.abort()
    else:
        assoc.release()
    return results


def _refused_compressed(
    assoc: requestor.Association, items: Sequence[Item], decompress_stills: bool
) -> bool:
    """Whether some item's own (compressed) transfer syntax has no accepted context."""
    return any(
        assoc.context_for(item.sop_class_uid, item.transfer_syntax_uid) is None
        and not (decompress_stills and item.transfer_syntax_uid == JPEG_BASELINE)
        for item in items
    )


def _store_one(assoc: requestor.Association, item: Item, decompress_stills: bool) -> ItemResult:
    started = time.time()

    def done(outcome: Outcome, status: int | None, why: str) -> ItemResult:
        return ItemResult(item.key, outcome, status, why, started, time.time())

    try:
        if not item.path.is_file():
            return done("failed-permanent", None, "file missing from the media store")
        context = assoc.context_for(item.sop_class_uid, item.transfer_syntax_uid)
        if context is not None:
            with open(item.path, "rb") as fh:
                data_set_offset(fh)  # the data set as it is on disk, after the Part 10 header
                status = assoc.send_c_store(context, item.sop_class_uid, item.sop_instance_uid, fh)
        elif decompress_stills and item.transfer_syntax_uid == JPEG_BASELINE:
            status = _store_decompressed(assoc, item)
        else:
            return done(
                "failed-permanent",
                None,
                f"destination refused {item.transfer_syntax_uid} for {item.sop_class_uid}; "
                "the sender does not convert transfer syntaxes (statement Table 10 note 1)",
            )
    except requestor.AssociationError as exc:
        # A-ABORT, a lost connection, a timeout or a response to another message: the
        # association is over and this instance is tried again later (its reason recorded).
        return done("failed-retrying", None, f"no C-STORE response: {exc.reason}")
    except (OSError, ValueError, AttributeError, KeyError) as exc:
        return done("failed-permanent", None, f"cannot send: {exc}")
    verdict = classify_status(status)
    return done(verdict.outcome, status, verdict.reason)


def _store_decompressed(assoc: requestor.Association, item: Item) -> int:
    """A JPEG still decoded to native pixels and sent over an uncompressed context. Only for
    stills: video is never decoded (the option exists for PACS without JPEG support)."""
    context = assoc.context_for(item.sop_class_uid, ExplicitVRLittleEndian) or assoc.context_for(
        item.sop_class_uid, ILE
    )
    if context is None:
        raise ValueError(f"destination accepts no uncompressed context for {item.sop_class_uid}")
    ds = dcmread(item.path)
    # Same instance in another transfer syntax (what an SCP converting on receipt would store),
    # so the SOP Instance UID stays: the PACS must see one instance, not two.
    ds.decompress(generate_instance_uid=False)
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = context.transfer_syntax == ILE
    write_dataset(buffer, ds)
    data = BytesIO(buffer.getvalue())
    return assoc.send_c_store(context, item.sop_class_uid, item.sop_instance_uid, data)


def send_parallel(
    peer: Peer,
    items: Sequence[Item],
    timeouts: Timeouts,
    *,
    associations: int,
    decompress_stills: bool = False,
    on_result: OnResult | None = None,
) -> list[ItemResult]:
    """Split `items` over up to `associations` concurrent associations (round robin).

    Raises AssociationFailed only if no association at all could be made; a group whose
    association failed reports its items as failed with that reason.
    """
    groups = [list(items[i::associations]) for i in range(max(1, min(associations, len(items))))]
    if len(groups) == 1:
        return send_batch(
            peer, groups[0], timeouts, decompress_stills=decompress_stills, on_result=on_result
        )
    lock = threading.Lock()

    def guarded(result: ItemResult) -> None:
        if on_result is not None:
            with lock:
                on_result(result)

    def run(group: list[Item]) -> list[ItemResult] | AssociationFailed:
        try:
            return send_batch(
                peer, group, timeouts, decompress_stills=decompress_stills, on_result=guarded
            )
        except AssociationFailed as exc:
            return exc

    with ThreadPoolExecutor(len(groups), thread_name_prefix="cstore") as pool:
        outcomes = list(pool.map(run, groups))
    failures = [o for o in outcomes if isinstance(o, AssociationFailed)]
    if len(failures) == len(outcomes):
        raise failures[0]
    results: list[ItemResult] = []
    for group, outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, AssociationFailed):
            now = time.time()
            state: Outcome = "failed-retrying" if outcome.transient else "failed-permanent"
            for item in group:
                result = ItemResult(item.key, state, None, outcome.reason, now, now)
                guarded(result)
                results.append(result)
        else:
            results.extend(outcome)
    return results


@dataclass(frozen=True)
class EchoResult:
    reachable: bool
    rtt_ms: float | None
    reason: str | None


def echo(peer: Peer, timeout_s: float = 10.0) -> EchoResult:
    """Verification SCU (§4.2.1): C-ECHO with only Verification/ILE proposed (Table 5), all
    within the 10 s client limit of Table 26."""
    limit = max(0.5, min(timeout_s, 10.0))
    timeouts = Timeouts(connect_s=limit, acse_s=limit, dimse_s=limit, network_s=limit)
    started = time.monotonic()
    try:
        assoc = _associate(peer, timeouts, [(VERIFICATION, [ILE])])
    except AssociationFailed as exc:
        return EchoResult(False, None, exc.reason)
    try:
        code = assoc.send_c_echo()
    except requestor.AssociationError as exc:
        return EchoResult(False, None, f"no C-ECHO response: {exc.reason}")
    rtt = (time.monotonic() - started) * 1000
    assoc.release()
    if code != 0:
        return EchoResult(False, rtt, f"C-ECHO status {code:04X}")
    return EchoResult(True, round(rtt, 2), None)
