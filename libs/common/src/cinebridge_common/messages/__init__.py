"""The catalogue of every message on the CineBridge bus (one module per producer)."""

from __future__ import annotations

from .base import Event, Job, Message, Reply, Request
from .capture import (
    CaptureCommand,
    CaptureCommandReply,
    CaptureStateChanged,
    CaptureStatusReply,
    CaptureStatusRequest,
    MediaCaptured,
    SetRoomStudy,
    SetRoomStudyReply,
)
from .converter import ConversionFailed, ConversionProgressed, ConvertMedia, InstanceCreated
from .gateway import StudyChanged
from .scp import InstanceReceived
from .sender import DeliveryStateChanged, EchoReply, EchoRequest, ForwardStudy, SendInstance
from .service import DeadLetter, ServiceHeartbeat
from .worklist import (
    WorklistEcho,
    WorklistEchoReply,
    WorklistItem,
    WorklistQuery,
    WorklistQueryReply,
)

#: Every message class, in catalogue order (the generated docs/messages.md follows it).
CATALOGUE: tuple[type[Message], ...] = (
    ServiceHeartbeat,
    DeadLetter,
    MediaCaptured,
    CaptureStateChanged,
    CaptureCommand,
    CaptureCommandReply,
    CaptureStatusRequest,
    CaptureStatusReply,
    SetRoomStudy,
    SetRoomStudyReply,
    ConvertMedia,
    ConversionProgressed,
    InstanceCreated,
    ConversionFailed,
    SendInstance,
    ForwardStudy,
    DeliveryStateChanged,
    EchoRequest,
    EchoReply,
    InstanceReceived,
    WorklistQuery,
    WorklistQueryReply,
    WorklistEcho,
    WorklistEchoReply,
    StudyChanged,
)

__all__ = [
    "CATALOGUE",
    "CaptureCommand",
    "CaptureCommandReply",
    "CaptureStateChanged",
    "CaptureStatusReply",
    "CaptureStatusRequest",
    "ConversionFailed",
    "ConversionProgressed",
    "ConvertMedia",
    "DeadLetter",
    "DeliveryStateChanged",
    "EchoReply",
    "EchoRequest",
    "Event",
    "ForwardStudy",
    "InstanceCreated",
    "InstanceReceived",
    "Job",
    "MediaCaptured",
    "Message",
    "Reply",
    "Request",
    "SendInstance",
    "ServiceHeartbeat",
    "SetRoomStudy",
    "SetRoomStudyReply",
    "StudyChanged",
    "WorklistEcho",
    "WorklistEchoReply",
    "WorklistItem",
    "WorklistQuery",
    "WorklistQueryReply",
]
