"""`cinebridge`: status, echo, send, deliveries, worklist queries, users, the conformance statement,
study exports, backup and restore of a station, for people and scripts. Exit codes: 0 fine, 1 the
answer is "no" (needs attention, unreachable, failed), 2 usage, 3 gateway (or, for
backup/restore, database) unreachable or failing, 4 token refused, 5 not found, 6 restore
refused: the station is not empty."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence

import httpx

from . import backup, commands, exporting, send
from .api import Api, CliError

DEFAULT_URL = "http://127.0.0.1:8080"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="cinebridge",
        description=(__doc__ or "").split("\n\n")[0].replace("\n", " "),
        epilog="Exit codes: 0 fine, 1 needs attention / unreachable / failed, 2 usage, "
        "3 gateway (backup/restore: database) unreachable or failing, 4 token refused, "
        "5 not found, 6 restore refused: the station is not empty.",
    )
    top.add_argument(
        "--url",
        default=os.environ.get("CINEBRIDGE_URL", DEFAULT_URL),
        help="the gateway (default: $CINEBRIDGE_URL or %(default)s)",
    )
    top.add_argument(
        "--token",
        default=os.environ.get("CINEBRIDGE_TOKEN"),
        help="API token (default: $CINEBRIDGE_TOKEN)",
    )
    top.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    top.add_argument("--json", action="store_true", help="print the answer as JSON")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("status", help="services, queues, deliveries, dead letters, disk").set_defaults(
        run=commands.status
    )
    echo = sub.add_parser(
        "echo", help="echo a destination (name; C-ECHO, or QIDO-RS for DICOMweb) or AE@HOST:PORT"
    )
    echo.add_argument("target", metavar="DEST|AE@HOST:PORT")
    echo.set_defaults(run=commands.echo)
    sending = sub.add_parser(
        "send", help="send DICOM Part 10 files to a destination through the station's sender"
    )
    sending.add_argument("files", nargs="+", metavar="FILE", help="files, or directories of them")
    sending.add_argument("--to", required=True, metavar="DEST", help="destination name or AE")
    sending.add_argument(
        "--wait",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for the deliveries to finish (default %(default)s; 0: do not wait)",
    )
    sending.set_defaults(run=send.send)
    deliveries = sub.add_parser("deliveries", help="unsent and failed deliveries")
    deliveries.add_argument("--failed", action="store_true", help="only the failed ones")
    deliveries.add_argument("--retry", action="store_true", help="queue every failed one again")
    deliveries.set_defaults(run=commands.deliveries)

    worklist = sub.add_parser("worklist", help="Modality Worklist")
    wsub = worklist.add_subparsers(dest="worklist_command", required=True, metavar="COMMAND")
    query = wsub.add_parser("query", help="query the worklist servers (Table 18 keys)")
    query.add_argument("--server", help="one server's id (default: every enabled server)")
    query.add_argument("--patient-name", help="e.g. 'DOE*'")
    query.add_argument("--patient-id")
    query.add_argument("--accession")
    query.add_argument("--procedure-id", help="Requested Procedure ID")
    query.add_argument("--date-from", help="scheduled date, YYYYMMDD")
    query.add_argument("--date-to", help="scheduled date, YYYYMMDD")
    query.set_defaults(run=commands.worklist_query)

    users = sub.add_parser("users", help="the gateway's users (administrator token)")
    usub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    usub.add_parser("list", help="every user with role and state").set_defaults(
        run=commands.users_list
    )
    add = usub.add_parser("add", help="create a user; the password is read from stdin")
    add.add_argument("username")
    add.add_argument("--role", choices=("viewer", "operator", "administrator"), default="operator")
    add.set_defaults(run=commands.users_add, read_password=read_password)
    for name, run, what in (
        ("backup", backup.backup, "database, settings, media and DICOM files into a new DIR"),
        ("restore", backup.restore, "a backup DIR into an EMPTY station, then verify it"),
    ):
        direct = sub.add_parser(name, help=what)
        direct.add_argument("dir", metavar="DIR")
        direct.add_argument(
            "--database-url",
            default=os.environ.get("CB_DATABASE_URL"),
            help="the station's PostgreSQL (default: $CB_DATABASE_URL)",
        )
        direct.add_argument(
            "--media-root",
            default=os.environ.get("CB_MEDIA_ROOT"),
            help="the station's media store (default: $CB_MEDIA_ROOT)",
        )
        direct.set_defaults(run=run, direct=True)

    conformance = sub.add_parser(
        "statement", help="the DICOM Conformance Statement of the running station (Markdown)"
    )
    conformance.add_argument(
        "--format",
        choices=("markdown", "html", "pdf"),
        default="markdown",
        help="Markdown (default), the HTML page, or a PDF file (needs -o)",
    )
    conformance.add_argument(
        "--html", action="store_const", const="html", dest="format", help="= --format html"
    )
    conformance.add_argument("-o", "--output", help="write to this file instead of stdout")
    conformance.set_defaults(run=commands.statement)
    exporting.add_parser(sub)
    return top


def read_password() -> str:
    """A prompt on a terminal; otherwise the first line of stdin (`… | cinebridge users add`)."""
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def main(
    argv: Sequence[str] | None = None,
    *,
    out: Callable[[str], None] = print,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Run one command; returns its exit code (the console script exits with it)."""
    args = parser().parse_args(argv)
    try:
        if getattr(args, "direct", False):  # backup/restore: no gateway, no token
            direct: int = args.run(args, out)
            return direct
        api = Api(args.url, args.token, timeout_s=args.timeout, transport=transport)
        try:
            code: int = args.run(api, args, out)
        finally:
            api.close()
    except CliError as exc:
        print(f"cinebridge: {exc.message}", file=sys.stderr)
        return exc.code
    return code


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
