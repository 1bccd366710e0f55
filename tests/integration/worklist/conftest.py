"""Worklist peers for the integration tests: one 1,000-entry worklist, served by two servers."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cinebridge_testkit import demo_worklist, require_tool
from cinebridge_testkit.demo_worklist import DEFAULT_COUNT, DEMO_AE, write_worklist
from cinebridge_testkit.worklist_peers import (
    ORTHANC_PLUGIN,
    OrthancWorklists,
    Wlmscpfs,
    WorklistPeer,
)


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
