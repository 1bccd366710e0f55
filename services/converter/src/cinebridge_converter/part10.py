"""Writing a DICOM Part 10 file whose Pixel Data is one encapsulated stream, disk to disk.

PS3.5 A.4: Pixel Data (7FE0,0010) OB with undefined length, an empty Basic Offset Table item,
one fragment item holding the whole bit stream (even length, one 00H pad), a Sequence
Delimitation Item. The header is written by pydicom; the fragment is copied in fixed chunks
(reused buffers) while the output's SHA-256 and, for a source kept as it is, the source's
are computed from the same block, so memory stays bounded whatever the file size and the source
is read exactly once. A large stream is written with direct I/O (`_copy_direct`): the blocks go
from the buffer to the disk without a second copy into the page cache, one block on its way to
the disk while the next is read and hashed. A small one is written through the page cache, its
blocks handed to the disk while the copy goes on (`start_writeback`), so the caller's final
fsync waits for the last blocks only, not for the whole file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import io
import mmap
import os
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
#: A bit stream at least this large is written with direct I/O (`_copy_direct`). Below it the
#: page cache costs little, and a still is read back soon by the sender.
DIRECT_FROM = 32 << 20
#: Direct I/O wants the buffer, the file offset and the length aligned to the disk's logical
#: block (512 or 4096 bytes); 4096 serves both.
ALIGN = 4096
#: Writes the blocks of `_copy_direct` while the copying thread reads and hashes the next one.
_WRITES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="part10-write")

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
    """Write `ds` followed by `stream` as the single fragment of Pixel Data into `out`, a new
    empty file (a large stream is written from its offset 0 on). `hash_source`: compute the
    stream's SHA-256 on the way (a source kept as it is, checked against its claim check); a
    stream the converter made itself needs no such check."""
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
    tail = (b"\x00" if length & 1 else b"") + _SEQ_DELIMITER
    if padded >= DIRECT_FROM and len(head) < CHUNK and _set_direct(out, on=True):
        try:
            done = _copy_direct(
                out.fileno(), (head, tail), stream, length, (out_hash, src_hash), progress
            )
        finally:
            _set_direct(out, on=False)
    else:
        out.write(head)
        out_hash.update(head)
        done = _copy(out, stream, length, out_hash, src_hash, len(head), progress)
        out.write(tail)
        out_hash.update(tail)
    if done != length:
        raise ConversionError("the bit stream changed size while it was being encapsulated")
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


def _set_direct(out: BinaryIO, *, on: bool) -> bool:
    """Turn direct I/O (O_DIRECT) on or off for `out`'s open file; False where the system or
    the file system has none (the copy then goes through the page cache)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    out.flush()
    try:
        flags = fcntl.fcntl(out.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(out.fileno(), fcntl.F_SETFL, flags | flag if on else flags & ~flag)
    except OSError:
        return False
    return True


def _copy_direct(
    fd: int,
    ends: tuple[bytes, bytes],
    stream: Path,
    length: int,
    hashes: tuple[Any, Any],
    progress: Callable[[float], None] | None,
) -> int:
    """Write the header, `stream` and the tail (`ends`) from offset 0 of `fd` (opened for
    direct I/O) in blocks of CHUNK; returns the bytes of `stream` copied.

    Each block is filled (the header leads the first, the tail ends the last) in one of two
    page-aligned buffers, so every write starts at a multiple of CHUNK; the last one is padded
    to ALIGN and the file cut to its length afterwards. One read of the source feeds the
    output's SHA-256 (this thread), the source's (`_SOURCE_HASH`, beside it: hashlib releases
    the GIL) and the write (`_WRITES`, which waits for the disk while the next block is read
    and hashed). A buffer is not touched while its write is in flight (a file system that
    checksums direct writes, btrfs, reads it during the write). Without the page cache's copy,
    the write costs a small part of the CPU time a buffered write and its write-back cost, and
    the caller's fsync has no dirty pages to wait for; the output is not left in the page
    cache, where it would push out what other processes use."""
    (lead, tail), (out_hash, src_hash) = ends, hashes
    buffers = [mmap.mmap(-1, CHUNK) for _ in range(2)]
    writing: list[Future[None] | None] = [None, None]
    done, offset, index, eof = 0, 0, 0, False
    try:
        with open(stream, "rb", buffering=0) as src:
            os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while True:
                slot = index % 2
                if (pending := writing[slot]) is not None:
                    pending.result()  # the buffer is free again
                view = memoryview(buffers[slot])
                view[: len(lead)] = lead
                fill = start = len(lead)
                while not eof and fill < CHUNK:
                    count = src.readinto(view[fill:])
                    eof = not count
                    fill += count or 0
                hashing = None
                if src_hash is not None and fill > start:
                    hashing = _SOURCE_HASH.submit(src_hash.update, view[start:fill])
                done += fill - start
                lead = b""
                if eof:  # the tail ends this block, or leads the next when it does not fit
                    room = min(CHUNK - fill, len(tail))
                    view[fill : fill + room], lead, tail = tail[:room], tail[room:], b""
                    fill += room
                final = eof and not lead
                size = -(-fill // ALIGN) * ALIGN if final else fill
                writing[slot] = _WRITES.submit(_pwrite_all, fd, view[:size], offset)
                out_hash.update(view[:fill])
                if hashing is not None:
                    hashing.result()
                offset += fill
                index += 1
                if progress is not None:
                    progress(done / length)
                if final:
                    break
        for pending in writing:
            if pending is not None:
                pending.result()
        os.ftruncate(fd, offset)  # the last block's padding
    finally:
        for pending in writing:  # nothing may write into `fd` once it is returned
            if pending is not None:
                with contextlib.suppress(BaseException):
                    pending.result()
    return done


def _pwrite_all(fd: int, block: memoryview, offset: int) -> None:
    """Write all of `block` at `offset`. A file system that takes the O_DIRECT flag but not
    the write (EINVAL; also the rest of a short write, now unaligned) gets it through the page
    cache instead; a write that makes no progress is a full disk (ENOSPC)."""
    while block:
        try:
            count = os.pwrite(fd, block, offset)
        except OSError as exc:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            if exc.errno != errno.EINVAL or not flags & os.O_DIRECT:
                raise
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            continue
        if count == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        block, offset = block[count:], offset + count
