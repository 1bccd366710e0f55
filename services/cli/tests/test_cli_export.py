"""`cinebridge export` without a gateway: the request it sends, the unpacking, usage errors."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import httpx
from cinebridge_cli.__main__ import main

STUDY = str(uuid.UUID(int=42))


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def run(argv: list[str], archive: bytes) -> tuple[int, list[str], list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            body = json.loads(request.content)
            answer = {"export_id": "e", "kind": body["kind"], "target": body["target"]}
            answer |= {"files": 2, "bytes": 10, "warnings": ["check the pictures"]}
            if body["target"] == "folder":
                return httpx.Response(200, json={**answer, "folder": "/export/cinebridge-x"})
            return httpx.Response(200, json={**answer, "download_url": "/api/v1/exports/e.zip"})
        return httpx.Response(200, content=archive, headers={"content-type": "application/zip"})

    lines: list[str] = []
    code = main(
        ["--url", "http://gw", "--token", "t0k", "export", STUDY, *argv],
        out=lines.append,
        transport=httpx.MockTransport(handler),
    )
    return code, lines, seen


def test_download_is_unpacked_into_out(tmp_path: Path) -> None:
    archive = _zip({"DICOMDIR": b"d", "PT000000/IM000000": b"i"})
    argv = ["--kind", "deid", "--out", str(tmp_path / "o"), "--retain-dates"]
    code, out, seen = run([*argv, "--no-clean-descriptors"], archive)
    assert code == 0, out
    assert json.loads(seen[0].content) == {
        "kind": "deid",
        "target": "download",
        "caption": "none",
        "retain_dates": True,
        "clean_descriptors": False,
    }
    assert seen[1].url.path == "/api/v1/exports/e.zip"
    assert (tmp_path / "o" / "PT000000" / "IM000000").read_bytes() == b"i"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["DICOMDIR", "PT000000"]
    assert out == [
        f"exported 2 file(s), 10 bytes (deid) to {tmp_path / 'o'}",
        "warning: check the pictures",
    ]


def test_unsafe_member_is_refused(tmp_path: Path) -> None:
    code, _, _ = run(["--kind", "mp4", "--out", str(tmp_path / "o")], _zip({"../evil": b"x"}))
    assert code == 2
    assert not (tmp_path / "evil").exists() and not list((tmp_path / "o").iterdir())


def test_to_folder_downloads_nothing(tmp_path: Path) -> None:
    code, out, seen = run(["--kind", "dicomdir", "--to-folder"], b"")
    assert code == 0 and len(seen) == 1
    assert "/export/cinebridge-x" in out[0]


def test_usage_errors(tmp_path: Path) -> None:
    assert run(["--kind", "mp4"], b"")[0] == 2, "neither --out nor --to-folder"
    code = main(["--token", "t", "export", "not-a-uuid", "--kind", "mp4", "--out", str(tmp_path)])
    assert code == 2
