"""`make run`: the whole system on one machine without Docker.

Starts a local nats-server (JetStream, `sync_interval: always`) and PostgreSQL with their data
under `.run/`, then every service, with a test-pattern source in room `room1`, the local SCP as
the default destination and, when DCMTK is installed, a demo worklist server (`wlmscpfs` with
generated entries). Prints the gateway's URL. Everything runs under one supervisor
(`cinebridge_common.supervisor`): one prefixed log, any process that exits (NATS and PostgreSQL
included) started again with backoff, current PIDs in `.run/pids.json`; Ctrl-C stops it all.
A run directory, port or server store already in use is refused, never shared.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg

from .embedded import EmbeddedNats, EmbeddedPostgres, free_port
from .inuse import (
    describe_pid,
    lock_dir,
    pid_alive,
    port_in_use,
    processes_using,
    who_holds_port,
)
from .supervisor import ProcessSpec, StartRefused, Supervisor

SERVICES = ("scp", "worklist", "converter", "sender", "capture", "gateway")
DEMO_RIS_AE = "CBWORKLIST"
DEMO_RIS_ENTRIES = 40
#: Demo settings the caller's environment replaces (e.g. a real PACS as the destination);
#: everything else of the run's CB_ environment (ports, NATS, PostgreSQL) is the run's own.
DEMO_OVERRIDES = ("CB_SENDER_SEED_DESTINATIONS", "CB_CAPTURE_SOURCES", "CB_WORKLIST_SEED_SERVERS")


def _demo_ris(run_dir: Path, port: int) -> list[str] | None:
    """A demo worklist server (DCMTK wlmscpfs with generated entries), when DCMTK is installed.

    Returns its command line, or None (the worklist then has no server).
    """
    wlmscpfs, dump2dcm = shutil.which("wlmscpfs"), shutil.which("dump2dcm")
    if not (wlmscpfs and dump2dcm):
        print("DCMTK not installed: no demo worklist server (apt-get install dcmtk)", flush=True)
        return None
    # The entries come from the testkit's generator, run as a process of its own: the dev run
    # is a workspace install, while a production image has no testkit (and no demo RIS).
    if importlib.util.find_spec("cinebridge_testkit") is None:
        print(
            "cinebridge_testkit not installed: no demo worklist server (make install)", flush=True
        )
        return None
    folder = run_dir / "worklist"
    if not (folder / DEMO_RIS_AE).exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cinebridge_testkit.demo_worklist",
                str(folder),
                str(DEMO_RIS_ENTRIES),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return [wlmscpfs, "--data-files-path", str(folder), "--keep-char-set", str(port)]


def _port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _ports(run_dir: Path, random_ports: bool) -> dict[str, int]:
    """Stable ports across runs (kept in .run/ports.json), defaults when free."""
    path = run_dir / "ports.json"
    saved: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {
        "nats": 4222,
        "postgres": 5432,
        "scp": 11112,
        "gateway": 8080,
        "preview": 8091,
        "ris": 11113,
    }
    if random_ports:
        wanted = {name: 0 for name in wanted}
    wanted |= {f"health_{svc}": 0 for svc in SERVICES}
    ports = {
        name: saved.get(name) or (_port(default) if default else free_port())
        for name, default in wanted.items()
    }
    path.write_text(json.dumps(ports))
    return ports


def service_env(
    run_dir: Path, ports: dict[str, int], nats_url: str, dsn: str, *, demo_ris: bool
) -> dict[str, str]:
    """The CB_* environment every service gets in the embedded run (see .env.example)."""
    ris = (
        {"id": "demo-ris", "host": "127.0.0.1", "port": ports["ris"], "called_ae": DEMO_RIS_AE}
        if demo_ris
        else None
    )
    scp = {
        "name": "local-scp",
        "ae_title": "CINEBRIDGE",
        "host": "127.0.0.1",
        "port": ports["scp"],
        "enabled": True,
        "auto_send": True,
    }
    source = {"name": "endo", "url": "lavfi:testsrc2=size=1280x720:rate=30"}
    return {
        "CB_NATS_URL": nats_url,
        "CB_DATABASE_URL": dsn,
        "CB_MEDIA_ROOT": str(run_dir / "media"),
        "CB_SCP_PORT": str(ports["scp"]),
        "CB_CAPTURE_ROOM": "room1",
        "CB_CAPTURE_SOURCES": json.dumps([source]),
        "CB_CAPTURE_PREVIEW_PORT": str(ports["preview"]),
        "CB_SENDER_SEED_DESTINATIONS": json.dumps([scp]),
        "CB_WORKLIST_SEED_SERVERS": json.dumps([ris]) if ris else "[]",
        "CB_GATEWAY_PORT": str(ports["gateway"]),
        "CB_GATEWAY_PREVIEW_UPSTREAMS": json.dumps(
            {"room1": f"http://127.0.0.1:{ports['preview']}"}
        ),
        "PYTHONUNBUFFERED": "1",
    }


def _refuse_ports_in_use(run_dir: Path, ports: dict[str, int]) -> None:
    """Every port of the run must be free: another server there would be used silently."""
    for name, port in ports.items():
        if port_in_use(port):
            raise StartRefused(
                f"port {port} ({name}) is already in use by {who_holds_port(port)}; stop that "
                f"process, or delete {run_dir / 'ports.json'} to choose other ports"
            )


def _nats_spec(nats: EmbeddedNats) -> ProcessSpec:
    def precheck() -> None:
        others = processes_using(nats.config_path)
        if others:
            raise StartRefused(
                f"the NATS store {nats.data_dir} is used by another server "
                f"({describe_pid(others[0])}); stop it first"
            )
        if port_in_use(nats.port):
            raise StartRefused(f"NATS port {nats.port} is in use by {who_holds_port(nats.port)}")

    async def ready() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", nats.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            line = await reader.readline()
            writer.close()
            if line.startswith(b"INFO"):
                return
            await asyncio.sleep(0.1)

    return ProcessSpec(
        "nats",
        nats.argv(),
        log_file=nats.data_dir / "nats.log",
        precheck=precheck,
        ready=ready,
    )


def _postgres_spec(postgres: EmbeddedPostgres) -> ProcessSpec:
    def precheck() -> None:
        postgres.make_reachable()
        pidfile = postgres.pgdata / "postmaster.pid"
        first = pidfile.read_text().split("\n", 1)[0].strip() if pidfile.exists() else ""
        if first.isdigit() and pid_alive(int(first)):
            raise StartRefused(
                f"a PostgreSQL server ({describe_pid(int(first))}) already runs on "
                f"{postgres.pgdata}; stop it first (pg_ctl -D {postgres.pgdata} stop)"
            )
        if port_in_use(postgres.port):
            raise StartRefused(
                f"PostgreSQL port {postgres.port} is in use by {who_holds_port(postgres.port)}"
            )

    async def ready() -> None:
        while True:
            try:
                conn = await asyncpg.connect(postgres.dsn_for("postgres"), timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            await conn.close()
            return

    return ProcessSpec(
        "postgres",
        postgres.argv(),
        user=postgres.run_as,
        log_file=postgres.data_dir / "postgres.log",
        precheck=precheck,
        ready=ready,
        # SIGINT is PostgreSQL's fast shutdown: it ends the sessions and checkpoints.
        stop_signal=signal.SIGINT,
        grace_s=30,
    )


async def _start_all(
    sup: Supervisor, run_dir: Path, ports: dict[str, int], only: list[str] | None
) -> None:
    nats = EmbeddedNats(run_dir / "nats", ports["nats"])
    postgres = EmbeddedPostgres(run_dir / "postgres", ports["postgres"])
    await sup.start(_nats_spec(nats))
    await asyncio.to_thread(postgres.init)
    await sup.start(_postgres_spec(postgres))
    await asyncio.to_thread(postgres.ensure_database)
    ris = await asyncio.to_thread(_demo_ris, run_dir, ports["ris"])
    env = os.environ | service_env(run_dir, ports, nats.url, postgres.dsn, demo_ris=bool(ris))
    env |= {key: os.environ[key] for key in DEMO_OVERRIDES if key in os.environ}
    if ris:
        await sup.start(ProcessSpec("demo-ris", ris, env=env | {"TCP_NODELAY": "1"}))
    for svc in only or SERVICES:
        health = ports[f"health_{svc}"]
        await sup.start(
            ProcessSpec(
                svc,
                [sys.executable, "-m", f"cinebridge_{svc}"],
                env=env | {"CB_HEALTH_PORT": str(health)},
                health_url=f"http://127.0.0.1:{health}",
            )
        )
    sup.say(
        f"CineBridge running: gateway http://127.0.0.1:{ports['gateway']}/ "
        f"(SCP CINEBRIDGE@127.0.0.1:{ports['scp']}, NATS {nats.url}, "
        f"PostgreSQL {postgres.dsn}); PIDs in {run_dir / 'pids.json'}; Ctrl-C stops everything."
    )
    metrics = ", ".join(
        f"{svc} http://127.0.0.1:{ports[f'health_{svc}']}/metrics" for svc in only or SERVICES
    )
    sup.say(f"Prometheus metrics (docs/metrics.md): {metrics}")


async def _run(run_dir: Path, only: list[str] | None, random_ports: bool) -> int:
    held = lock_dir(run_dir)
    if isinstance(held, int):
        who = describe_pid(held) if held > 0 else "another process"
        raise StartRefused(f"another CineBridge run ({who}) uses {run_dir}; stop it first")
    ports = _ports(run_dir, random_ports)
    _refuse_ports_in_use(run_dir, ports)
    sup = Supervisor(run_dir / "pids.json")
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: no more waiting
            sup.say("second interrupt: SIGKILL to every process")
            sup.kill_all()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    starting = asyncio.create_task(_start_all(sup, run_dir, ports, only))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a refusal or a failed first start ends the run with its reason
            await stopped
        sup.say("stopping")
        return 0
    finally:
        starting.cancel()
        stopped.cancel()
        services = [*SERVICES, "demo-ris"]
        await sup.stop_all([services, ["postgres"], ["nats"]])
        sup.say("CineBridge stopped (NATS and PostgreSQL down).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("CB_RUN_DIR", ".run")))
    parser.add_argument("--only", nargs="*", choices=SERVICES, help="start only these services")
    parser.add_argument("--random-ports", action="store_true", help="free ports, not the defaults")
    args = parser.parse_args()
    run_dir: Path = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run(run_dir, args.only, args.random_ports))
    except Exception as exc:  # a refusal or a server that would not start: say why, exit 1
        print(f"CineBridge did not start: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
