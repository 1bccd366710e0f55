"""Where pynetdicom's chunked C-STORE receive writes: our temp file, hashed as it arrives.

With `_config.STORE_RECV_CHUNKED_DATASET = True` pynetdicom writes each incoming dataset to
`NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")` (dimse_messages.py) in the system
temp dir. We replace that factory so the file lands on the media store's filesystem (the
final move is a rename), SHA-256 and size are computed while the bytes arrive (no second
read of a 2 GB video), the instance size is bounded, and a write failure (disk full) does not
abort the association: the rest of the dataset is drained and the handler answers 0xA700.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import _config, dimse_messages


@dataclass(frozen=True)
class ReceiveConfig:
    """Per-server settings of the writer (looked up from the receiving association)."""

    temp_dir: Path
    max_bytes: int
    #: Test seam: called before each write with the file size it would reach; may raise OSError.
    fault: Callable[[int], None] | None = None


class ReceiveFile:
    """A file-like object that pynetdicom writes one C-STORE dataset into."""

    def __init__(self, config: ReceiveConfig) -> None:
        self.path = config.temp_dir / f"{uuid.uuid4().hex}.part"
        self.name = str(self.path)
        self._fh = open(self.path, "xb")  # closed in finish()/discard()
        self._config = config
        self._hash = hashlib.sha256()
        self.size = 0
        self.error: str | None = None
        self.out_of_resources = False
        self._lock = threading.Lock()
        self._claimed = False
        self._closed = False

    @property
    def file(self) -> ReceiveFile:
        """pynetdicom calls `.file.flush()` after each fragment."""
        return self

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.error is not None:
            return len(data)  # drain: keep the association in step, write nothing
        try:
            if self.size + len(data) > self._config.max_bytes:
                self._fail(f"instance larger than {self._config.max_bytes} bytes", True)
                return len(data)
            if self._config.fault is not None:
                self._config.fault(self.size + len(data))
            self._fh.write(data)
        except OSError as exc:
            self._fail(f"write failed: {exc.strerror or exc}", True)
            return len(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """pynetdicom flushes after every fragment; our buffered writes need not."""

    def _fail(self, reason: str, out_of_resources: bool) -> None:
        self.error = reason
        self.out_of_resources = out_of_resources
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def claim(self) -> bool:
        """The C-STORE handler takes ownership; False if the connection already discarded it."""
        with self._lock:
            if self._closed and not self._claimed:
                return False
            self._claimed = True
            return True

    def seal(self) -> tuple[int, str]:
        """Hand buffered bytes to the OS (readable by path, not yet durable); size and SHA-256."""
        self._fh.flush()
        return self.size, self._hash.hexdigest()

    def finish(self) -> tuple[int, str]:
        """Flush and fsync the received bytes (PS3.4 B.2.2: success promises storage)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return self.size, self._hash.hexdigest()

    def close(self) -> None:
        """Called by pynetdicom after the handler; the handler already moved or removed us."""
        with contextlib.suppress(OSError):
            self._fh.close()

    def discard_owned(self) -> None:
        """Remove the file the handler owns (it was refused)."""
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def discard(self) -> None:
        """Remove the partial file unless the handler owns it (connection closed mid-transfer)."""
        with self._lock:
            if self._claimed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


_default_config: ReceiveConfig | None = None


def _factory(*_args: Any, **_kwargs: Any) -> ReceiveFile:
    """Replacement of NamedTemporaryFile inside pynetdicom.dimse_messages (DUL thread)."""
    assoc = getattr(threading.current_thread(), "assoc", None)
    server = getattr(assoc, "_server", None)
    config: ReceiveConfig | None = getattr(server, "receive_config", None) or _default_config
    if config is None:
        raise RuntimeError("cinebridge_scp.receive is not configured")
    rf = ReceiveFile(config)
    if assoc is not None:
        files: list[ReceiveFile] = assoc.__dict__.setdefault("cb_receive_files", [])
        files[:] = [f for f in files if not f._closed and not f._claimed]
        files.append(rf)
    return rf


def install(default: ReceiveConfig | None = None) -> None:
    """Turn on pynetdicom's chunked receive and route it through ReceiveFile."""
    global _default_config
    _default_config = default
    _config.STORE_RECV_CHUNKED_DATASET = True
    setattr(dimse_messages, "NamedTemporaryFile", _factory)  # noqa: B010 - module patch


def discard_unclaimed(assoc: Any) -> int:
    """Remove the partial files of an association whose connection closed."""
    files: list[ReceiveFile] = assoc.__dict__.get("cb_receive_files", [])
    count = 0
    for rf in files:
        if not rf._claimed:
            rf.discard()
            count += 1
    files.clear()
    return count
