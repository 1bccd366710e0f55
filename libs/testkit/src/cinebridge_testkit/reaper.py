"""No test run leaves a process behind: every process a test started is gone when pytest ends.

- The pytest process becomes a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): a process
  whose parent died (a service started by an embedded run that was SIGKILLed, a server a
  fixture started in a new session) is re-parented to pytest instead of to init, so it stays
  a descendant that the reaper can find.
- `spawn(argv, ...)` starts a service in its own process group (`start_new_session`), so that
  stopping it (`stop_group`) reaches what it started too, and a terminal's Ctrl-C does not hit
  it twice.
- At the end of the session (after every fixture's teardown, also when a fixture failed),
  `reap()` sends SIGTERM, then SIGKILL after a grace period, to every descendant still
  running, and the plugin names them: a process found there is a leak of some test.

Only descendants of this pytest process are ever signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux only); False where the system has no such call."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start a service process in its own process group (a new session)."""
    return subprocess.Popen(list(argv), start_new_session=True, **popen)


def stop_group(proc: subprocess.Popen[bytes] | None, grace_s: float = 15.0) -> None:
    """SIGTERM the process group of a `spawn`ed process, SIGKILL it after `grace_s`."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # The command name is in parentheses and may hold spaces: split after it.
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(root: int | None = None) -> list[int]:
    """Every running descendant of `root` (default: this process), zombies left out."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if not _zombie(pid):
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _zombie(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def describe(pid: int) -> str:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return f"{pid} (gone)"
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"{pid} {command[:160]}"


def _collect_zombies() -> None:
    """Wait for children that ended (adopted ones included), so they do not linger."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def reap(grace_s: float = 10.0) -> list[str]:
    """Stop every descendant still running (SIGTERM, then SIGKILL after `grace_s`); returns
    what was found, described, for the report."""
    left = descendants()
    found = [describe(pid) for pid in left]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while left and time.monotonic() < deadline:
            _collect_zombies()
            time.sleep(0.1)
            left = descendants()
        if not left:
            break
    _collect_zombies()
    return found
