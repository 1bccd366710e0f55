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
import re
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.filewriter import write_file_meta_info as _write_file_meta_info
from pydicom.uid import UID
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    _config,
    dimse_messages,
)
from pynetdicom.dsutils import create_file_meta as _create_file_meta


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


_PLAIN_UID = re.compile(r"[0-9.]{1,64}")


@dataclass(frozen=True)
class MetaRequest:
    """What pynetdicom asks `create_file_meta` for; encoded by `file_meta_bytes`."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def _element(elem: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 2, elem, vr, len(value)) + value


def file_meta_bytes(meta: MetaRequest) -> bytes | None:
    """The File Meta Information pydicom writes for pynetdicom, built directly (PS3.10 7.1).

    Same bytes as `write_file_meta_info(create_file_meta(...))` (unit-tested), at a fraction of
    the cost of building and encoding a pydicom dataset for every instance. None when a UID is
    anything but 1-64 digits and dots: pydicom then writes it (and keeps its checks).
    """
    uids = (meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax)
    if not all(_PLAIN_UID.fullmatch(uid) for uid in uids):
        return None
    body = b"".join(
        [
            struct.pack("<HH2sHI", 2, 1, b"OB", 0, 2) + b"\x00\x01",
            _element(0x0002, b"UI", uids[0].encode(), b"\0"),
            _element(0x0003, b"UI", uids[1].encode(), b"\0"),
            _element(0x0010, b"UI", uids[2].encode(), b"\0"),
            _element(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode(), b"\0"),
            _element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode(), b" "),
        ]
    )
    return struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body)) + body


def _lazy_file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> Any:
    """Replacement of create_file_meta inside pynetdicom.dimse_messages (its only caller)."""
    return MetaRequest(str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax))


def _write_meta(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """Replacement of write_file_meta_info inside pynetdicom.dimse_messages."""
    if isinstance(file_meta, MetaRequest):
        encoded = file_meta_bytes(file_meta)
        if encoded is not None:
            fp.write(encoded)
            return
        file_meta = _create_file_meta(
            sop_class_uid=UID(file_meta.sop_class_uid),
            sop_instance_uid=UID(file_meta.sop_instance_uid),
            transfer_syntax=UID(file_meta.transfer_syntax),
        )
    _write_file_meta_info(fp, file_meta, enforce_standard=enforce_standard)


def install(default: ReceiveConfig | None = None) -> None:
    """Turn on pynetdicom's chunked receive and route it through ReceiveFile."""
    global _default_config
    _default_config = default
    _config.STORE_RECV_CHUNKED_DATASET = True
    setattr(dimse_messages, "NamedTemporaryFile", _factory)  # noqa: B010 - module patch
    setattr(dimse_messages, "create_file_meta", _lazy_file_meta)  # noqa: B010
    setattr(dimse_messages, "write_file_meta_info", _write_meta)  # noqa: B010


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
