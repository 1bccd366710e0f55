"""A test run leaves no process behind: a pytest session with the testkit plugin whose tests
orphan a process (its parent shell exits), or leave a spawned service running when a fixture
fails, ends with both stopped and named in its report."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cinebridge_testkit.reaper import descendants, describe, spawn, stop_group

pytestmark = pytest.mark.integration

LEAKY_TESTS = """
import subprocess
import sys

import pytest
from cinebridge_testkit.reaper import spawn


def test_orphans_a_process():
    # The shell exits at once; its background sleep is re-parented (to init, or to pytest).
    subprocess.run(["sh", "-c", "sleep {orphan} > /dev/null 2>&1 &"], check=True)


@pytest.fixture
def service():
    proc = spawn([sys.executable, "-c", "import time; time.sleep({service})"])
    yield proc
    raise RuntimeError("a fixture's teardown failed before it stopped its service")


def test_with_a_failing_fixture(service):
    assert service.poll() is None
"""


def _running(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in command:
                found.append(describe(int(entry.name)))
    return found


def test_a_session_stops_orphans_and_services_its_tests_left(tmp_path: Path) -> None:
    # Numbers no other process uses as arguments: they find the leaks in /proc.
    orphan = f"3599.{uuid.uuid4().int % 10**9:09d}"
    service = f"3598.{uuid.uuid4().int % 10**9:09d}"
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS.format(orphan=orphan, service=service))
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "cinebridge_testkit.plugin",
                "-q",
                f"--rootdir={tmp_path}",
                str(tmp_path),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        report = run.stdout + run.stderr
        assert "2 passed, 1 error" in report, report
        assert not _running(orphan), f"the orphaned process outlived the session\n{report}"
        assert not _running(service), f"the spawned service outlived the session\n{report}"
        assert "processes left running by the tests, now stopped:" in report
        assert orphan in report and service in report
    finally:
        for line in _running(orphan) + _running(service):  # a failed run's leftovers
            subprocess.run(["kill", "-9", line.split()[0]], check=False)


def test_descendants_are_found_and_a_spawned_group_stops_whole() -> None:
    """A grandchild is found through its parent; stopping a spawned process's group stops
    the grandchild too (killing the shell alone would orphan its sleep)."""
    child = spawn(["sh", "-c", "sleep 61 & wait"])
    try:
        found = descendants()
        assert child.pid in found
        sleeper = [pid for pid in found if "sleep 61" in describe(pid)]
        assert sleeper
    finally:
        stop_group(child)
    assert not [pid for pid in descendants() if "sleep 61" in describe(pid)]
