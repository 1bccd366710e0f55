"""Writing a DICOM Part 10 file whose Pixel Data is one encapsulated stream, disk to disk.

PS3.5 A.4: Pixel Data (7FE0,0010) OB with undefined length, an empty Basic Offset Table item,
one fragment item holding the whole bit stream (even length, one 00H pad), a Sequence
Delimitation Item. The header is written by pydicom; the fragment is copied in fixed chunks while
both the source's and the output's SHA-256 are computed, so memory stays bounded whatever the
file size and the source is read exactly once.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from .errors import ConversionError

#: PS3.5 A.4: an item length is 32 bits and FFFFFFFFH means undefined.
MAX_FRAGMENT = 0xFFFFFFFE
CHUNK = 4 << 20

_ITEM = b"\xfe\xff\x00\xe0"
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_PIXEL_DATA_OB_UNDEFINED = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str  # of the Part 10 file
    source_sha256: str  # of the encapsulated bit stream, to check against the claim check


def header_bytes(ds: Dataset) -> bytes:
    """Preamble, File Meta and data set up to (not including) Pixel Data."""
    if "PixelData" in ds:
        raise ValueError("the data set must not carry Pixel Data; it is streamed after it")
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write_encapsulated(
    out: BinaryIO,
    ds: Dataset,
    stream: Path,
    *,
    progress: Callable[[float], None] | None = None,
) -> Written:
    """Write `ds` followed by `stream` as the single fragment of Pixel Data."""
    length = stream.stat().st_size
    if length == 0:
        raise ConversionError("nothing to encapsulate: the bit stream is empty")
    padded = length + (length & 1)
    if padded > MAX_FRAGMENT:
        raise ConversionError(f"bit stream of {length} bytes exceeds one fragment (2^32-2)")
    out_hash, src_hash = hashlib.sha256(), hashlib.sha256()
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
    done = 0
    # hashlib releases the GIL on large buffers: the source's hash runs on a second core while
    # this thread writes the block and hashes the output.
    with open(stream, "rb") as src, ThreadPoolExecutor(1, "src-sha256") as pool:
        while block := src.read(CHUNK):
            pending = pool.submit(src_hash.update, block)
            out.write(block)
            out_hash.update(block)
            pending.result()
            done += len(block)
            if progress is not None:
                progress(done / length)
    if done != length:
        raise ConversionError("the bit stream changed size while it was being encapsulated")
    tail = (b"\x00" if length & 1 else b"") + _SEQ_DELIMITER
    out.write(tail)
    out_hash.update(tail)
    return Written(
        len(head) + padded + len(_SEQ_DELIMITER), out_hash.hexdigest(), src_hash.hexdigest()
    )
