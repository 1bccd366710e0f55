"""The events an application binds handlers to, in the shape pynetdicom's `evt` module has.

A service declares one binding table, `[(Evt.C_STORE, handle_store), ...]`, and hands it to its
`ApplicationEntity`. Notifications (association accepted, released, aborted…) return nothing;
intervention events return what the protocol needs:

| event | handler(assoc, ...) returns |
|---|---|
| `REQUESTED` | `Rejection` to refuse the A-ASSOCIATE-RQ, or None to go on negotiating |
| `C_ECHO` | a status (PS3.7 9.1.5.1.4) |
| `C_STORE` | a `StoreSink` that receives the data set's bytes as they arrive |
| `C_FIND`, `N_CREATE`, `N_SET`, `N_ACTION`, `N_EVENT_REPORT` | (status, data set or None) pairs |
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Evt(enum.Enum):
    # Notifications.
    ACCEPTED = "association accepted"
    REJECTED = "association rejected"
    RELEASED = "association released"
    ABORTED = "association aborted"
    PROTOCOL_ERROR = "protocol error"
    TIMEOUT = "timeout"
    CONN_CLOSED = "connection closed"
    #: The response to a request the acceptor sent (`send_request`): (context, command).
    RESPONSE = "response received"
    # Interventions.
    REQUESTED = "association requested"
    C_ECHO = "C-ECHO"
    C_STORE = "C-STORE"
    C_FIND = "C-FIND"
    N_CREATE = "N-CREATE"
    N_SET = "N-SET"
    N_ACTION = "N-ACTION"
    N_EVENT_REPORT = "N-EVENT-REPORT"


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ (PS3.8 Table 9-21): result 1 permanent / 2 transient, source, reason."""

    result: int
    source: int
    reason: int
    why: str


class StoreSink(Protocol):
    """Where a C-STORE data set goes while it arrives (PS3.7 9.3.1): written piece by piece,
    then `finish()` returns the C-STORE-RSP status; `discard()` if the association ends first."""

    def write(self, data: memoryview) -> object: ...

    def finish(self) -> int: ...

    def discard(self) -> None: ...


Handler = Callable[..., Any]
Binding = tuple[Evt, Handler]
Responses = Iterable[tuple[int, bytes | None]]


def binding_table(bindings: Sequence[Binding]) -> dict[Evt, Handler]:
    """One handler per event; binding an event twice is a mistake in the table."""
    table: dict[Evt, Handler] = {}
    for event, handler in bindings:
        if event in table:
            raise ValueError(f"{event.name} bound twice")
        table[event] = handler
    return table
