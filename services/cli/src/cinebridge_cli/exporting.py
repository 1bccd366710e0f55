"""`cinebridge export STUDY --kind mp4|dicomdir|deid --out DIR`: a study's export, unpacked.

The gateway (POST /api/v1/studies/{id}/export) has the converter write the export; the ZIP is
then streamed to DIR and unpacked there. With `--to-folder` the converter writes into the
station's export folder instead and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from .api import USAGE, Api, CliError
from .commands import Out, emit_json


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("export", help="export a study (MP4/JPEG, DICOM media, de-identified)")
    cmd.add_argument("study", metavar="STUDY", help="the study's id (as in Local search)")
    cmd.add_argument("--kind", choices=("mp4", "dicomdir", "deid"), required=True)
    cmd.add_argument("--out", type=Path, help="folder to unpack the export into")
    cmd.add_argument(
        "--to-folder", action="store_true", help="write to the station's export folder instead"
    )
    cmd.add_argument("--caption", choices=("none", "burned", "sidecar"), default="none")
    cmd.add_argument(
        "--retain-dates",
        action=argparse.BooleanOptionalAction,
        help="deid: keep dates, shifted (PS3.15 E.3.6); default: the station's setting",
    )
    cmd.add_argument(
        "--clean-descriptors",
        action=argparse.BooleanOptionalAction,
        help="deid: keep cleaned descriptions (PS3.15 E.3.5); default: the station's setting",
    )
    cmd.add_argument(
        "--wait", type=float, default=1800.0, help="seconds to wait for the export to be written"
    )
    cmd.set_defaults(run=export)


def export(api: Api, args: argparse.Namespace, out: Out) -> int:
    try:
        study = uuid.UUID(args.study)
    except ValueError:
        raise CliError(USAGE, f"not a study id: {args.study!r}") from None
    if args.out is None and not args.to_folder:
        raise CliError(USAGE, "give --out DIR, or --to-folder")
    body: dict[str, object] = {
        "kind": args.kind,
        "target": "folder" if args.to_folder else "download",
        "caption": args.caption,
    }
    for key in ("retain_dates", "clean_descriptors"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    result = api.call("POST", f"/api/v1/studies/{study}/export", json=body, timeout=args.wait)
    if not args.to_folder:
        result["out"] = str(unpack(api, result["download_url"], args.out, args.wait))
    if args.json:
        emit_json(out, result)
        return 0
    where = result.get("out") or result.get("folder")
    out(f"exported {result['files']} file(s), {result['bytes']} bytes ({args.kind}) to {where}")
    for warning in result.get("warnings") or []:
        out(f"warning: {warning}")
    return 0


def unpack(api: Api, url: str, dest: Path, timeout_s: float) -> Path:
    """Download the ZIP next to `dest` and unpack it into `dest`; members that would land
    outside it are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ".cinebridge-export.zip.part"
    try:
        api.download(url, archive, timeout_s=timeout_s)
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts or "\\" in name:
                    raise CliError(USAGE, f"the archive holds an unsafe name: {name!r}")
            zf.extractall(dest)
    finally:
        archive.unlink(missing_ok=True)
    return dest
