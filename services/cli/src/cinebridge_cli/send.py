"""`cinebridge send FILES… --to DEST`: hand DICOM Part 10 files to the station's sender, wait for
their deliveries and print a summary.

Exit codes: 0 every file delivered (status Success or Warning, PS3.4 B.2.3); 1 a file was
refused by the gateway (not Part 10), a delivery failed, or deliveries were still under way when
`--wait` ran out; 2 a file cannot be read; 3/4/5 as every command (gateway, token, destination).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .api import NO, USAGE, Api, CliError
from .commands import emit_json, find_destination
from .progress import Progress

Out = Callable[[str], None]
#: Delivery states after which the sender does nothing more on its own.
FINAL = frozenset({"sent", "warning", "failed-permanent"})
DELIVERED = frozenset({"sent", "warning"})
POLL_S = 1.0
STATUS_BATCH = 200


def expand(paths: list[str]) -> list[Path]:
    """The files named, and every file below a directory named (sorted); exit 2 on a missing
    one, before anything is sent."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise CliError(USAGE, f"{name}: no such file or directory")
    if not files:
        raise CliError(USAGE, "no files to send")
    return files


def send(api: Api, args: argparse.Namespace, out: Out) -> int:
    destination = find_destination(api, args.to)
    files = expand(args.files)
    bar = Progress("send", sum(f.stat().st_size for f in files))
    accepted: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    try:
        for number, file in enumerate(files, 1):
            bar.note(f"{number}/{len(files)} {file.name}")
            try:
                reply = api.upload(f"/api/v1/send/{destination['id']}", file, bar.advance)
            except CliError as exc:
                if exc.code != NO:
                    raise
                refused.append({"file": str(file), "error": exc.message})
                continue
            accepted.append({"file": str(file), **reply})
        states = wait_for_deliveries(api, accepted, args.wait, bar)
    finally:
        bar.close()
    return summarize(destination, accepted, refused, states, args, out)


def wait_for_deliveries(
    api: Api, accepted: list[dict[str, Any]], wait_s: float, bar: Progress
) -> dict[str, dict[str, Any]]:
    """Delivery per instance id, polled until every one is final or `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    states: dict[str, dict[str, Any]] = {}
    ids = [a["instance_id"] for a in accepted]
    while True:
        for start in range(0, len(ids), STATUS_BATCH):
            batch = ids[start : start + STATUS_BATCH]
            for row in api.call("GET", "/api/v1/send/deliveries", params={"instance_id": batch}):
                states[row["instance_id"]] = row
        final = sum(1 for i in ids if states.get(i, {}).get("state") in FINAL)
        bar.note(f"delivered or final: {final}/{len(ids)}")
        if final == len(ids) or time.monotonic() >= deadline:
            return states
        time.sleep(POLL_S)


def summarize(
    destination: dict[str, Any],
    accepted: list[dict[str, Any]],
    refused: list[dict[str, str]],
    states: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    out: Out,
) -> int:
    rows = []
    for item in accepted:
        delivery = states.get(item["instance_id"], {})
        rows.append({**item, "state": delivery.get("state", "queued"), "delivery": delivery})
    counts = Counter(row["state"] for row in rows)
    ok = not refused and all(row["state"] in DELIVERED for row in rows)
    if args.json:
        emit_json(out, {"destination": destination["name"], "files": rows, "refused": refused})
        return 0 if ok else NO
    for row in rows:
        if row["state"] not in DELIVERED:
            error = row["delivery"].get("last_error") or ""
            out(f"  {row['file']}: {row['state']} {error}".rstrip())
    for item in refused:
        out(f"  {item['file']}: refused: {item['error']}")
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing sent"
    out(
        f"{destination['name']}: {len(accepted)} of {len(accepted) + len(refused)} files "
        f"accepted; {summary}"
    )
    return 0 if ok else NO
