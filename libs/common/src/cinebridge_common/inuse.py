"""Who holds a TCP port or a data directory: the embedded run refuses to share either.

Linux only (reads /proc); elsewhere the answers degrade to "in use by another process".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import IO


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address is HEX_IP:HEX_PORT; state 0A is LISTEN
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(fields[9])
    return inodes


def describe_pid(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid}: {cmdline.decode(errors='replace')[:200]}"


def port_holders(port: int) -> list[int]:
    """PIDs of the processes listening on `port` (those we may see)."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found: list[int] = []
    if not inodes:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        found.append(int(entry.name))
                        break
    return found


def who_holds_port(port: int) -> str:
    holders = port_holders(port)
    return "; ".join(describe_pid(p) for p in holders) if holders else "another process"


def processes_using(path: Path) -> list[int]:
    """PIDs of other processes whose command line names `path` (e.g. a server's config)."""
    needle = str(path).encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def lock_dir(run_dir: Path) -> IO[str] | int:
    """Take `run_dir/runner.lock` for this process (released when it exits, even when killed).

    Returns the open lock file, or the PID of the process that holds it.
    """
    handle = open(run_dir / "runner.lock", "a+")  # held for the life of the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        text = handle.read().strip()
        handle.close()
        return int(text) if text.isdigit() else -1
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
