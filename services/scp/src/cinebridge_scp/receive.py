"""Where a C-STORE data set is received: a temp file, hashed as it arrives.

The file lands in this instance's temp directory on the media store's filesystem (the final move
is a rename), SHA-256 and size are computed while the bytes arrive (no second read of a 2 GB
video), the instance size is bounded, and a write failure (disk full) does not abort the
association: the rest of the data set is drained and Ingest answers 0xA700.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Bytes gathered before a write system call: a data set arrives in pieces of a PDV or of one
#: socket read (16 KiB from a peer with DCMTK's default PDU size), and one write per piece cost
#: ~30% more CPU than a few large ones (0.5 MB instances).
WRITE_BUFFER = 1 << 18


class SpareFiles:
    """Empty receive files made ahead of need by a helper thread.

    Creating a file is a journalled metadata change: while other writers on the same
    filesystem (PostgreSQL's WAL, the other associations' fsyncs) commit the journal, the create
    waits for it, and it came right between a C-STORE-RQ and its data. Made here, that wait
    overlaps the transfers instead. A spare left at a stop is removed with the directory's other
    partial files at the next start (app.remove_stale).
    """

    def __init__(self, temp_dir: Path, keep: int = 4) -> None:
        self.temp_dir = temp_dir
        self.keep = keep
        self._ready: collections.deque[tuple[Path, int]] = collections.deque()
        self._wanted = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._fill, name="scp-spare-files", daemon=True)
        self._thread.start()

    def take(self) -> tuple[Path, int] | None:
        """A created, empty file (path, open descriptor), or None when none is ready."""
        try:
            spare = self._ready.popleft()
        except IndexError:
            spare = None
        self._wanted.set()
        return spare

    def ready(self) -> list[Path]:
        """The spares made and not yet taken."""
        return [path for path, _ in list(self._ready)]

    def _fill(self) -> None:
        while not self._stopped:
            while len(self._ready) < self.keep and not self._stopped:
                path = self.temp_dir / f"{uuid.uuid4().hex}.part"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                except OSError as exc:
                    # Disk full, directory gone: the receiver creates its own and reports it.
                    log.debug("spare receive file not made", extra={"error": str(exc)})
                    break
                self._ready.append((path, fd))
            self._wanted.wait(5.0)
            self._wanted.clear()

    def close(self) -> None:
        """Stop making spares and remove those not taken."""
        self._stopped = True
        self._wanted.set()
        self._thread.join(5.0)
        while self._ready:
            path, fd = self._ready.popleft()
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()


@dataclass(frozen=True)
class ReceiveConfig:
    """Per-server settings of the writer."""

    temp_dir: Path
    max_bytes: int
    #: Test seam: called before each write with the file size it would reach; may raise OSError.
    fault: Callable[[int], None] | None = None
    #: Files made ahead (SpareFiles); without it each receive creates its own.
    spares: SpareFiles | None = None


class ReceiveFile:
    """One C-STORE data set (after its File Meta Information) as it arrives."""

    def __init__(self, config: ReceiveConfig) -> None:
        self._config = config
        self._hash = hashlib.sha256()
        self.size = 0
        self.error: str | None = None
        self.out_of_resources = False
        spare = config.spares.take() if config.spares is not None else None
        if spare is not None:
            self.path, fd = spare
            self.name = str(self.path)
            self._fh = open(fd, "wb", buffering=WRITE_BUFFER)
            return
        self.path = config.temp_dir / f"{uuid.uuid4().hex}.part"
        self.name = str(self.path)
        try:
            self._fh = open(self.path, "xb", buffering=WRITE_BUFFER)
        except OSError as exc:
            self._fh = open(os.devnull, "wb")
            self._fail(f"cannot create the receive file: {exc.strerror or exc}", True)

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

    def refuse(self, reason: str) -> None:
        """The data set is refused whatever it holds (0x0110): drain it, keep nothing."""
        if self.error is None:
            self._fail(reason, False)

    def _fail(self, reason: str, out_of_resources: bool) -> None:
        self.error = reason
        self.out_of_resources = out_of_resources
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

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
        """Close the file (Ingest already moved or removed it)."""
        with contextlib.suppress(OSError):
            self._fh.close()

    def discard(self) -> None:
        """Remove the file (refused, or its connection ended mid-transfer)."""
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


#: Bytes never written from a peer: controls, non-ASCII and the value separator `\\`.
_UNWANTED = bytes(b for b in range(256) if not 0x20 <= b < 0x7F or b == 0x5C)


def _element(elem: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 2, elem, vr, len(value)) + value


def _clean(value: str, limit: int) -> bytes:
    """Printable ASCII only, bounded: the command's values are the peer's, not ours."""
    raw = value.encode("ascii", "replace")[:limit]
    return raw.translate(None, _UNWANTED)


def file_meta_bytes(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    implementation_class_uid: str,
    implementation_version_name: str,
    source_ae_title: str,
) -> bytes:
    """Preamble, prefix and File Meta Information of a received instance (PS3.10 7.1).

    The UIDs come from the C-STORE-RQ and the negotiated context; Ingest later checks that the
    data set carries the same SOP Class and Instance UIDs, so a hostile value here is refused
    with the instance. (0002,0016) records the sending AE.
    """
    elements = [
        struct.pack("<HH2sHI", 2, 1, b"OB", 0, 2) + b"\x00\x01",
        _element(0x0002, b"UI", _clean(sop_class_uid, 64), b"\0"),
        _element(0x0003, b"UI", _clean(sop_instance_uid, 64), b"\0"),
        _element(0x0010, b"UI", _clean(transfer_syntax, 64), b"\0"),
        _element(0x0012, b"UI", _clean(implementation_class_uid, 64), b"\0"),
        _element(0x0013, b"SH", _clean(implementation_version_name, 16), b" "),
    ]
    source = _clean(source_ae_title, 16)
    if source.strip():
        elements.append(_element(0x0016, b"AE", source, b" "))
    body = b"".join(elements)
    group = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body))
    return bytes(128) + b"DICM" + group + body
