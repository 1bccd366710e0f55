"""Base of every bus message: a versioned pydantic model that knows its subject."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Message(BaseModel):
    """A message on the bus. `subject` may hold `{room}`-style placeholders filled per message.

    New fields must be optional; consumers ignore what they do not know (`extra="ignore"`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    subject: ClassVar[str]
    message_kind: ClassVar[str]  # "event", "job", "rpc-request", "rpc-reply"
    schema_version: int = 1

    def subject_for(self) -> str:
        """The concrete subject of this message (placeholders filled from its fields)."""
        return self.subject.format(**self.model_dump())

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls.model_validate_json(data)

    @classmethod
    def wildcard(cls) -> str:
        """The subject with every `{placeholder}` replaced by `*`, for subscriptions."""
        import re

        return re.sub(r"\{[^}]+\}", "*", cls.subject)


class Event(Message):
    message_kind: ClassVar[str] = "event"
    occurred_at: dt.datetime = Field(default_factory=utcnow)


class Job(Message):
    message_kind: ClassVar[str] = "job"
    #: Idempotency key: the same job key always yields the same result (and Nats-Msg-Id).
    job_key: str


class Request(Message):
    message_kind: ClassVar[str] = "rpc-request"


class Reply(Message):
    message_kind: ClassVar[str] = "rpc-reply"
    ok: bool = True
    error: str | None = None
    #: The service could not answer because a dependency of its own (PostgreSQL) is away:
    #: the request may be asked again later; a requester turns it into `ReplyError`.
    unavailable: bool = False


def describe(model: type[Message]) -> dict[str, Any]:
    fields = ", ".join(name for name in model.model_fields if name != "schema_version")
    return {
        "subject": model.subject,
        "kind": model.message_kind,
        "model": f"{model.__module__}.{model.__name__}",
        "fields": fields,
        "doc": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
    }
