"""Purged data is refused clearly everywhere (docs/purge.md "After a purge"): once the policy
removed a study's local files, every request that needs them — the media file (thumbnail,
playback, download), an export of any kind, Forward, a delivery's retry, Save (convert again),
a file added to it — is answered 410 with the date and the reason the UI shows, never a 500
or a half-written export; a capture while it is still the room's current study is refused
with the reason; a study with its files is served as before."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .purge_station import ROOM, Station

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def refused(reply: httpx.Response, day: str) -> None:
    assert reply.status_code == 410, reply.text
    error = reply.json()["error"]
    assert error["code"] == "study_purged"
    assert error["message"].startswith(
        f"study purged on {day}: local data removed after commitment"
    ), error


async def test_every_request_for_a_purged_study_s_files_is_refused_with_the_date(
    station: Station,
) -> None:
    kept, study = await station.kept_and_committed()
    assert (await station.run()).started == [study.study_id]
    await station.gone(study, "retention")
    purged_at = await station.pool.fetchval(
        "SELECT purged_at FROM studies WHERE id = $1", study.uuid
    )
    day = f"{purged_at:%Y-%m-%d}"
    admin = station.admin
    exports = station.store.root / "exports"
    exported_before = sorted(exports.rglob("*")) if exports.exists() else []

    detail = (await admin.get(f"/api/v1/studies/{study.study_id}")).json()
    assert len(detail["media"]) == 2 and detail["deliveries"], detail
    for media in detail["media"]:  # the thumbnail, the player and the download
        refused(await admin.get(media["content_url"]), day)
    for kind in ("mp4", "dicomdir", "deid"):
        for target in ("download", "folder"):
            body = {"kind": kind, "target": target}
            refused(await admin.post(f"/api/v1/studies/{study.study_id}/export", json=body), day)
    assert (sorted(exports.rglob("*")) if exports.exists() else []) == exported_before
    destination = await station.pool.fetchval("SELECT id FROM destinations LIMIT 1")
    forward = {"destination_ids": [str(destination)]}
    refused(await admin.post(f"/api/v1/studies/{study.study_id}/forward", json=forward), day)
    delivery = detail["deliveries"][0]["id"]
    refused(await admin.post(f"/api/v1/deliveries/{delivery}/retry"), day)
    refused(await admin.post(f"/api/v1/studies/{study.study_id}/save", json={}), day)
    current = await admin.get(f"/api/v1/rooms/{ROOM}/study")
    assert current.status_code == 200, current.text
    assert current.json()["study"]["id"] == study.study_id
    refused(await admin.post(f"/api/v1/rooms/{ROOM}/upload", content=b"\xff\xd8\xff"), day)
    # The room still names it as current; a capture into it is refused with the reason (not
    # attached to a study whose data is gone), and nothing is written for it.
    media_before = await station.pool.fetchval(
        "SELECT count(*) FROM media WHERE study_id = $1", study.uuid
    )
    for action in ("snapshot", "record_start"):
        reply = await admin.post(f"/api/v1/rooms/{ROOM}/sources/endo/{action}")
        assert reply.status_code == 409, reply.text
        message = reply.json()["error"]["message"]
        assert message.startswith(f"the study was purged on {day}"), message
        assert "start a new study" in message
    media_after = await station.pool.fetchval(
        "SELECT count(*) FROM media WHERE study_id = $1", study.uuid
    )
    assert media_after == media_before
    recordings = await station.pool.fetchval(
        "SELECT count(*) FROM capture_recordings WHERE study_id = $1 AND started_at > $2",
        study.uuid,
        purged_at,
    )
    assert recordings == 0
    # Nothing was asked of the services for it: no job, no forward, no second purge.
    jobs = await station.pool.fetchval(
        """SELECT count(*) FROM outbox WHERE created_at > $1
           AND (subject LIKE 'cb.job.sender.%' OR subject LIKE 'cb.job.converter.convert%')""",
        purged_at,
    )
    assert jobs == 0
    actions = await station.pool.fetch(
        "SELECT action FROM gateway_audit_log WHERE study_id = $1 AND at > $2",
        study.uuid,
        purged_at,
    )
    assert {a["action"] for a in actions} <= {"study_purged"}, actions

    # The study kept (never committed) is served as before: the refusals are about purging.
    await station.intact(kept)
    kept_detail = (await admin.get(f"/api/v1/studies/{kept.study_id}")).json()
    media = await admin.get(kept_detail["media"][0]["content_url"])
    assert media.status_code == 200 and media.content[:2] == b"\xff\xd8"
    saved = await admin.post(f"/api/v1/studies/{kept.study_id}/save", json={})
    assert saved.status_code == 202, saved.text
    unknown = await admin.post(f"/api/v1/studies/{uuid.uuid4()}/export", json={"kind": "mp4"})
    assert unknown.status_code == 404, unknown.text
