"""The SCP's /metrics answer ingest questions: associations, instances, bytes, latencies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cinebridge_testkit import wait_for
from cinebridge_testkit.metrics import moved, scrape, value
from pynetdicom import AE

ECHO = "1.2.840.10008.1.1"


def associate(port: int, calling: str) -> bool:
    ae = AE(ae_title=calling)
    ae.acse_timeout = 5
    ae.add_requested_context(ECHO)
    assoc = ae.associate("127.0.0.1", port, ae_title="CINEBRIDGE")
    ok = bool(assoc.is_established)
    if ok:
        assoc.release()
    return ok


async def test_ingest_counters_move(scp_factory: Any, dicom: Any, tmp_path: Path) -> None:
    path = dicom.make_ct(tmp_path / "a.dcm", size=64)
    async with scp_factory(scp_allowed_calling_ae_titles=["PYSCU", "ECHOSCU"]) as scp:
        assert scp.app.ctx is not None
        url = scp.app.ctx.health.url
        before = await scrape(url)
        assert await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [path]) == [0]
        assert await asyncio.to_thread(scp.echo) == 0
        assert not await asyncio.to_thread(associate, scp.port, "INTRUDER")
        after = await scrape(url)
        size = await scp.pool.fetchval("SELECT size FROM received_instances")

        async def all_closed() -> bool:
            # A connection's thread ends after its peer saw the release: wait for it.
            return value(await scrape(url), "cinebridge_scp_associations_open") == 0

        await wait_for(all_closed, 30, interval_s=0.1, what="no association open")

    assert moved(before, after, "cinebridge_scp_instances_received_total") == 1
    assert moved(before, after, "cinebridge_scp_received_bytes_total") == size
    for histogram in ("store", "fsync", "index"):
        name = f"cinebridge_scp_{histogram}_duration_seconds_count"
        assert moved(before, after, name) == 1, name
    assert moved(before, after, "cinebridge_scp_associations_accepted_total") == 2
    assert moved(before, after, "cinebridge_scp_echo_requests_total") == 1
    rejected = "cinebridge_scp_associations_rejected_total"
    assert moved(before, after, rejected, reason="calling_ae_title") == 1
    assert moved(before, after, "cinebridge_scp_associations_ended_total", how="released") == 2
    assert value(after, "cinebridge_service_info", {"service": "scp"}) >= 1


async def test_refused_store_is_counted_by_status(
    scp_factory: Any, dicom: Any, tmp_path: Path
) -> None:
    """An instance larger than the limit is refused A700 (out of resources) and counted so."""
    path = dicom.make_ct(tmp_path / "big.dcm", size=256)
    async with scp_factory(scp_max_instance_bytes=1024) as scp:
        assert scp.app.ctx is not None
        before = await scrape(scp.app.ctx.health.url)
        statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [path])
        after = await scrape(scp.app.ctx.health.url)
    assert statuses == [0xA700]
    assert moved(before, after, "cinebridge_scp_instances_refused_total", status="A700") == 1
    assert moved(before, after, "cinebridge_scp_instances_received_total") == 0
