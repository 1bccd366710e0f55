"""Worklist integration tests: one 1,000-entry worklist served by two outside servers, the
service started in this process or as a process of its own, and a bus client."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import WorklistServer, WorklistServersList, WorklistServersReply
from cinebridge_testkit import demo_worklist, require_tool, running_app, wait_for
from cinebridge_testkit.demo_worklist import DEFAULT_COUNT, DEMO_AE, write_worklist
from cinebridge_testkit.worklist_peers import (
    ORTHANC_PLUGIN,
    OrthancWorklists,
    ServiceProcess,
    Wlmscpfs,
    WorklistPeer,
)
from cinebridge_worklist.app import WorklistApp
from cinebridge_worklist.settings import WorklistSettings
from pydantic import SecretStr


@pytest.fixture(scope="session")
def worklist_today() -> dt.date:
    return dt.date.today()


@pytest.fixture(scope="session")
def worklist_root(request: pytest.FixtureRequest, worklist_today: dt.date) -> Path:
    """`root/CBWORKLIST/*.wl`: the 1,000 entries of `demo_worklist`, made with dump2dcm.

    Making them takes ~15-30 s on a busy 2-core box, so they are kept in pytest's cache,
    keyed by the date, the count and the generator's source (a fresh CI run makes them once).
    """
    require_tool("dump2dcm")
    source = Path(demo_worklist.__file__).read_bytes()
    key = hashlib.sha256(source + f"{worklist_today}:{DEFAULT_COUNT}".encode()).hexdigest()
    root = Path(request.config.cache.mkdir(f"worklist-{key[:16]}"))
    folder = root / DEMO_AE
    if len(list(folder.glob("*.wl"))) != DEFAULT_COUNT or not (folder / "lockfile").exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_worklist(folder, DEFAULT_COUNT, worklist_today)
    return root


@pytest.fixture(scope="session")
def wlmscpfs_peer(
    worklist_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorklistPeer]:
    require_tool("wlmscpfs")
    logs = tmp_path_factory.mktemp("wlmscpfs")
    with Wlmscpfs(worklist_root, logs / "wlmscpfs.log") as server:
        yield WorklistPeer("wlmscpfs", server.port, DEMO_AE)


@pytest.fixture(scope="session")
def orthanc_peer(
    worklist_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorklistPeer]:
    require_tool("Orthanc")
    if not ORTHANC_PLUGIN.exists():
        pytest.fail(f"{ORTHANC_PLUGIN} is missing (Debian package orthanc)")
    work = tmp_path_factory.mktemp("orthanc")
    with OrthancWorklists(worklist_root / DEMO_AE, work, work / "orthanc.log") as server:
        yield WorklistPeer("orthanc", server.port, server.aet)


@pytest.fixture(params=["wlmscpfs", "orthanc"])
def peer(request: pytest.FixtureRequest) -> WorklistPeer:
    """Each test runs against both outside worklist servers, loaded with the same files."""
    return request.getfixturevalue(f"{request.param}_peer")  # type: ignore[no-any-return]


def worklist_settings(
    nats_url: str,
    database_url: str,
    tmp_path: Path,
    servers: list[WorklistServer],
    **overrides: Any,
) -> WorklistSettings:
    """The service's settings for a test: its own instance id, these servers seeded."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "media_root": tmp_path / "media",
        "instance_id": f"worklist-{uuid.uuid4().hex[:8]}",
        "worklist_seed_servers": servers,
        **overrides,
    }
    return WorklistSettings(**values)


def running_worklist(settings: WorklistSettings) -> AbstractAsyncContextManager[WorklistApp]:
    """The worklist service in this process, from ready until the block ends."""
    return running_app(WorklistApp(settings))


def worklist_process(settings: WorklistSettings, log: Path) -> ServiceProcess:
    """The worklist service as a process of its own (`python -m cinebridge_worklist`), with
    these settings in its environment, so a test can SIGKILL it mid-work."""
    dumped = settings.model_dump(mode="json", exclude_none=True)
    env: dict[str, str] = {}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            env[f"CB_{name.upper()}"] = value.get_secret_value()
        elif name in dumped:
            text = dumped[name]
            env[f"CB_{name.upper()}"] = json.dumps(text) if isinstance(text, list) else str(text)
    return ServiceProcess("cinebridge_worklist", env, log)


async def until_serving(client: Bus, timeout_s: float = 120.0) -> None:
    """Until a worklist process answers on the bus and its MPPS job consumer exists (it is
    made after every event consumer): what is published from then on reaches it."""

    async def serving() -> bool:
        try:
            reply = await client.request(WorklistServersList(), WorklistServersReply, 2.0)
            await client.js.consumer_info("CB_JOBS", "worklist-mpps")
        except Exception:
            return False
        return reply.ok

    await wait_for(serving, timeout_s, 0.2, what="the worklist service serving")


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, f"worklist-test-{uuid.uuid4().hex[:6]}")
    yield bus
    await bus.close()
