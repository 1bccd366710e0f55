"""The embedded runner supervises: a killed service, NATS or PostgreSQL comes back by itself with
a line saying which and why; a run directory or server store already in use is refused."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cinebridge_common.embedded import EmbeddedNats
from cinebridge_testkit.embedded_run import EmbeddedRun, embedded_runs, start_run

pytestmark = pytest.mark.integration


@pytest.fixture
def embedded_run(tmp_path: Path) -> Iterator[Callable[..., EmbeddedRun]]:
    with embedded_runs(tmp_path) as start:
        yield start


def _kill_and_wait_back(run: EmbeddedRun, name: str) -> None:
    pid = run.pid(name)
    assert pid, f"{name} is not running: {run.processes()}"
    os.kill(pid, signal.SIGKILL)
    run.wait(
        lambda: run.pid(name) not in (None, pid) and run.healthy(name),
        60,
        f"{name} did not come back after SIGKILL",
    )
    assert f"{name} exited (killed by SIGKILL)" in run.log()


def test_killed_service_nats_and_postgres_are_restarted(
    embedded_run: Callable[..., EmbeddedRun],
) -> None:
    run = embedded_run("--only", "scp")
    run.wait(lambda: run.healthy("scp"), 90, "the SCP did not become healthy")
    for name in ("scp", "postgres", "nats"):
        _kill_and_wait_back(run, name)
    # Whatever the SCP made of the outages, it runs and is healthy again with both back.
    run.wait(lambda: run.healthy("scp"), 90, "the SCP is not healthy after the outages")
    assert run.interrupt() == 0
    log = run.log()
    assert "scp stopped (rc=0)" in log, log[-3000:]
    assert "postgres stopped (rc=0)" in log and "nats stopped" in log, log[-3000:]
    assert not (run.run_dir / "postgres" / "pgdata" / "postmaster.pid").exists()


def test_a_second_run_on_the_same_directory_is_refused(
    embedded_run: Callable[..., EmbeddedRun], tmp_path: Path
) -> None:
    run = embedded_run("--only", "scp")
    run.wait(lambda: run.pid("nats") is not None, 90, "NATS did not start")
    second, log_path = start_run(tmp_path, ["--run-dir", str(run.run_dir), "--only", "scp"])
    assert second.wait(60) == 1
    text = log_path.read_text()
    assert f"another CineBridge run (pid {run.proc.pid}" in text, text
    assert run.proc.poll() is None, "the first run must be left alone"


def test_a_nats_server_already_on_the_store_is_refused_not_used(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stray = EmbeddedNats(run_dir / "nats")
    stray.start()
    try:
        proc, log_path = start_run(
            tmp_path, ["--run-dir", str(run_dir), "--random-ports", "--only", "scp"]
        )
        try:
            assert proc.wait(60) == 1
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        text = log_path.read_text()
        assert f"the NATS store {run_dir / 'nats'} is used by another server" in text, text
        assert stray.proc is not None
        assert f"pid {stray.proc.pid}" in text, text
        assert stray.proc.poll() is None, "the stray server was touched"
        assert not (run_dir / "pids.json").exists(), "something was started beside it"
    finally:
        stray.stop()
