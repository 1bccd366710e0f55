"""JetStream streams of the system: their specification, and creating or updating them.

`BusError` is the bus's one error (a stream, a publish, a consumer or a request that could not
be done), defined here where the stream layer starts; `cinebridge_common.bus` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError


class BusError(RuntimeError):
    """The bus could not do what was asked (with the subject and the cause)."""


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    max_age_s: float = 7 * 24 * 3600
    max_bytes: int = 1 << 30
    duplicate_window_s: float = 120.0
    discard: DiscardPolicy = DiscardPolicy.NEW  # backpressure instead of silent loss


#: Streams of the system: events are kept a week for late consumers; jobs until acked.
EVENTS = StreamSpec("CB_EVENTS", ["cb.evt.>"])
#: Jobs use limits retention (not work-queue) so several durables may filter the same subject
#: (e.g. a second sender instance group, a test) and acked jobs stay inspectable for a week.
JOBS = StreamSpec("CB_JOBS", ["cb.job.>"])
DLQ = StreamSpec("CB_DLQ", ["cb.dlq.>"], max_age_s=90 * 24 * 3600)
DEFAULT_STREAMS: tuple[StreamSpec, ...] = (EVENTS, JOBS, DLQ)


async def ensure_streams(js: JetStreamContext, specs: Sequence[StreamSpec]) -> list[str]:
    """Create or update streams; safe to call from every service at every start. Returns the
    names of the streams this call created (none existed)."""
    made: list[str] = []
    for spec in specs:
        config = StreamConfig(
            name=spec.name,
            subjects=spec.subjects,
            retention=spec.retention,
            storage=StorageType.FILE,
            max_age=spec.max_age_s,
            max_bytes=spec.max_bytes,
            duplicate_window=spec.duplicate_window_s,
            discard=spec.discard,
        )
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:  # another service made it meanwhile
                await js.update_stream(config)
            else:
                made.append(spec.name)
            continue
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)
    return made
