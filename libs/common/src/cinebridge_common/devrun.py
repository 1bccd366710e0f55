"""`make run`: the whole system on one machine without Docker.

Starts a local nats-server (JetStream, `sync_interval: always`) and PostgreSQL with their data
under `.run/`, then every service under honcho (a well-kept Procfile runner: one coloured log,
Ctrl-C sends SIGTERM to all and SIGKILL after a grace period), with a test-pattern source in
room `room1`, the local SCP as the default destination and, when DCMTK is installed, a demo
worklist server (`wlmscpfs` with generated entries). Prints the gateway's URL.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from .embedded import EmbeddedNats, EmbeddedPostgres, free_port

SERVICES = ("scp", "worklist", "converter", "sender", "capture", "gateway")
DEMO_RIS_AE = "CBWORKLIST"
DEMO_RIS_ENTRIES = 40


def _demo_ris(run_dir: Path, port: int) -> str | None:
    """A demo worklist server (DCMTK wlmscpfs with generated entries), when DCMTK is installed.

    Returns the command for the process runner, or None (the worklist then has no server).
    """
    wlmscpfs, dump2dcm = shutil.which("wlmscpfs"), shutil.which("dump2dcm")
    if not (wlmscpfs and dump2dcm):
        print("DCMTK not installed: no demo worklist server (apt-get install dcmtk)", flush=True)
        return None
    folder = run_dir / "worklist"
    if not (folder / DEMO_RIS_AE).exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cinebridge_worklist.demo_worklist",
                str(folder),
                str(DEMO_RIS_ENTRIES),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return shlex.join([wlmscpfs, "--data-files-path", str(folder), "--keep-char-set", str(port)])


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("CB_RUN_DIR", ".run")))
    parser.add_argument("--only", nargs="*", choices=SERVICES, help="start only these services")
    parser.add_argument("--random-ports", action="store_true", help="free ports, not the defaults")
    args = parser.parse_args()
    from honcho.manager import Manager  # the dev runner only; services never import honcho

    run_dir: Path = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    ports = _ports(run_dir, args.random_ports)
    nats = EmbeddedNats(run_dir / "nats", ports["nats"])
    postgres = EmbeddedPostgres(run_dir / "postgres", ports["postgres"])
    nats.start()
    try:
        postgres.start()
        ris_command = _demo_ris(run_dir, ports["ris"])
        env = os.environ | service_env(
            run_dir, ports, nats.url, postgres.dsn, demo_ris=ris_command is not None
        )
        manager = Manager()
        if ris_command:
            manager.add_process("demo-ris", f"exec {ris_command}", env=env | {"TCP_NODELAY": "1"})
        for svc in args.only or SERVICES:
            # exec: the service itself (not a shell) gets the SIGTERM and reports its own exit code.
            manager.add_process(
                svc, f"exec {shlex.quote(sys.executable)} -m cinebridge_{svc}", env=env
            )
        print(
            f"\nCineBridge starting: gateway http://127.0.0.1:{ports['gateway']}/ "
            f"(SCP CINEBRIDGE@127.0.0.1:{ports['scp']}, NATS {nats.url}, "
            f"PostgreSQL {postgres.dsn}); Ctrl-C stops everything.\n",
            flush=True,
        )
        manager.loop()
        return int(manager.returncode or 0)
    finally:
        try:
            postgres.stop()
        except Exception as exc:  # report, then still stop NATS
            print(f"PostgreSQL did not stop cleanly: {exc}", file=sys.stderr, flush=True)
        nats.stop()
        print("CineBridge stopped (NATS and PostgreSQL down).", flush=True)


if __name__ == "__main__":
    sys.exit(main())
