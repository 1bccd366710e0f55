"""The embedded run (`python -m cinebridge_common.devrun`) as a subprocess system tests drive."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .reaper import spawn


@dataclass
class EmbeddedRun:
    """A running devrun: its run dir, log, ports and the PIDs it reports in pids.json."""

    run_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    extra_args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ports(self, timeout_s: float = 60) -> dict[str, int]:
        path = self.run_dir / "ports.json"
        self.wait(path.exists, timeout_s, "the runner did not choose its ports")
        return dict(json.loads(path.read_text()))

    def processes(self) -> dict[str, dict[str, object]]:
        path = self.run_dir / "pids.json"
        if not path.exists():
            return {}
        return dict(json.loads(path.read_text())["processes"])

    def pid(self, name: str) -> int | None:
        entry = self.processes().get(name)
        if not entry or not entry["running"]:
            return None
        return int(str(entry["pid"]))

    def healthy(self, name: str) -> bool:
        """The process runs and, for a service, its own health endpoint says it is ready."""
        entry = self.processes().get(name)
        if not entry or not entry["running"]:
            return False
        url = entry.get("health_url")
        if not url:
            return True
        try:
            for path in ("/readyz", "/healthz"):
                response = httpx.get(f"{url}{path}", timeout=2)
                if response.status_code != 404:
                    return response.status_code == 200
        except httpx.HTTPError:
            return False
        return False

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll until predicate() holds; returns the seconds it took. Fails with the log tail."""
        started = time.monotonic()
        while not predicate():
            assert self.proc.poll() is None, f"the runner exited: {self.log()[-4000:]}"
            assert time.monotonic() - started < timeout_s, f"{what}\n{self.log()[-4000:]}"
            time.sleep(0.1)
        return time.monotonic() - started

    def interrupt(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout_s)


def start_run(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = tmp_path / f"run-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = spawn(
            [sys.executable, "-m", "cinebridge_common.devrun", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | (env or {}),
        )
    return proc, log_path


@contextlib.contextmanager
def embedded_runs(tmp_path: Path) -> Iterator[Callable[..., EmbeddedRun]]:
    """Starts devruns with --random-ports in temp run dirs; stops them (SIGINT) at the end."""
    runs: list[EmbeddedRun] = []

    def start(*args: str, env: dict[str, str] | None = None) -> EmbeddedRun:
        run_dir = tmp_path / f"run{len(runs)}"
        proc, log_path = start_run(
            tmp_path, ["--run-dir", str(run_dir), "--random-ports", *args], env
        )
        run = EmbeddedRun(run_dir, log_path, proc, list(args))
        runs.append(run)
        return run

    try:
        yield start
    finally:  # also when the block raised: a run left behind keeps its servers running
        for run in runs:
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT)
                try:
                    run.proc.wait(60)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                    run.proc.wait()
