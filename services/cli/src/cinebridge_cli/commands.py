"""The commands: each takes the API and its arguments, prints, and returns an exit code."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .api import NO, NOT_FOUND, USAGE, Api, CliError

Out = Callable[[str], None]
#: AE@HOST:PORT of an ad-hoc echo (PS3.8 AE titles: up to 16 characters, no backslash).
AE_ADDRESS = re.compile(r"^(?P<ae>[^@\\]{1,16})@(?P<host>[A-Za-z0-9.:_-]+):(?P<port>\d{1,5})$")


def emit_json(out: Out, value: Any) -> None:
    out(json.dumps(value, indent=2, sort_keys=True, default=str))


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def status(api: Api, args: argparse.Namespace, out: Out) -> int:
    """Services, queues, deliveries, dead letters and disk; 1 when anything needs attention."""
    summary = api.get("/api/v1/ops/summary")
    health = summary.get("health", {})
    instances = health.get("instances", [])
    failed = summary.get("failed_deliveries") or []
    dead = int(summary.get("dead_letters") or 0)
    problems = [f"{i['service']}@{i['instance']} {i['state']}" for i in instances]
    problems = [p for p, i in zip(problems, instances, strict=True) if i["state"] != "up"]
    if not instances:
        problems.append("no service reports a heartbeat")
    if failed:
        problems.append(f"{len(failed)} failed deliveries")
    if dead:
        problems.append(f"{dead} dead letters")
    if args.json:
        emit_json(out, {**summary, "problems": problems})
        return NO if problems else 0
    out(f"station: {'ok' if not problems else 'needs attention: ' + '; '.join(problems)}")
    out("services:")
    for i in instances:
        room = f" room {i['room']}" if i.get("room") else ""
        seen = f"seen {i['age_s']} s ago"
        out(f"  {i['service']:<10} {i['instance']:<24} {i['state']:<9} {seen}{room}")
    for queue in summary.get("queues") or []:
        out(
            f"queue {queue['consumer']}: {queue['pending']} pending, "
            f"{queue['in_flight']} in flight, {queue['redelivered']} redelivered"
        )
    outbox = summary.get("outbox") or {}
    out(f"outbox: {outbox.get('pending', 0)} unpublished (oldest {outbox.get('oldest_at') or '-'})")
    backlog = summary.get("deliveries") or {}
    out(
        f"deliveries: {backlog.get('pending', 0)} unsent "
        f"(oldest {backlog.get('oldest_unsent_at') or '-'}), {len(failed)} failed"
    )
    out(f"dead letters: {dead}")
    disk = summary.get("disk") or {}
    if disk:
        fraction = disk.get("free_fraction")
        share = f" ({fraction * 100:.0f} %)" if fraction is not None else ""
        out(
            f"disk {disk.get('path')}: {_size(disk.get('free_bytes'))} free of "
            f"{_size(disk.get('total_bytes'))}{share}"
        )
    return NO if problems else 0


def find_destination(api: Api, target: str) -> dict[str, Any]:
    """A configured destination by name or AE title; exit 5 naming the ones there are."""
    destinations = api.get("/api/v1/settings/destinations")
    found = [d for d in destinations if d["name"] == target or d["ae_title"] == target]
    if not found:
        names = ", ".join(sorted(d["name"] for d in destinations)) or "none"
        raise CliError(NOT_FOUND, f"no destination {target!r} (destinations: {names})")
    destination: dict[str, Any] = found[0]
    return destination


def echo(api: Api, args: argparse.Namespace, out: Out) -> int:
    """Echo a destination by name (C-ECHO, or a QIDO-RS search for a DICOMweb one), or C-ECHO
    any AE given as AE@HOST:PORT; 1 when not reachable."""
    target: str = args.target
    match = AE_ADDRESS.match(target)
    if match:
        body = {"ae_title": match["ae"], "host": match["host"], "port": int(match["port"])}
        result = api.post("/api/v1/settings/echo", body)
    else:
        destination = find_destination(api, target)
        result = api.post(f"/api/v1/settings/destinations/{destination['id']}/echo")
    if args.json:
        emit_json(out, {"target": target, **result})
    elif result.get("reachable"):
        out(f"{target}: reachable, {result.get('rtt_ms') or 0:.1f} ms")
    else:
        out(f"{target}: NOT reachable: {result.get('reason') or 'no answer'}")
    return 0 if result.get("reachable") else NO


def deliveries(api: Api, args: argparse.Namespace, out: Out) -> int:
    """The delivery backlog and the failed deliveries; --retry queues each failed one again.

    Exit 1 while failed deliveries remain (none retried, or a retry refused)."""
    summary = api.get("/api/v1/ops/summary")
    failed = summary.get("failed_deliveries") or []
    backlog = summary.get("deliveries") or {}
    retried: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    if args.retry:
        for row in failed:
            try:
                retried.append(api.post(f"/api/v1/deliveries/{row['id']}/retry"))
            except CliError as exc:
                if exc.code != NO:
                    raise
                refused.append({"delivery_id": row["id"], "error": exc.message})
    if args.json:
        report: dict[str, Any] = {"failed": failed}
        if not args.failed:
            report["backlog"] = backlog
        if args.retry:
            report |= {"retried": retried, "refused": refused}
        emit_json(out, report)
    else:
        if not args.failed:
            out(
                f"unsent: {backlog.get('pending', 0)} "
                f"(oldest {backlog.get('oldest_unsent_at') or '-'})"
            )
        out(f"failed: {len(failed)}")
        for row in failed:
            out(
                f"  {row['id']}  {row['destination_name']:<16} {row['state']:<17} "
                f"attempts {row['attempts']}  {row.get('last_error') or ''}"
            )
        if args.retry:
            out(f"retried: {len(retried)}, refused: {len(refused)}")
            for row in refused:
                out(f"  {row['delivery_id']}: {row['error']}")
    if args.retry:
        return NO if refused else 0
    return NO if failed else 0


def worklist_query(api: Api, args: argparse.Namespace, out: Out) -> int:
    """Query the worklist servers (or one) with the Table 18 keys; 1 when the query failed."""
    body = {
        key: value
        for key, value in {
            "server_id": args.server,
            "patient_name": args.patient_name,
            "patient_id": args.patient_id,
            "accession_number": args.accession,
            "requested_procedure_id": args.procedure_id,
            "date_from": args.date_from,
            "date_to": args.date_to,
        }.items()
        if value is not None
    }
    reply = api.post("/api/v1/worklist/query", body)
    items = reply.get("items") or []
    if args.json:
        emit_json(out, reply)
        return 0
    for warning in reply.get("warnings") or []:
        out(f"note: {warning}")
    out(f"{len(items)} entries" + (" (cached)" if reply.get("cached") else ""))
    for item in items:
        out(
            f"  {item.get('scheduled_procedure_step_start_date') or '':<8} "
            f"{item.get('scheduled_procedure_step_start_time') or '':<6} "
            f"{item.get('patient_id') or '':<12} {item.get('patient_name') or '':<28} "
            f"{item.get('accession_number') or ''}"
        )
    return 0


def users_list(api: Api, args: argparse.Namespace, out: Out) -> int:
    """The gateway's users (administrator token)."""
    users = api.get("/api/v1/users")
    if args.json:
        emit_json(out, users)
        return 0
    for user in users:
        state = "disabled" if user.get("disabled") else "active"
        out(f"{user['username']:<24} {user['role']:<14} {state}")
    return 0


def users_add(api: Api, args: argparse.Namespace, out: Out) -> int:
    """Create a user; the password comes from stdin (never from the command line)."""
    password = args.read_password()
    if len(password) < 8:
        raise CliError(USAGE, "the password needs at least 8 characters")
    user = api.post(
        "/api/v1/users", {"username": args.username, "password": password, "role": args.role}
    )
    if args.json:
        emit_json(out, user)
    else:
        out(f"created {user['username']} ({user['role']})")
    return 0


def statement(api: Api, args: argparse.Namespace, out: Out) -> int:
    """The station's DICOM Conformance Statement (Markdown, HTML, PDF or JSON), generated now by
    the gateway from the running services; 1 when a service did not answer (incomplete)."""
    if args.format == "pdf" and not args.output and not args.json:
        raise CliError(USAGE, "a PDF is written to a file: add -o FILE")
    data = api.get("/api/v1/statement")
    missing = data.get("missing") or []
    if args.json:
        text = json.dumps(data, indent=2, sort_keys=True)
    elif args.format == "pdf":
        size = api.download("/api/v1/statement.pdf", Path(args.output), timeout_s=args.timeout)
        out(f"statement written to {args.output} ({size} bytes)")
        return _incomplete(missing, out)
    elif args.format == "html":
        text = api.text("/statement", "text/html")
    else:
        text = api.text("/api/v1/statement.md", "text/markdown")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        out(f"statement written to {args.output}")
    else:
        out(text)
    return _incomplete(missing, out)


def _incomplete(missing: list[str], out: Out) -> int:
    for service in missing:
        out(f"incomplete: no answer from {service}")
    return NO if missing else 0
