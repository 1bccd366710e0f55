"""Thin pynetdicom event handlers; the binding table is at the bottom.

They run in pynetdicom's association threads: C-ECHO answers, C-STORE hands the received file to
Ingest (which owns the status decision), connection close removes partial files.
"""

from __future__ import annotations

import logging
from typing import Any

from cinebridge_common.conformance import STATUS_PROCESSING_FAILURE, STATUS_SUCCESS
from cinebridge_common.logging import kv
from pynetdicom import evt
from pynetdicom.events import Event

from .ingest import Command, Ingest
from .receive import ReceiveFile, discard_unclaimed

log = logging.getLogger(__name__)


def handle_echo(event: Event) -> int:
    """PS3.7 9.1.5: C-ECHO success."""
    return STATUS_SUCCESS


def handle_store(event: Event, ingest: Ingest) -> int:
    """C-STORE: the dataset already sits in a ReceiveFile; Ingest stores, indexes, decides."""
    request: Any = event.request
    received = getattr(request, "_dataset_file", None)
    if not isinstance(received, ReceiveFile):
        return STATUS_PROCESSING_FAILURE  # chunked receive is off: a wiring error, refuse
    requestor = event.assoc.requestor
    command = Command(
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
        calling_ae=str(requestor.ae_title).strip(),
        source_address=str(requestor.address),
    )
    return ingest.store_instance(received, command)


def handle_conn_close(event: Event) -> None:
    """A connection that ends mid-transfer leaves no partial file."""
    removed = discard_unclaimed(event.assoc)
    if removed:
        log.warning("partial instance discarded", extra=kv(count=removed))


def handle_rejected(event: Event) -> None:
    """Say why (PS3.8 Table 9-21: result, source, reason), e.g. 1/1/3 calling AE not allowed."""
    primitive: Any = event.assoc.acceptor.primitive
    log.warning(
        "association rejected",
        extra=kv(
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            called_ae=str(event.assoc.requestor.primitive.called_ae_title).strip()
            if event.assoc.requestor.primitive
            else "",
            peer=event.assoc.requestor.address,
            result=getattr(primitive, "result", None),
            source=getattr(primitive, "result_source", None),
            reason=getattr(primitive, "diagnostic", None),
        ),
    )


def handle_aborted(event: Event) -> None:
    """A-ABORT or A-P-ABORT; any instance in flight was not acknowledged and left nothing."""
    log.info("association aborted", extra=kv(peer=event.assoc.requestor.address))


def bindings(ingest: Ingest) -> list[Any]:
    """The subscription table: pynetdicom event → handler (→ its dependencies)."""
    return [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [ingest]),
        (evt.EVT_CONN_CLOSE, handle_conn_close),
        (evt.EVT_REJECTED, handle_rejected),
        (evt.EVT_ABORTED, handle_aborted),
    ]
