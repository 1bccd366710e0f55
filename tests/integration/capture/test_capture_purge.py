"""The local purge policy end to end (docs/purge.md) on the station of purge_station.py: a
study is purged only once the sender lists it as committed, past retention or below the low
watermark, never while held; what it removed is audited once.

Planner runs that the test needs to see happen are called here (`purge_once` with the capture
process's own dependencies: the same lock, bus and database), so that no assertion depends on
when a periodic run falls; the restart and converter-down cases wait on the running processes."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from cinebridge_capture import purge_repository
from cinebridge_capture.purge import SenderUnavailable, purge_once
from cinebridge_common.messages.purge import MediaStoreLow
from cinebridge_testkit import wait_for
from playwright.async_api import expect

from .purge_station import SMALL, Station, Study

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def test_committed_past_retention_is_purged_uncommitted_and_held_are_kept(
    station: Station,
) -> None:
    committed = await station.study(snapshots=2)
    unsent = await station.study(send=False)
    held = await station.study()
    await station.committed(committed, held)
    hold = await station.admin.post(f"/api/v1/studies/{held.study_id}/hold")
    assert hold.status_code == 200, hold.text
    assert hold.json() == {"study_id": held.study_id, "held": True, "purge_started": False}
    unknown = await station.admin.post(f"/api/v1/studies/{uuid.uuid4()}/hold")
    assert unknown.status_code == 404, unknown.text

    # Off: nothing is purged, whatever is committed; the ledger says so per study.
    assert (await station.run()).started == []
    assert await ledger_of(station, committed, unsent, held) == [
        ("committed", "policy-off"),
        ("converted", "kept-uncommitted"),
        ("committed", "held"),
    ]
    # Retention not reached: kept, and the ledger says when it will go.
    await station.policy(purge_enabled=True, purge_retention_days=1, purge_low_watermark_percent=0)
    assert (await station.run()).started == []
    for study in (committed, unsent, held):
        await station.intact(study)
    scheduled = await station.ledger(committed)
    assert (scheduled["ledger"], scheduled["purge"]) == ("committed", "scheduled")
    assert scheduled["purge_at"] > datetime.datetime.now(datetime.UTC).isoformat()

    await station.policy(purge_retention_days=0)
    assert (await station.ledger(committed))["ledger"] == "purgeable"
    run = await station.run()
    assert run.started == [committed.study_id]
    await station.gone(committed, "retention")
    await station.intact(unsent)  # the sender never listed it
    await station.intact(held)
    assert (await station.ledger(committed))["ledger"] == "purged"

    # The room's current study is the held one: its line says so, Release ends the hold.
    async with station.browser() as page:
        line = page.locator("#study-ledger")
        await expect(line).to_have_attribute("data-purge", "held", timeout=20_000)
        await expect(line).to_contain_text("held: kept until released")
        await page.click("#hold-button")
        await expect(page.locator("#toast")).to_contain_text("Study released")
        await expect(line).to_have_attribute("data-purge", "scheduled", timeout=20_000)
    released = await station.admin.get(f"/api/v1/studies/{held.study_id}/ledger")
    assert released.status_code == 200 and released.json()["held"] is False, released.text
    assert (await station.run()).started == [held.study_id]
    await station.gone(held, "retention")
    await station.intact(unsent)
    ops = await station.ops()
    assert ops["ledger"]["purged"] == 2 and ops["ledger"]["converted"] == 1, ops
    assert ops["kept_uncommitted"] == 1 and not ops["warning"]
    actions = await station.pool.fetch(
        "SELECT action FROM gateway_audit_log WHERE study_id = $1 ORDER BY at", held.uuid
    )
    assert [a["action"] for a in actions] == ["study_held", "study_released", "study_purged"]


async def ledger_of(station: Station, *studies: Study) -> list[tuple[str, str]]:
    out = []
    for study in studies:
        entry = await station.ledger(study)
        out.append((entry["ledger"], entry["purge"]))
    return out


async def test_below_the_low_watermark_the_oldest_committed_go_first_and_the_operator_is_warned(
    station: Station,
) -> None:
    older = await station.study()
    unsent = await station.study(send=False)
    newer = await station.study()
    await station.committed(older, newer)
    # Every volume is below 100 % free: the watermark case, with a retention not reached.
    await station.policy(
        purge_enabled=True,
        purge_retention_days=365,
        purge_low_watermark_percent=100,
        purge_high_watermark_percent=100,
    )
    run = await station.run()
    assert run.started == [older.study_id, newer.study_id]  # oldest first
    assert not run.store_low
    await station.gone(older, "watermark")
    await station.gone(newer, "watermark")
    await station.intact(unsent)

    # Still below, nothing left that may go: warned (event and gauge), the uncommitted kept.
    again = await station.run()
    assert again.started == [] and again.store_low
    ops = await station.ops()
    assert ops["below_low_watermark"] and ops["warning"] and ops["kept_uncommitted"] == 1, ops
    async with station.browser() as page:
        await page.click("#nav-ops")
        await expect(page.locator("#purge-warning")).to_contain_text("nothing may be purged")

    async def warned() -> MediaStoreLow | None:
        return station.low_events[-1] if station.low_events else None

    low = await wait_for(warned, 30, 0.1, what="the low-space warning")
    assert low.kept_uncommitted == 1 and low.low_watermark_percent == 100
    await station.intact(unsent)


async def test_the_sender_unreachable_purges_nothing(station: Station) -> None:
    study = await station.study()
    await station.committed(study)
    station.sender.stop()
    await station.policy(purge_enabled=True, purge_retention_days=0)
    with pytest.raises(SenderUnavailable):
        await purge_once(station.deps())
    await station.intact(study)
    assert await station.pool.fetchval("SELECT count(*) FROM capture_purges") == 0


async def test_a_converter_down_when_the_job_is_sent_finishes_when_it_returns(
    station: Station,
) -> None:
    study = await station.study(snapshots=2)
    await station.committed(study)
    await station.stop_converter()
    await station.policy(purge_enabled=True, purge_retention_days=0)
    assert (await station.run()).started == [study.study_id]
    # Capture's half is done; the DICOM files wait for the converter, and the study is not
    # marked purged meanwhile.
    assert not any(station.store.resolve(rel).exists() for rel in study.media_rel)
    assert all(station.store.resolve(r).is_file() for r in await station.dicom_files(study))
    assert not await station.purged(study)
    # A converter killed in the middle of the job leaves some files removed and no row marked:
    # the job, never acknowledged, comes back and finishes (the totals count every instance).
    dicom = await station.dicom_files(study)
    station.store.delete(dicom[0])
    station.start_converter()
    await station.gone(study, "retention")


async def test_capture_killed_between_removing_files_and_marking_is_finished_on_restart(
    station: Station, capture_factory: Any
) -> None:
    study = await station.study(snapshots=2)
    await station.committed(study)
    await station.policy(purge_enabled=True, purge_retention_days=0)
    station.capture.kill()
    # What a kill right after the purge started and one file was removed leaves: the journal
    # row and the converter's job committed, one media file gone, no row marked.
    assert await purge_repository.start_purge(station.pool, study.study_id, "retention")
    station.store.delete(study.media_rel[0])
    marked = await station.pool.fetchval(
        "SELECT count(*) FROM media WHERE study_id = $1 AND purged_at IS NOT NULL", study.uuid
    )
    assert marked == 0
    # The restarted room's planner (its first run is at start) finishes the purge.
    restarted = capture_factory(
        "or2", [{"name": "endo", "url": SMALL}], CB_CAPTURE_PURGE_INTERVAL_S="1"
    )
    await station.client.wait_signal(restarted)
    await station.gone(study, "retention")


async def test_a_purge_made_while_the_gateway_is_down_is_audited_when_it_returns(
    station: Station,
) -> None:
    study = await station.study()
    await station.committed(study)
    await station.gateway.stop()
    await station.policy(purge_enabled=True, purge_retention_days=0)
    assert (await station.run()).started == [study.study_id]
    await wait_for(lambda: station.purged(study), 120, 0.2, what="the study purged")
    audited = "SELECT count(*) FROM gateway_audit_log WHERE study_id = $1"
    assert await station.pool.fetchval(audited, study.uuid) == 0
    await station.gateway.start()  # its durable consumer finds the event waiting
    await station.gone(study, "retention")
