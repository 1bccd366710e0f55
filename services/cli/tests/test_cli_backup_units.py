"""Pieces of `cinebridge backup` / `restore` / `send` that need no station: the password kept
off the command line, the store walk, the progress bar, argument errors."""

from __future__ import annotations

import io
from pathlib import Path

from cinebridge_cli.__main__ import main
from cinebridge_cli.backup import pg_tool_env, store_files
from cinebridge_cli.progress import Progress


def test_the_password_travels_in_the_environment_not_in_the_arguments() -> None:
    dsn, env = pg_tool_env("postgresql://cb:s%40cret@db.example:5433/cinebridge?sslmode=require")
    assert dsn == "postgresql://cb@db.example:5433/cinebridge?sslmode=require"
    assert env["PGPASSWORD"] == "s@cret"
    dsn, _ = pg_tool_env("postgresql://cb@127.0.0.1/cinebridge")
    assert dsn == "postgresql://cb@127.0.0.1/cinebridge"


def test_the_store_walk_is_sorted_and_leaves_out_temporary_files(tmp_path: Path) -> None:
    for rel in ("dicom/2026/b.dcm", "dicom/2026/a.dcm", "media/x.jpg", ".tmp/partial"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    assert [rel for rel, _ in store_files(tmp_path)] == [
        "dicom/2026/a.dcm",
        "dicom/2026/b.dcm",
        "media/x.jpg",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    screen = Terminal()
    bar = Progress("backup", 2000, stream=screen)
    bar.advance(1000)
    bar.note("dicom/a.dcm")
    bar.advance(1000)
    bar.close()
    last = screen.getvalue().rstrip().split("\r")[-1]
    assert "100.0 %" in last and "2.0 KB / 2.0 KB" in last and last.startswith("backup [###")
    quiet = io.StringIO()
    silent = Progress("backup", 10, stream=quiet)
    silent.advance(10)
    silent.close()
    assert quiet.getvalue() == ""


def test_backup_and_restore_say_what_is_missing(tmp_path: Path) -> None:
    lines: list[str] = []
    base = ["--database-url", "", "--media-root", str(tmp_path)]
    assert main(["backup", str(tmp_path / "b"), *base], out=lines.append) == 2
    assert (
        main(
            [
                "restore",
                str(tmp_path),
                "--database-url",
                "postgresql://x/y",
                "--media-root",
                str(tmp_path),
            ],
            out=lines.append,
        )
        == 2
    )  # no manifest.json
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert (
        main(
            [
                "backup",
                str(tmp_path / "full"),
                "--database-url",
                "postgresql://x/y",
                "--media-root",
                str(tmp_path),
            ],
            out=lines.append,
        )
        == 2
    )  # not a new directory


def test_a_step_without_measure_is_one_line_on_a_terminal() -> None:
    screen = Terminal()
    Progress("backup", 0, stream=screen).say("dumping the database")
    assert screen.getvalue() == "backup: dumping the database\n"
