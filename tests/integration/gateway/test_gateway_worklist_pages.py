"""A 5,000-entry worklist from DCMTK wlmscpfs reaches the gateway API whole, a page at a time.

Each entry is a realistic ~4 KB (the demo worklist: every Table 18 attribute, code
sequences), so the worklist service's answer is ~20 MB: 20 times a NATS message. It travels
in chunks over the bus (`cinebridge_common.rpc`), the gateway keeps it and serves pages.
With the default cap of 1,000 entries the "too many results" answer (4 MB) reaches the user.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import WorklistServer, WorklistServersReply, WorklistServerUpsert
from cinebridge_testkit import demo_worklist, require_tool, running_app
from cinebridge_testkit.demo_worklist import DEMO_AE, write_worklist
from cinebridge_testkit.worklist_peers import Wlmscpfs
from cinebridge_worklist.app import WorklistApp
from cinebridge_worklist.settings import WorklistSettings

pytestmark = pytest.mark.integration

COUNT = 5000


@pytest.fixture(scope="session")
def large_worklist(request: pytest.FixtureRequest) -> Path:
    """`root/CBWORKLIST/*.wl`: 5,000 demo entries (kept in pytest's cache: dump2dcm is slow)."""
    require_tool("dump2dcm")
    today = dt.date.today()
    source = Path(demo_worklist.__file__).read_bytes()
    key = hashlib.sha256(source + f"{today}:{COUNT}".encode()).hexdigest()
    root = Path(request.config.cache.mkdir(f"worklist-{key[:16]}"))
    folder = root / DEMO_AE
    if len(list(folder.glob("*.wl"))) != COUNT or not (folder / "lockfile").exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_worklist(folder, COUNT, today)
    return root


@pytest.fixture(scope="session")
def large_wlmscpfs(
    large_worklist: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Wlmscpfs]:
    require_tool("wlmscpfs")
    logs = tmp_path_factory.mktemp("wlmscpfs-large")
    with Wlmscpfs(large_worklist, logs / "wlmscpfs.log") as server:
        yield server


def ris(port: int, max_entries: int | None) -> WorklistServer:
    # No Modality C key: every entry matches.
    return WorklistServer(
        id="ris", host="127.0.0.1", port=port, called_ae=DEMO_AE, max_entries=max_entries
    )


@pytest.fixture
async def worklist_service(
    nats_url: str, database_url: str, tmp_path: Path, large_wlmscpfs: Wlmscpfs
) -> AsyncIterator[WorklistApp]:
    settings = WorklistSettings(
        nats_url=nats_url,
        database_url=database_url,
        media_root=tmp_path / "media",
        instance_id=f"worklist-{uuid.uuid4().hex[:8]}",
        worklist_seed_servers=[ris(large_wlmscpfs.port, 6000)],
        worklist_timeout_s=90,
    )
    async with running_app(WorklistApp(settings)) as app:
        yield app


async def _all_pages(admin: Any, first: dict[str, Any]) -> list[dict[str, Any]]:
    items = list(first["items"])
    while len(items) < first["total"]:
        page = await admin.get(
            f"/api/v1/worklist/results/{first['result_id']}",
            params={"offset": len(items), "limit": 500},
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["offset"] == len(items) and body["total"] == first["total"]
        assert body["items"], "an empty page before the end"
        items += body["items"]
    return items


async def test_5000_entries_reach_the_api_whole_and_paged(
    worklist_service: WorklistApp,
    admin: Any,
    peer_bus: Bus,
    large_wlmscpfs: Wlmscpfs,
) -> None:
    admin.timeout = 180
    reply = await admin.post("/api/v1/worklist/query", json={"limit": 500})
    assert reply.status_code == 200, reply.text[:500]
    first = reply.json()
    assert first["total"] == COUNT and first["outcome"] == "complete", first["warnings"]
    assert len(first["items"]) == 500 and not first["too_many"]
    items = await _all_pages(admin, first)
    assert sorted(item["patient_id"] for item in items) == [f"PID{i:05d}" for i in range(COUNT)]
    assert all(item["dataset"]["00400100"]["Value"] for item in items)  # the whole dataset
    sizes = [len(str(item["dataset"])) for item in items[:50]]
    assert min(sizes) > 2500, sizes  # realistic entries, not stubs

    # Another user cannot page this answer; an unknown answer says to search again.
    other = await admin.get("/api/v1/worklist/results/" + "0" * 32)
    assert other.status_code == 404 and "search again" in other.json()["error"]["message"]

    # The service's default cap (1,000): "too many results" reaches the user with the list.
    upsert = WorklistServerUpsert(server=ris(large_wlmscpfs.port, None), by="test")
    assert (await peer_bus.request(upsert, WorklistServersReply, timeout_s=10)).ok
    capped = (await admin.post("/api/v1/worklist/query", json={})).json()
    assert capped["too_many"] and capped["total"] == 1000, capped.get("warnings")
    assert "too many results" in capped["warnings"][0]
