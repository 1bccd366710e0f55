"""The embedded run's supervisor: restarts what exits (saying why), keeps PIDs, stops all."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cinebridge_common.supervisor import ProcessSpec, StartRefused, Supervisor, describe_exit

SLEEPER = [sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(600)"]


def _pids(path: Path) -> dict[str, dict[str, object]]:
    return dict(json.loads(path.read_text())["processes"])


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not predicate():
            await asyncio.sleep(0.05)


def test_describe_exit() -> None:
    assert describe_exit(3) == "rc=3"
    assert describe_exit(-9) == "killed by SIGKILL"


async def test_a_killed_process_is_restarted_with_a_reason_and_a_new_pid(tmp_path: Path) -> None:
    out = io.StringIO()
    sup = Supervisor(tmp_path / "pids.json", out=out)
    await sup.start(ProcessSpec("sleeper", SLEEPER))
    await _until(lambda: "hello" in out.getvalue())
    first = _pids(tmp_path / "pids.json")["sleeper"]
    assert first["running"] is True
    os.kill(int(str(first["pid"])), signal.SIGKILL)
    await _until(
        lambda: (
            _pids(tmp_path / "pids.json")["sleeper"]["pid"] != first["pid"]
            and _pids(tmp_path / "pids.json")["sleeper"]["running"] is True
        )
    )
    again = _pids(tmp_path / "pids.json")["sleeper"]
    assert again["restarts"] == 1
    await sup.stop_all([])
    log = out.getvalue()
    assert "sleeper exited (killed by SIGKILL)" in log, log
    assert re.search(r"sleeper +\| hello", log), log  # the child's own output, prefixed
    assert "sleeper stopped (killed by SIGTERM)" in log, log
    assert _pids(tmp_path / "pids.json")["sleeper"]["running"] is False


async def test_quick_exits_back_off_and_stop_interrupts_the_wait(tmp_path: Path) -> None:
    out = io.StringIO()
    sup = Supervisor(tmp_path / "pids.json", out=out)
    await sup.start(ProcessSpec("flaky", [sys.executable, "-c", "raise SystemExit(3)"]))
    await _until(lambda: out.getvalue().count("flaky exited (rc=3)") >= 3)
    log = out.getvalue()
    assert "restarting in 0.5 s" in log and "restarting in 1 s" in log, log
    assert "restarting in 2 s" in log, log
    async with asyncio.timeout(10):  # a pending backoff does not delay the stop
        await sup.stop_all([])


async def test_a_refused_first_start_raises_with_its_reason(tmp_path: Path) -> None:
    def refuse() -> None:
        raise StartRefused("port 1 is in use by pid 2")

    sup = Supervisor(tmp_path / "pids.json", out=io.StringIO())
    with pytest.raises(StartRefused, match="port 1 is in use"):
        await sup.start(ProcessSpec("server", SLEEPER, precheck=refuse))
    await sup.stop_all([])


async def test_a_process_that_exits_before_ready_fails_its_first_start(tmp_path: Path) -> None:
    async def never() -> None:
        await asyncio.Event().wait()

    sup = Supervisor(tmp_path / "pids.json", out=io.StringIO())
    spec = ProcessSpec("server", [sys.executable, "-c", "raise SystemExit(7)"], ready=never)
    with pytest.raises(RuntimeError, match=r"exited \(rc=7\) before it was ready"):
        await sup.start(spec)
    await sup.stop_all([])


async def test_a_process_ignoring_sigterm_is_killed_after_its_grace(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('armed', flush=True); time.sleep(600)",
    ]
    out = io.StringIO()
    sup = Supervisor(tmp_path / "pids.json", out=out)
    await sup.start(ProcessSpec("stubborn", stubborn, grace_s=0.5))
    await _until(lambda: "armed" in out.getvalue())
    await sup.stop_all([])
    assert "stubborn did not stop within 0.5 s: SIGKILL" in out.getvalue()


async def test_an_overlong_output_line_does_not_stop_the_log(tmp_path: Path) -> None:
    chatty = [
        sys.executable,
        "-c",
        "import sys, time; sys.stdout.write('x' * (3 << 20) + '\\n'); print('after', flush=True);"
        " time.sleep(600)",
    ]
    out = io.StringIO()
    sup = Supervisor(tmp_path / "pids.json", out=out)
    await sup.start(ProcessSpec("chatty", chatty))
    await _until(lambda: "after" in out.getvalue())
    await sup.stop_all([])
    assert "left out" in out.getvalue()
