"""Chaos on the embedded run: 200 snapshots saved and sent to DCMTK `storescp` while every service,
then NATS, then PostgreSQL is SIGKILLed once (each by its own PID from the runner's pids.json);
and NATS started again without its JetStream store while it held work of two stages.

Each killed process must be started again by the runner within 15 s and be ready again without
anyone's help, and at the end the PACS holds exactly the 200 instances, every media item is
converted, every delivery is sent and nothing waits in the outbox. Runs in `make test` and alone
with `make chaos`.

The 15 s bound holds the runner's part (noticing the exit, backoff, starting the process again),
which does not depend on the machine's load. Readiness after that is mostly Python start-up of
the service (imports), which on a loaded two-core box alone took over 9 s; it is waited for with a
generous bound and each figure printed, so that the test cannot fail on a busy CI machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cinebridge_common.devrun import SERVICES
from cinebridge_common.embedded import free_port
from cinebridge_testkit.embedded_run import EmbeddedRun, embedded_runs
from cinebridge_testkit.sender_harness import tool
from cinebridge_testkit.storage_peers import DcmtkStorescp
from pydicom import dcmread

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900)]

SNAPSHOTS = 200
RECOVERY_S = 15.0
ADMIN_PASSWORD = "chaos-test-admin-password"
#: Services first, those with work in flight at the front; then the bus, then the database.
KILL_ORDER = ("converter", "sender", "scp", "worklist", "capture", "gateway", "nats", "postgres")


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[DcmtkStorescp]:
    peer = DcmtkStorescp(tool("storescp"), tmp_path / "pacs" / "out", free_port(), "PACS")
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def run(tmp_path: Path, storescp: DcmtkStorescp) -> Iterator[EmbeddedRun]:
    pacs = {
        "name": "pacs",
        "ae_title": "PACS",
        "host": "127.0.0.1",
        "port": storescp.port,
        "enabled": True,
        "auto_send": True,
    }
    env = {
        "CB_GATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CB_SENDER_SEED_DESTINATIONS": json.dumps([pacs]),
        "CB_CAPTURE_SOURCES": json.dumps(
            [{"name": "endo", "url": "lavfi:testsrc2=size=640x360:rate=15"}]
        ),
    }
    with embedded_runs(tmp_path) as start:
        yield start(env=env)


def _ready_all(run: EmbeddedRun) -> bool:
    return all(run.healthy(name) for name in SERVICES)


def _kill_and_time_recovery(run: EmbeddedRun, name: str) -> tuple[float, float]:
    """SIGKILL `name` by its PID; seconds until it runs again (a new PID), and until the
    station is ready: the service's own /readyz, or for NATS and PostgreSQL every service's."""
    pid = run.pid(name)
    assert pid, f"{name} is not running: {run.processes()}"
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    run.wait(lambda: run.pid(name) not in (None, pid), 120, f"{name} was not started again")
    restarted = time.monotonic() - killed

    def ready() -> bool:
        return run.healthy(name) if name in SERVICES else _ready_all(run)

    run.wait(ready, 180, f"{name} did not become ready after its restart")
    return restarted, time.monotonic() - killed


def _login(client: httpx.Client) -> None:
    reply = client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert reply.is_success, reply.text
    client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]  # as the web UI sends it


def _snapshots(client: httpx.Client, count: int) -> str:
    study_id = None
    for _ in range(count):
        reply = client.post("/api/v1/rooms/room1/sources/endo/snapshot")
        assert reply.is_success, reply.text
        body = reply.json()
        assert study_id in (None, body["study_id"]), "snapshots spread over studies"
        study_id = body["study_id"]
    assert study_id
    return str(study_id)


async def _end_state(dsn: str, study_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        media = await conn.fetch(
            "SELECT state, count(*) AS n FROM media WHERE study_id = $1::uuid GROUP BY state",
            study_id,
        )
        deliveries = await conn.fetch(
            "SELECT state, count(*) AS n FROM deliveries WHERE study_id = $1::uuid GROUP BY state",
            study_id,
        )
        uids = await conn.fetch(
            "SELECT sop_instance_uid FROM instances WHERE study_id = $1::uuid", study_id
        )
        outbox = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    return {
        "media": {r["state"]: r["n"] for r in media},
        "deliveries": {r["state"]: r["n"] for r in deliveries},
        "instances": {r["sop_instance_uid"] for r in uids},
        "outbox_pending": outbox,
    }


def _received_uids(storescp: DcmtkStorescp) -> list[str]:
    """SOP Instance UIDs of every file storescp wrote (a resent duplicate counts twice)."""
    return [
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in storescp.out_dir.iterdir()
        if p.is_file()
    ]


def _settled(state: dict[str, Any], received: set[str], count: int = SNAPSHOTS) -> bool:
    return (
        state["media"] == {"converted": count}
        and state["deliveries"] == {"sent": count}
        and state["outbox_pending"] == 0
        and len(state["instances"]) == count
        and received == state["instances"]
    )


def _wait_settled(
    run: EmbeddedRun, storescp: DcmtkStorescp, dsn: str, study_id: str, count: int
) -> list[str]:
    """Poll the end state for up to 300 s; returns the UIDs the PACS received once settled."""
    deadline = time.monotonic() + 300
    state: dict[str, Any] = {}
    received: list[str] = []
    while time.monotonic() < deadline:
        try:
            state = asyncio.run(_end_state(dsn, study_id))
        except (OSError, asyncpg.PostgresError):  # still recovering: look again
            time.sleep(2)
            continue
        received = _received_uids(storescp)
        if _settled(state, set(received), count):
            break
        time.sleep(2)
    summary = {k: v for k, v in state.items() if k != "instances"}
    assert _settled(state, set(received), count), (
        f"not settled: {summary}, PACS has {len(set(received))} distinct of {count}\n"
        + run.log()[-5000:]
    )
    return received


def test_every_process_killed_once_loses_nothing_and_recovers_alone(
    run: EmbeddedRun, storescp: DcmtkStorescp
) -> None:
    ports = run.ports()
    run.wait(lambda: _ready_all(run), 120, "the station did not become ready")
    dsn = f"postgresql://cinebridge@127.0.0.1:{ports['postgres']}/cinebridge"
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['gateway']}", timeout=30) as client:
        _login(client)
        study_id = _snapshots(client, SNAPSHOTS)
        saved = client.post(f"/api/v1/studies/{study_id}/save", json={})
        assert saved.status_code == 202 and saved.json()["accepted"] == SNAPSHOTS, saved.text

    recovery = {name: _kill_and_time_recovery(run, name) for name in KILL_ORDER}
    print(
        "seconds to restarted / ready:",
        {name: (round(r, 1), round(s, 1)) for name, (r, s) in recovery.items()},
    )

    received = _wait_settled(run, storescp, dsn, study_id, SNAPSHOTS)
    assert len(set(received)) == SNAPSHOTS
    # Health shows a restart the supervisor hid: the converter killed again, under the
    # gateway that now runs, is counted, with how its previous run ended.
    _kill_and_time_recovery(run, "converter")
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['gateway']}", timeout=30) as client:
        _login(client)

        def restart_shown() -> bool:
            rows = client.get("/api/health").json()["instances"]
            return any(
                r["service"] == "converter"
                and r["restarts"] >= 1
                and r["previous_end"] == "ended unexpectedly"
                for r in rows
            )

        run.wait(restart_shown, 120, "the converter's restart is not in /api/health")
    slow = {name: round(r, 1) for name, (r, _) in recovery.items() if r > RECOVERY_S}
    assert not slow, f"started again later than {RECOVERY_S} s: {slow} (all: {recovery})"
    log = run.log()
    for name in KILL_ORDER:  # the runner said which process exited and why
        assert f"{name} exited (killed by SIGKILL)" in log, name


#: Snapshots of each stage of the store-loss test.
STAGE = 20


def _count(dsn: str, sql: str, *args: object) -> int:
    async def fetch() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return int(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(fetch())


@contextlib.contextmanager
def _frozen(run: EmbeddedRun, *names: str) -> Iterator[None]:
    """SIGSTOP the named services (by PID) for the block: their consumers take nothing, while
    the runner still sees them running; SIGCONT after, also when the block fails."""
    pids = {name: run.pid(name) for name in names}
    assert all(pids.values()), f"not running: {run.processes()}"
    for pid in pids.values():
        os.kill(int(pid or 0), signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid or 0), signal.SIGCONT)


def _lose_nats_store(run: EmbeddedRun) -> None:
    """NATS SIGKILLed with its JetStream store moved away (a lost volume): the runner starts
    it again on an empty store."""
    pid = run.pid("nats")
    assert pid, f"nats is not running: {run.processes()}"
    store = run.run_dir / "nats" / "js"
    assert store.is_dir(), f"no JetStream store at {store}"
    store.rename(store.with_name("js-lost"))
    os.kill(pid, signal.SIGKILL)
    run.wait(lambda: run.pid("nats") not in (None, pid), 120, "nats was not started again")


def test_work_lost_with_the_jetstream_store_is_done_once(
    run: EmbeddedRun, storescp: DcmtkStorescp
) -> None:
    """NATS killed and started again without its JetStream store while the store held work of
    two stages: converted instances the sender had not taken yet (their InstanceCreated), and
    saved items the converter had not taken yet (their ConvertMedia jobs). PostgreSQL's outbox
    still has both; the owners publish them again (`cinebridge_common.replay`), and every item
    ends converted and sent once. Before, the streams came back empty: the first stage was
    never queued for sending and the second never converted."""
    ports = run.ports()
    run.wait(lambda: _ready_all(run), 120, "the station did not become ready")
    dsn = f"postgresql://cinebridge@127.0.0.1:{ports['postgres']}/cinebridge"
    converted = "SELECT count(*) FROM instances WHERE study_id = $1::uuid"
    # The two stages' messages not yet in the JetStream store (a frozen process may hold other
    # rows locked mid-pass: they go when it runs again).
    pending = """SELECT count(*) FROM outbox WHERE published_at IS NULL
                 AND subject IN ('cb.job.converter.convert', 'cb.evt.instance.created')"""
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['gateway']}", timeout=30) as client:
        _login(client)
        with _frozen(run, "sender"):
            study_id = _snapshots(client, STAGE)
            saved = client.post(f"/api/v1/studies/{study_id}/save", json={})
            assert saved.status_code == 202, saved.text
            run.wait(
                lambda: _count(dsn, converted, study_id) == STAGE,
                300,
                "the first stage was not converted",
            )
            run.wait(lambda: _count(dsn, pending) == 0, 120, "first stage not announced")
            with _frozen(run, "converter"):
                assert _snapshots(client, STAGE) == study_id
                saved = client.post(f"/api/v1/studies/{study_id}/save", json={})
                assert saved.status_code == 202, saved.text
                run.wait(lambda: _count(dsn, pending) == 0, 120, "second stage not queued")
                _lose_nats_store(run)
    received = _wait_settled(run, storescp, dsn, study_id, 2 * STAGE)
    assert len(received) == 2 * STAGE, "an instance reached the PACS more than once"


@contextlib.contextmanager
def _postgres_kept_away(run: EmbeddedRun) -> Iterator[None]:
    """PostgreSQL SIGKILLed (a crash: no shutdown, WAL recovery at the next start) and kept
    from starting again for the block: its pid file names a live process (this one), which
    the runner's start check refuses, so its port refuses connections until the block ends."""
    pid = run.pid("postgres")
    assert pid, f"postgres is not running: {run.processes()}"
    pidfile = run.run_dir / "postgres" / "pgdata" / "postmaster.pid"
    os.kill(pid, signal.SIGKILL)
    # The runner waits 0.5 s at least before starting it again: time enough to write.
    crashed = pidfile.read_text()
    pidfile.write_text(f"{os.getpid()}\n" + crashed.split("\n", 1)[1])
    try:
        yield
    finally:
        pidfile.write_text(crashed)


def _says_postgres_down(run: EmbeddedRun, name: str) -> bool:
    url = run.processes()[name]["health_url"]
    try:
        reply = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.HTTPError:
        return False
    state = str(reply.json().get("dependencies", {}).get("postgres", ""))
    return reply.status_code == 503 and state.startswith("down")


@pytest.mark.parametrize("down_s", [20, 120])
def test_postgres_crashed_and_away_every_service_stays_up_says_why_and_resumes(
    run: EmbeddedRun, storescp: DcmtkStorescp, down_s: int
) -> None:
    """PostgreSQL SIGKILLed (a crash: no shutdown, WAL recovery at the next start) and kept
    away `down_s` seconds, its port refusing: no service exits, each says on /readyz that
    PostgreSQL is down, /api/health answers naming it, a snapshot is refused with 503; after
    it, every service is ready again and the study is saved and delivered whole."""
    ports = run.ports()
    run.wait(lambda: _ready_all(run), 120, "the station did not become ready")
    dsn = f"postgresql://cinebridge@127.0.0.1:{ports['postgres']}/cinebridge"
    pids = {name: run.pid(name) for name in SERVICES}
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['gateway']}", timeout=30) as client:
        _login(client)
        study_id = _snapshots(client, 5)
        with _postgres_kept_away(run):
            started = time.monotonic()
            for name in SERVICES:
                run.wait(lambda n=name: _says_postgres_down(run, n), 120, f"{name} /readyz")
            health = client.get("/api/health")
            assert health.status_code == 200, health.text
            assert health.json()["components"]["postgres"]["state"] == "down"
            refused = client.post("/api/v1/rooms/room1/sources/endo/snapshot")
            assert refused.status_code == 503, refused.text
            time.sleep(max(0.0, down_s - (time.monotonic() - started)))  # the outage itself
            assert {name: run.pid(name) for name in SERVICES} == pids, run.log()[-4000:]
        run.wait(lambda: _ready_all(run), 300, "the station did not become ready again")
        assert {name: run.pid(name) for name in SERVICES} == pids, "a service exited"
        saved = client.post(f"/api/v1/studies/{study_id}/save", json={})
        assert saved.status_code == 202, saved.text
    _wait_settled(run, storescp, dsn, study_id, 5)
