"""The delivery ledger's derivation (docs/purge.md "Ledger"): one state per study from the
catalog's, the converter's and the sender's answers, and what the purge policy will do."""

from __future__ import annotations

import datetime as dt

from cinebridge_common.station import StationSettings
from cinebridge_gateway.ledger import SenderView, derive, item_ledger
from cinebridge_gateway.ledger_repository import LocalStudy

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
ON = StationSettings(purge_enabled=True, purge_retention_days=2)


def study(**kw: object) -> LocalStudy:
    values: dict[str, object] = {
        "study_id": "s1",
        "held": False,
        "purged_at": None,
        "purging": False,
        "media": 2,
        "converted": 2,
        "instances": 2,
    }
    values.update(kw)
    return LocalStudy(**values)  # type: ignore[arg-type]


def sender(
    badges: list[str] | None = None, committed_at: dt.datetime | None = None, instances: int = 2
) -> SenderView:
    return SenderView(
        {"s1": badges} if badges else {},
        {"s1": committed_at} if committed_at else {},
        {"s1": instances} if committed_at else {},
    )


def test_states_along_the_way() -> None:
    assert derive(study(converted=1), sender(), ON, NOW).state == "captured"
    assert derive(study(), sender(), ON, NOW).state == "converted"
    assert derive(study(), sender(["sending", "sent"]), ON, NOW).state == "converted"
    assert derive(study(), sender(["sent", "requested"]), ON, NOW).state == "sent"
    fresh = derive(study(), sender(["committed"], NOW - dt.timedelta(hours=1)), ON, NOW)
    assert (fresh.state, fresh.purge) == ("committed", "scheduled")
    assert fresh.purge_at == NOW + dt.timedelta(days=2, hours=-1)
    due = derive(study(), sender(["committed"], NOW - dt.timedelta(days=3)), ON, NOW)
    assert (due.state, due.purge) == ("purgeable", "scheduled")
    gone = derive(study(purged_at=NOW, purging=True), sender(["committed"], NOW), ON, NOW)
    assert (gone.state, gone.purge) == ("purged", "purged")


def test_what_keeps_a_committed_study() -> None:
    old = NOW - dt.timedelta(days=30)
    held = derive(study(held=True), sender(["committed"], old), ON, NOW)
    assert (held.state, held.purge, held.held) == ("committed", "held", True)
    off = derive(study(), sender(["committed"], old), StationSettings(), NOW)
    assert (off.state, off.purge) == ("committed", "policy-off")
    # An instance the sender has not heard of: not all of the study is committed.
    partial = derive(study(instances=3), sender(["committed"], old, instances=2), ON, NOW)
    assert (partial.state, partial.purge) == ("sent", "kept-uncommitted")
    underway = derive(study(purging=True), sender(["committed"], old), ON, NOW)
    assert (underway.state, underway.purge) == ("purgeable", "purging")


def delivery(destination: str, state: str, commitment: str | None = None) -> dict[str, object]:
    return {
        "destination_name": destination,
        "state": state,
        "commitment_required": commitment is not None,
        "commitment": None if commitment == "asked-not-yet" else commitment,
    }


def test_an_item_s_states_per_destination() -> None:
    converted = {"state": "converted", "purged_at": None}
    assert item_ledger({"state": "captured", "purged_at": None}, [], None).state == "captured"
    assert item_ledger(converted, [], "converted").state == "converted"
    queued = item_ledger(converted, [delivery("pacs", "sent"), delivery("arc", "queued")], None)
    assert (queued.state, queued.destinations) == ("converted", {"pacs": "sent", "arc": "queued"})
    # No destination requires commitment: sent is as far as it goes.
    assert item_ledger(converted, [delivery("pacs", "sent")], "sent").state == "sent"
    # A destination requiring commitment not asked yet, another committed: not committed.
    waiting = [delivery("arc", "sent", "asked-not-yet"), delivery("pacs", "sent", "committed")]
    assert item_ledger(converted, waiting, "sent").state == "sent"
    both = [delivery("arc", "warning", "committed"), delivery("pacs", "sent", "committed")]
    done = item_ledger(converted, both, "committed")
    assert (done.state, done.destinations) == (
        "committed",
        {"arc": "committed", "pacs": "committed"},
    )
    # Sent twice to one destination (a Forward): the one not committed yet shows.
    twice = [delivery("arc", "sent", "committed"), delivery("arc", "sent", "requested")]
    assert item_ledger(converted, twice, "sent").destinations == {"arc": "requested"}
    assert item_ledger(converted, both, "purgeable").state == "purgeable"
    purged = {"state": "converted", "purged_at": NOW}
    assert item_ledger(purged, both, "purged").state == "purged"
