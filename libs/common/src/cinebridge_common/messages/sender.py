"""Send jobs the sender consumes, its delivery events and the Echo request."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import Event, Job, Reply, Request

DeliveryState = Literal[
    "queued", "sending", "sent", "warning", "failed-retrying", "failed-permanent"
]


class SendInstance(Job):
    """Deliver one instance to one destination (job_key: delivery id)."""

    subject: ClassVar[str] = "cb.job.sender.send"
    delivery_id: str


class ForwardStudy(Job):
    """Statement "Forward": (re)send a study or one instance to destinations; idempotent by job_key."""

    subject: ClassVar[str] = "cb.job.sender.forward"
    study_id: str | None = None
    instance_id: str | None = None
    destination_ids: list[str]
    requested_by: str | None = None


class DeliveryStateChanged(Event):
    subject: ClassVar[str] = "cb.evt.delivery.state_changed"
    delivery_id: str
    instance_id: str
    destination_id: str
    study_id: str | None = None
    state: DeliveryState
    attempt: int = 0
    status_code: int | None = None
    error: str | None = None


class EchoRequest(Request):
    """C-ECHO a configured destination, or an AE given by address (settings page "Echo")."""

    subject: ClassVar[str] = "cb.rpc.sender.echo"
    destination_id: str | None = None
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    calling_ae_title: str | None = None
    timeout_s: float = 10.0


class EchoReply(Reply):
    subject: ClassVar[str] = "cb.rpc.sender.reply"
    reachable: bool = False
    rtt_ms: float | None = None
    reason: str | None = None
