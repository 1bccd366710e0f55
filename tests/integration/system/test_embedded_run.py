"""`make run`'s runner brings every service to "up" in GET /api/health (within 30 s when the
machine is quiet; the bound is wider for a loaded CI box), and Ctrl-C
(SIGINT) stops all of it within 10 s per service, leaving no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cinebridge_common.devrun import SERVICES

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "system-test-admin-password"
#: How long every service may take to report "up" before the test calls it a hang.
UP_WITHIN_S = 120


def _children(pid: int) -> set[int]:
    """Every descendant of pid (from /proc), so leftovers can be found after the stop."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_run_brings_every_service_up_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = os.environ | {"CB_GATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD, "CB_LOG_LEVEL": "INFO"}
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cinebridge_common.devrun",
            "--run-dir",
            str(run_dir),
            "--random-ports",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    started = time.monotonic()
    try:
        ports = None
        while ports is None and time.monotonic() - started < 20:
            if (run_dir / "ports.json").exists():
                ports = json.loads((run_dir / "ports.json").read_text())
            time.sleep(0.1)
        assert ports, "the runner did not choose its ports"
        base = f"http://127.0.0.1:{ports['gateway']}"
        up: set[str] = set()
        last: object = None
        with httpx.Client(base_url=base, timeout=3) as client:
            # 30 s on a quiet machine; a loaded CI box starting eight processes at once (each
            # importing pydicom, PyAV, asyncpg) once needed more, so the bound only catches a hang.
            while time.monotonic() - started < UP_WITHIN_S and up != set(SERVICES):
                assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                try:
                    if (
                        "cb_session" not in client.cookies
                        and not client.post(
                            "/api/v1/auth/login",
                            json={"username": "admin", "password": ADMIN_PASSWORD},
                        ).is_success
                    ):
                        time.sleep(0.5)
                        continue
                    last = client.get("/api/health").json()
                    up = {i["service"] for i in last["instances"] if i["state"] == "up"}  # type: ignore[index]
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        elapsed = time.monotonic() - started
        assert up == set(SERVICES), (
            f"not up after {elapsed:.1f} s: {last}\n" + (tmp_path / "run.log").read_text()[-4000:]
        )
        descendants = _children(proc.pid)
        assert descendants, "the runner has no child processes"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    leftovers = [pid for pid in descendants if _alive(pid)]
    assert not leftovers, f"processes left behind: {leftovers}"
    text = (tmp_path / "run.log").read_text()
    assert "SIGKILL" not in text, (
        "a service needed SIGKILL: it did not stop within the grace period"
    )
    for svc in SERVICES:  # each service handled SIGTERM itself and exited cleanly
        assert f"{svc} stopped (rc=0)" in text, text[-3000:]
    assert not (run_dir / "postgres" / "pgdata" / "postmaster.pid").exists(), (
        "PostgreSQL still runs"
    )
