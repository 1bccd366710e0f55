"""MPPS SCU (PS3.4 F.7): one association per request, N-CREATE or N-SET, over
`cinebridge_dicom.requestor`. Blocking; the service calls it through `asyncio.to_thread`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from cinebridge_dicom import dimse, requestor
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from . import scu
from .mpps import MPPS_SOP_CLASS

#: Proposed for the MPPS SOP class, in this order (PS3.5 A.1, A.2: the uncompressed defaults).
TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
_ERROR_COMMENT, _ERROR_ID = 0x0902, 0x0903


@dataclass(frozen=True)
class Answer:
    """The SCP's answer, or why none came (`status` None: nothing was answered)."""

    status: int | None
    error_id: int | None = None
    comment: str = ""
    #: Without a status: whether trying later may help (unreachable, aborted, timed out).
    transient: bool = True


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    """The attribute list in the negotiated syntax (PS3.5 7.1), without a preamble."""
    syntax = UID(transfer_syntax)
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax.is_little_endian
    buffer.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(buffer, ds)
    return buffer.getvalue()


def send(
    peer: scu.Peer, command_field: int, sop_instance_uid: str, ds: Dataset, timeout_s: float
) -> Answer:
    """N-CREATE (`dimse.N_CREATE_RQ`) or N-SET (`dimse.N_SET_RQ`) of one step."""
    limits = scu.FindLimits(timeout_s=timeout_s, connect_timeout_s=timeout_s)
    try:
        assoc = _associate(peer, limits)
    except requestor.AssociationError as exc:
        return Answer(None, comment=str(exc), transient=exc.transient)
    try:
        (context,) = assoc.contexts.values()
        message = assoc.send_n(
            context, command_field, sop_instance_uid, encode(ds, context.transfer_syntax)
        )
    except requestor.AssociationError as exc:
        return Answer(None, comment=f"no answer: {exc}", transient=exc.transient)
    except OSError as exc:
        return Answer(None, comment=f"no answer: {exc}")
    finally:
        if assoc.is_established:
            with contextlib.suppress(requestor.AssociationError, OSError):
                assoc.release()
    if message.status is None:
        return Answer(None, comment="a response without a status")
    elements = message.command.elements
    comment = elements.get(_ERROR_COMMENT, b"").rstrip(b"\x00 ").decode("ascii", "replace")
    return Answer(message.status, dimse.command_us(elements, _ERROR_ID), comment)


def _associate(peer: scu.Peer, limits: scu.FindLimits) -> requestor.Association:
    settings = requestor.Settings(
        calling_ae=peer.calling_ae,
        called_ae=peer.called_ae,
        implementation_class_uid=scu.IMPLEMENTATION_CLASS_UID,
        implementation_version_name=scu.IMPLEMENTATION_VERSION,
        max_pdu=limits.max_pdu,
        connect_s=limits.connect_timeout_s,
        acse_s=limits.connect_timeout_s,
        network_s=limits.timeout_s,
        dimse_s=limits.timeout_s,
        max_dataset=limits.max_identifier_bytes,
    )
    return requestor.Association.request(
        peer.host, peer.port, settings, [(MPPS_SOP_CLASS, list(TRANSFER_SYNTAXES))]
    )
