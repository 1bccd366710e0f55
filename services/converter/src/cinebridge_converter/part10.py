"""Writing a DICOM Part 10 file whose Pixel Data is one encapsulated stream, disk to disk.

PS3.5 A.4: Pixel Data (7FE0,0010) OB with undefined length, an empty Basic Offset Table item,
one fragment item holding the whole bit stream (even length, one 00H pad), a Sequence
Delimitation Item. The header is written by pydicom; the fragment is copied in fixed chunks
(one reused buffer) while the output's SHA-256 and, for a source kept as it is, the source's
are computed, so memory stays bounded whatever the file size and the source is read exactly once.
Written blocks are handed to the disk while the copy goes on (`start_writeback`), so the caller's
final fsync waits for the last blocks only, not for the whole file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import struct
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from .errors import ConversionError

#: PS3.5 A.4: an item length is 32 bits and FFFFFFFFH means undefined.
MAX_FRAGMENT = 0xFFFFFFFE
CHUNK = 4 << 20
#: Bytes written between two write-back requests (`start_writeback`).
WRITEBACK_EVERY = 32 << 20
#: Hashes the source's blocks beside the copy (`_copy`). One for the process, not one per
#: instance: starting and joining a thread for each file cost a snapshot a few milliseconds
#: of its Save -> sent on a loaded machine (bench/e2e.py). Each copy has at most one block in
#: it at a time, so a worker per concurrent conversion is enough.
_SOURCE_HASH = ThreadPoolExecutor(max_workers=4, thread_name_prefix="src-sha256")

_ITEM = b"\xfe\xff\x00\xe0"
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_PIXEL_DATA_OB_UNDEFINED = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str  # of the Part 10 file
    source_sha256: str | None  # of the encapsulated bit stream (when asked), for the claim check


def header_bytes(ds: Dataset) -> bytes:
    """Preamble, File Meta and data set up to (not including) Pixel Data."""
    if "PixelData" in ds:
        raise ValueError("the data set must not carry Pixel Data; it is streamed after it")
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@functools.cache
def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux sync_file_range(2) with SYNC_FILE_RANGE_WRITE: start writing a range of dirty pages
    to the disk and return at once (the pages stay cached; durability is still the caller's
    fsync). None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range  # the C library in use
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    write_only = 2  # SYNC_FILE_RANGE_WRITE

    def start(fd: int, offset: int, length: int) -> None:
        call(fd, offset, length, write_only)  # advisory: a failure leaves it to the fsync

    return start


def start_writeback(out: BinaryIO, offset: int, length: int) -> None:
    """Let the disk take `length` bytes from `offset` of `out` while the copy goes on: without
    it the kernel holds the dirty pages (up to its dirty ratio, gigabytes on a large machine) and
    the final fsync of a large instance waits for all of them at once."""
    start = _sync_file_range()
    if start is None:
        return
    out.flush()
    start(out.fileno(), offset, length)


def write_encapsulated(
    out: BinaryIO,
    ds: Dataset,
    stream: Path,
    *,
    progress: Callable[[float], None] | None = None,
    hash_source: bool = True,
) -> Written:
    """Write `ds` followed by `stream` as the single fragment of Pixel Data. `hash_source`:
    compute the stream's SHA-256 on the way (a source kept as it is, checked against its claim
    check); a stream the converter made itself needs no such check."""
    length = stream.stat().st_size
    if length == 0:
        raise ConversionError("nothing to encapsulate: the bit stream is empty")
    padded = length + (length & 1)
    if padded > MAX_FRAGMENT:
        raise ConversionError(f"bit stream of {length} bytes exceeds one fragment (2^32-2)")
    out_hash = hashlib.sha256()
    src_hash = hashlib.sha256() if hash_source else None
    head = (
        header_bytes(ds)
        + _PIXEL_DATA_OB_UNDEFINED
        + _ITEM
        + struct.pack("<I", 0)
        + _ITEM
        + struct.pack("<I", padded)
    )
    out.write(head)
    out_hash.update(head)
    done = _copy(out, stream, length, out_hash, src_hash, len(head), progress)
    if done != length:
        raise ConversionError("the bit stream changed size while it was being encapsulated")
    tail = (b"\x00" if length & 1 else b"") + _SEQ_DELIMITER
    out.write(tail)
    out_hash.update(tail)
    return Written(
        len(head) + padded + len(_SEQ_DELIMITER),
        out_hash.hexdigest(),
        src_hash.hexdigest() if src_hash is not None else None,
    )


def _copy(
    out: BinaryIO,
    stream: Path,
    length: int,
    out_hash: Any,
    src_hash: Any,
    start: int,
    progress: Callable[[float], None] | None,
) -> int:
    """Copy `stream` into `out` (written from offset `start` on), hashing on the way; returns
    the bytes copied. hashlib releases the GIL on large buffers: the source's hash runs on a
    second core while this thread writes the block and hashes the output. One buffer is read
    into again and again (both hashes are done with it before the next read), so no 4 MiB
    object is allocated per block (nor 4 MiB zeroed for a snapshot of a few hundred KB)."""
    buffer = bytearray(min(CHUNK, max(1, length)))
    done = flushed = 0
    pending: Future[None] | None = None
    with open(stream, "rb", buffering=0) as src:
        while True:
            count = src.readinto(buffer)
            if not count:
                break
            block = memoryview(buffer)[:count]
            if src_hash is not None:
                pending = _SOURCE_HASH.submit(src_hash.update, block)
            out.write(block)
            out_hash.update(block)
            if pending is not None:
                pending.result()
            done += count
            if done - flushed >= WRITEBACK_EVERY:
                start_writeback(out, start + flushed, done - flushed)
                flushed = done
            if progress is not None:
                progress(done / length)
    return done
