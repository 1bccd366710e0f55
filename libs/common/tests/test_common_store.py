"""Media store: atomic writes, refusal of unsafe paths, crash during a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cinebridge_common.store import MediaStore, UnsafePath, check_relative, sha256_file
from cinebridge_testkit.restarts import killed_temp_writer


def test_write_is_atomic_and_hashed(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    rel = store.new_relative("media", "jpg")
    digest = store.write_bytes(rel, b"hello")
    assert store.resolve(rel).read_bytes() == b"hello"
    assert digest == sha256_file(store.resolve(rel)) == store.sha256(rel)
    assert list(store.tmp.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    rel = store.new_relative("media", "jpg")
    with pytest.raises(RuntimeError), store.open_atomic(rel) as fh:
        fh.write(b"partial")
        raise RuntimeError("disk went away")
    assert not store.resolve(rel).exists()
    assert list(store.tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("media/../../etc/passwd", "traversal"),
        ("../media/x.jpg", "traversal"),
        ("/etc/passwd", "absolute"),
        ("media/2026/ab\x00cd.jpg", "NUL"),
        ("media/1.2.3/../4.dcm", "traversal"),
        ("media/UPPER.jpg", "not generated"),
        ("secrets/x.jpg", "unknown store area"),
        ("", "empty"),
    ],
)
def test_unsafe_paths_are_refused_with_reason(tmp_path: Path, rel: str, reason: str) -> None:
    store = MediaStore(tmp_path)
    with pytest.raises(UnsafePath, match=reason):
        store.resolve(rel)


def test_symlink_escape_is_refused(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "root")
    (store.root / "media").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "media" / "link").symlink_to(outside)
    with pytest.raises(UnsafePath, match="escapes"):
        store.resolve("media/link/x.jpg")


def test_generated_paths_pass_the_check(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    for area in ("media", "dicom", "received", "recordings"):
        check_relative(store.new_relative(area, "dcm"))


def test_process_killed_during_write_leaves_no_final_file(tmp_path: Path) -> None:
    """SIGKILL while writing: the final name never appears; only a temp file may remain."""
    store = MediaStore(tmp_path)
    rel = store.new_relative("media", "bin")
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from cinebridge_common.store import MediaStore
        store = MediaStore(Path({str(tmp_path)!r}))
        with store.open_atomic({rel!r}) as fh:
            fh.write(b"x" * 1024)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert not store.resolve(rel).exists()
    leftovers = list(store.tmp.iterdir())
    assert len(leftovers) == 1  # the crashed writer's temp file, never under a final name
    # The sweeper removes temp files older than the limit.
    old = time.time() - 7200
    os.utime(leftovers[0], (old, old))
    assert store.clean_temp(older_than_s=3600) == 1


def test_a_process_started_again_removes_what_its_killed_run_was_writing(tmp_path: Path) -> None:
    """The same owner claims its directory again (its lock died with the killed process) and
    empties it; another owner's files stay."""
    left = killed_temp_writer(tmp_path, "converter\0\0host-a")
    other = killed_temp_writer(tmp_path, "gateway\0\0host-a")
    store = MediaStore(tmp_path)
    assert store.claim_temp("converter\0\0host-a") == 1
    assert not left.exists() and other.exists()
    assert store.temp_path().parent == left.parent
    assert store.temp_files() == [other]


def test_a_second_live_process_of_the_same_name_takes_another_directory(tmp_path: Path) -> None:
    first, second = MediaStore(tmp_path), MediaStore(tmp_path)
    first.claim_temp("converter\0\0host-a")
    working = first.temp_path(".mp4")
    working.write_bytes(b"in progress")
    assert second.claim_temp("converter\0\0host-a") == 0
    assert working.exists() and second.own_tmp != first.own_tmp


def test_the_age_sweep_takes_old_files_of_owners_that_never_came_back(tmp_path: Path) -> None:
    """Old files in `.tmp` and in the owners' directories go; fresh ones, and other
    directories (the SCP's receive area, which it sweeps itself), stay."""
    left = killed_temp_writer(tmp_path, "capture\0room9\0host-b")
    store = MediaStore(tmp_path)
    loose, fresh = store.tmp / "loose.upload", store.tmp / "fresh.upload"
    receive = store.tmp / "scp-0123456789ab"
    receive.mkdir()
    partial = receive / "partial.dcm"
    old = time.time() - 7200
    for path in (loose, fresh, partial):
        path.write_bytes(b"x")
    for path in (left, loose, partial):
        os.utime(path, (old, old))
    assert store.clean_temp(older_than_s=3600) == 2
    assert store.temp_files() == sorted([fresh, partial])
