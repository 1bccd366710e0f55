"""The delivery ledger of a study (docs/purge.md "Ledger"): one state from its owners' data —
captured → converted → sent → committed → purgeable → purged — and what the purge policy will
do with it. The catalog and the converter are read (ledger_repository); the sender is asked
(`cb.rpc.sender.commitment.status` and `.committed`), never inferred from delivery rows."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    CommitmentStatusReply,
    CommitmentStatusRequest,
    CommittedStudiesReply,
    CommittedStudiesRequest,
)
from cinebridge_common.station import StationSettings

from . import ledger_repository as repo

LedgerState = Literal["captured", "converted", "sent", "committed", "purgeable", "purged"]
STATES: tuple[LedgerState, ...] = (
    "captured",
    "converted",
    "sent",
    "committed",
    "purgeable",
    "purged",
)
#: A destination's badge (sender) once the study's every instance reached it.
DELIVERED = {"sent", "requested", "committed", "commit-failed", "unsupported"}
PurgePlan = Literal["purged", "purging", "held", "kept-uncommitted", "policy-off", "scheduled"]


class SenderUnavailable(Exception):
    """The sender did not answer: the ledger cannot say what was sent or committed."""


@dataclass(frozen=True)
class Ledger:
    study_id: str
    state: LedgerState
    held: bool
    #: What the purge policy will do: purged / purging (started) / held / kept-uncommitted /
    #: policy-off / scheduled (at `purge_at`, or at the next run when that is past).
    purge: PurgePlan
    purge_at: dt.datetime | None
    purged_at: dt.datetime | None


@dataclass(frozen=True)
class SenderView:
    #: Per study, one badge per destination.
    badges: dict[str, list[str]]
    #: Per study every destination requiring commitment committed: its last commitment.
    committed_at: dict[str, dt.datetime]
    #: ... and how many instances of it the sender has.
    instances: dict[str, int]


async def ask_sender(bus: Bus, study_ids: list[str], timeout_s: float) -> SenderView:
    try:
        status = await bus.request(
            CommitmentStatusRequest(study_ids=study_ids), CommitmentStatusReply, timeout_s
        )
        committed = await bus.request(
            CommittedStudiesRequest(study_ids=study_ids, limit=len(study_ids)),
            CommittedStudiesReply,
            timeout_s,
        )
    except Exception as exc:
        raise SenderUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if not status.ok or not committed.ok:
        raise SenderUnavailable(status.error or committed.error or "refused")
    badges: dict[str, list[str]] = {}
    for s in status.studies:
        badges.setdefault(s.study_id, []).append(s.state)
    listed = set(committed.study_ids)
    committed_at = {s: at for s, at in committed.committed_at.items() if s in listed}
    return SenderView(badges, committed_at, {s: committed.instances.get(s, 0) for s in listed})


def derive(
    local: repo.LocalStudy, sender: SenderView, station: StationSettings, now: dt.datetime
) -> Ledger:
    committed_at = sender.committed_at.get(local.study_id)
    # As the purge planner counts it: every instance the converter made is among the committed.
    made = local.instances
    committed = (
        committed_at is not None and made > 0 and sender.instances.get(local.study_id, 0) >= made
    )
    badges = sender.badges.get(local.study_id, [])
    purge_at = (
        committed_at + dt.timedelta(days=station.purge_retention_days) if committed_at else None
    )
    plan: PurgePlan
    if local.purged_at is not None:
        plan = "purged"
    elif local.purging:
        plan = "purging"
    elif local.held:
        plan = "held"
    elif not committed:
        plan = "kept-uncommitted"
    elif not station.purge_enabled:
        plan = "policy-off"
    else:
        plan = "scheduled"
    state: LedgerState
    if plan == "purged":
        state = "purged"
    elif plan == "purging" or (plan == "scheduled" and purge_at is not None and purge_at <= now):
        state = "purgeable"
    elif committed:
        state = "committed"
    elif badges and all(b in DELIVERED for b in badges):
        state = "sent"
    elif local.media and local.converted == local.media and local.instances:
        state = "converted"
    else:
        state = "captured"
    return Ledger(local.study_id, state, local.held, plan, purge_at, local.purged_at)


#: A delivery's part in an item's ledger: past sending (the sender's `delivery_states`).
_DELIVERED_STATES = {"sent", "warning"}
#: Storage Commitment of a delivery (PS3.4 Annex J) as a destination's item state.
_COMMITMENT_STATES = {
    "committed": "committed",
    "requested": "requested",
    "failed": "commit-failed",
    "unsupported": "unsupported",
}


@dataclass(frozen=True)
class ItemLedger:
    """One media item's place in the ledger, and each destination's: sent, requested,
    committed, commit-failed, unsupported, or the delivery's state while it is not sent."""

    state: LedgerState
    destinations: dict[str, str]


def _destination_state(delivery: dict[str, Any]) -> str:
    if delivery["state"] not in _DELIVERED_STATES:
        return str(delivery["state"])
    return _COMMITMENT_STATES.get(delivery.get("commitment") or "", "sent")


def item_ledger(
    media: dict[str, Any], deliveries: list[dict[str, Any]], study: LedgerState | None
) -> ItemLedger:
    """From the catalog's media row, the sender's deliveries of the instances made of it (its
    read model) and the study's state: captured → converted → sent (every destination) →
    committed (every destination requiring it committed) → purgeable (its study) → purged."""
    destinations: dict[str, str] = {}
    for d in deliveries:
        # A destination with several deliveries of the item (a Forward) shows what is not
        # committed yet, if anything.
        if destinations.get(d["destination_name"], "committed") == "committed":
            destinations[d["destination_name"]] = _destination_state(d)
    state: LedgerState
    required = [d for d in deliveries if d.get("commitment_required")]
    if media.get("purged_at") is not None:
        state = "purged"
    elif study in ("purgeable", "purged"):
        state = "purgeable"
    elif media["state"] != "converted":
        state = "captured"
    elif not deliveries or any(d["state"] not in _DELIVERED_STATES for d in deliveries):
        state = "converted"
    elif required and all(d["commitment"] == "committed" for d in required):
        state = "committed"
    else:
        state = "sent"
    return ItemLedger(state, destinations)


async def ledgers(
    pool: asyncpg.Pool,
    bus: Bus,
    study_ids: list[uuid.UUID],
    station: StationSettings,
    timeout_s: float,
) -> list[Ledger]:
    """The ledger of each study that exists (at most 1000: what the sender answers at once)."""
    local = await repo.local_studies(pool, study_ids)
    if not local:
        return []
    sender = await ask_sender(bus, [s.study_id for s in local], timeout_s)
    now = dt.datetime.now(dt.UTC)
    return [derive(s, sender, station, now) for s in local]
