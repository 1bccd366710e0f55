"""`cinebridge send`: a DICOM Part 10 file handed in over HTTP, delivered by the sender.

The body is streamed into the media store's temporary area (never whole in memory), checked to
be a Part 10 file whose File Meta Information names its SOP Class and Instance (PS3.10 7.1),
moved into the `dicom/` area where the sender reads, and announced exactly as the converter
announces its instances: an `InstanceCreated` in the outbox, here naming the one destination,
in the transaction that writes the audit entry. The sender then queues the delivery (a row its
send queue claims at once); `GET /send/deliveries` reports their states.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from cinebridge_common.messages import InstanceCreated
from cinebridge_common.outbox import enqueue
from cinebridge_common.uids import is_valid_uid
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from starlette.requests import ClientDisconnect

from . import send_repository
from .deps import ApiError, Gw, User, client_of, not_found

router = APIRouter(prefix="/api/v1/send", tags=["send"])
#: The upload route's path: its body is bounded here, not by the body-size middleware.
UPLOAD_PATH = r"^/api/v1/send/[^/]+$"
MAX_STATUS_IDS = 500


class SentInstance(BaseModel):
    instance_id: str
    destination_id: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int
    sha256: str


class SendDelivery(BaseModel):
    delivery_id: uuid.UUID
    instance_id: uuid.UUID
    destination_id: uuid.UUID
    destination_name: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None


class NotPart10(ValueError):
    """The upload is not a DICOM Part 10 file this station can deliver."""


@dataclass(frozen=True)
class Identity:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def read_identity(path: Path) -> Identity:
    """The File Meta Information of a Part 10 file (PS3.10 7.1), read without pixel data."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise NotPart10("not a DICOM Part 10 file: no 128-byte preamble and 'DICM' (PS3.10 7.1)")
    try:
        # stop_before_pixels + defer_size: only the header is parsed; large values stay on disk.
        ds = dcmread(path, stop_before_pixels=True, defer_size=4096)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise NotPart10(f"unreadable DICOM file: {type(exc).__name__}") from None
    meta = ds.file_meta
    found = {
        "Media Storage SOP Class UID (0002,0002)": str(meta.get("MediaStorageSOPClassUID", "")),
        "Media Storage SOP Instance UID (0002,0003)": str(
            meta.get("MediaStorageSOPInstanceUID", "")
        ),
        "Transfer Syntax UID (0002,0010)": str(meta.get("TransferSyntaxUID", "")),
    }
    for name, value in found.items():
        if not value or len(value) > 64 or not is_valid_uid(value):
            raise NotPart10(f"the file meta has no valid {name} (PS3.10 7.1)")
    identity = Identity(*found.values())
    # PS3.10 7.1: the meta's SOP Class/Instance equal the dataset's (0008,0016)/(0008,0018).
    if str(ds.get("SOPClassUID", "")) != identity.sop_class_uid:
        raise NotPart10("SOP Class UID (0008,0016) differs from the file meta's (0002,0002)")
    if str(ds.get("SOPInstanceUID", "")) != identity.sop_instance_uid:
        raise NotPart10("SOP Instance UID (0008,0018) differs from the file meta's (0002,0003)")
    return identity


async def _receive(request: Request, tmp: Path, limit: int) -> tuple[int, str]:
    """Stream the body into `tmp` (fsync'd); returns its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    fh = await asyncio.to_thread(open, tmp, "xb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"a file may have up to {limit} bytes")
            digest.update(chunk)
            await asyncio.to_thread(fh.write, chunk)
        await asyncio.to_thread(_flush, fh)
    finally:
        await asyncio.to_thread(fh.close)
    if size == 0:
        raise ApiError(422, "not_dicom", "the body is empty: send a DICOM Part 10 file")
    return size, digest.hexdigest()


def _flush(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


@router.post("/{destination_id}", response_model=SentInstance, status_code=202)
async def send_file(
    destination_id: uuid.UUID, principal: User, request: Request, gw: Gw
) -> SentInstance:
    """Hand one DICOM Part 10 file (body `application/dicom`) to the sender for one destination.

    202: stored and queued; 404: no such destination; 413: larger than the station takes;
    422: not a Part 10 file with SOP Class and Instance UIDs. The viewer role is refused."""
    limit = gw.settings.gateway_send_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"a file may have up to {limit} bytes")
    destination = await send_repository.destination_name(gw.pool, destination_id)
    if destination is None:
        raise not_found("destination")
    tmp = gw.store.temp_path(".dcm")
    try:
        try:
            size, sha256 = await _receive(request, tmp, limit)
        except ClientDisconnect:
            raise ApiError(400, "incomplete", "the upload ended before the file did") from None
        try:
            identity = await asyncio.to_thread(read_identity, tmp)
        except NotPart10 as exc:
            raise ApiError(422, "not_dicom", str(exc)) from None
        rel = gw.store.new_relative("dicom", "dcm")
        await asyncio.to_thread(gw.store.commit_temp, tmp, rel)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    instance_id = str(uuid.uuid4())
    event = InstanceCreated(
        instance_id=instance_id,
        media_id="",  # handed in, not captured: no media item, no station study
        study_id="",
        sop_instance_uid=identity.sop_instance_uid,
        sop_class_uid=identity.sop_class_uid,
        transfer_syntax_uid=identity.transfer_syntax_uid,
        rel_path=rel,
        size=size,
        sha256=sha256,
        auto_send=False,
        destination_ids=[str(destination_id)],
    )
    try:
        async with gw.pool.acquire() as conn, conn.transaction():
            await enqueue(conn, event, f"instance-sent-{instance_id}")
            await gw.repo.audit(
                conn,
                principal.name,
                "instance_sent",
                target=identity.sop_instance_uid,
                detail={"destination": destination, "instance_id": instance_id, "size": size},
                client=client_of(request),
            )
    except BaseException:
        # Not announced: no row will ever name the file, so it must not stay in the store.
        await asyncio.to_thread(gw.store.delete, rel)
        raise
    return SentInstance(
        instance_id=instance_id,
        destination_id=str(destination_id),
        size=size,
        sha256=sha256,
        **vars(identity),
    )


@router.get("/deliveries", response_model=list[SendDelivery])
async def send_deliveries(
    _: User,
    gw: Gw,
    instance_id: Annotated[list[uuid.UUID], Query(max_length=MAX_STATUS_IDS)],
) -> list[dict[str, Any]]:
    """The delivery of each handed-in instance (none yet: the sender has not taken it up)."""
    return await send_repository.deliveries_of(gw.pool, instance_id)
