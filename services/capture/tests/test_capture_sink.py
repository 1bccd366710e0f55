"""BackgroundFile: the muxer's writes never wait for a stalled disk (within the bound)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from cinebridge_capture import recorder
from cinebridge_capture.recorder import BackgroundFile


def test_a_stalled_disk_does_not_hold_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_write = os.write

    def stalled_write(fd: int, data: bytes | memoryview) -> int:
        release.wait(10)  # the disk is stuck until the test lets it go
        return real_write(fd, data)

    monkeypatch.setattr(recorder.os, "write", stalled_write)
    sink = BackgroundFile(tmp_path / "rec.ts", limit=1 << 20)
    started = time.monotonic()
    for n in range(100):
        sink.write(bytes([n % 256]) * 1000)
    assert time.monotonic() - started < 0.5  # queued, not written
    assert sink.tell() == 100_000
    release.set()
    sink.close()
    sink.release()
    data = (tmp_path / "rec.ts").read_bytes()
    assert data == b"".join(bytes([n % 256]) * 1000 for n in range(100))  # all, in order


def test_the_bound_holds_the_writer_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_write = os.write

    def stalled_write(fd: int, data: bytes | memoryview) -> int:
        release.wait(10)
        return real_write(fd, data)

    monkeypatch.setattr(recorder.os, "write", stalled_write)
    sink = BackgroundFile(tmp_path / "rec.ts", limit=13_000)
    sink.write(b"x" * 6000)
    time.sleep(0.1)  # the writer thread took the first chunk and is stuck on it
    sink.write(b"y" * 6000)
    blocked = threading.Thread(target=sink.write, args=(b"z" * 6000,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # 18,000 bytes not yet on disk would pass the 13,000 bound
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    sink.close()
    sink.release()
    assert (tmp_path / "rec.ts").read_bytes() == b"x" * 6000 + b"y" * 6000 + b"z" * 6000


def test_a_write_error_reaches_the_muxer_and_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder.os, "write", full)
    sink = BackgroundFile(tmp_path / "rec.ts")
    sink.write(b"a" * 100)
    deadline = time.monotonic() + 5
    with pytest.raises(OSError, match="No space"):
        while time.monotonic() < deadline:
            sink.write(b"b")
            time.sleep(0.01)
    with pytest.raises(OSError, match="No space"):
        sink.close()
    sink.release()
