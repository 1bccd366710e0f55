"""pytest plugin (loaded from the root config): session NATS and PostgreSQL, fresh databases,
and no process left behind (`reaper`: orphans adopted, every descendant stopped at the end).

Fixtures:
- `nats_server`: an EmbeddedNats for the session (tests may stop/start it; it comes back).
- `nats_url`: its URL, after making sure it runs.
- `own_nats`: an EmbeddedNats of one test alone (the session one carries other tests' jobs,
  events and durable consumers), killed at its end; `own_bus`: a Bus on it, streams made.
- `postgres`: an EmbeddedPostgres for the session.
- `database_url`: a fresh, migrated database for one test (cloned from a migrated template).
- `db_pool`: an asyncpg pool on that database.
- `media_store`: a MediaStore in tmp_path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.db import create_pool, migrate
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres
from cinebridge_common.store import MediaStore

from . import reaper
from .databases import create_database, drop_database

TEMPLATE = "cb_template"


def pytest_configure(config: pytest.Config) -> None:
    # Orphans of the run's processes (a killed runner's services) stay ours to reap.
    reaper.become_subreaper()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """After every fixture's teardown: stop what is still running, and name it (a leak)."""
    left = reaper.reap()
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["processes left running by the tests, now stopped:", *left]
        if reporter is not None:
            reporter.write_line("\n".join(lines), yellow=True)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    if nats_server.proc is None or nats_server.proc.poll() is not None:
        nats_server.start()
    return str(nats_server.url)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
async def own_bus(own_nats: EmbeddedNats) -> AsyncIterator[Bus]:
    bus = await Bus.connect(own_nats.url, "test-own-bus")
    await bus.ensure_streams()
    yield bus
    await bus.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    asyncio.run(_make_template(server))
    yield server
    server.stop("immediate")


async def _make_template(server: EmbeddedPostgres) -> None:
    admin = await asyncpg.connect(server.dsn_for("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    pool = await create_pool(server.dsn_for(TEMPLATE))
    try:
        await migrate(pool)
    finally:
        await pool.close()


@pytest.fixture
async def database_url(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    name = await create_database(postgres, "t", TEMPLATE)
    yield postgres.dsn_for(name)
    await drop_database(postgres, name)


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture
def media_store(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "media")
