"""ISO BMFF (MP4/MOV, ISO/IEC 14496-12) read box header by box header, never the media data:
the file's brand, whether the index box is whole, a cut-off last box, and the sample count of a
fragmented file."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: ISO BMFF major/compatible brands that make a file MP4 rather than QuickTime (ISO/IEC 14496-14).
MP4_BRANDS = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso3",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"avc1",
        b"M4V ",
        b"dash",
        b"msnv",
    }
)

#: A `moof` box larger than this is not a fragment header a capture wrote: counting gives up.
MAX_MOOF_BYTES = 1 << 24


def mp4_brand(path: Path) -> bytes | None:
    """The major brand of the `ftyp` box that opens the file, or None (not ISO BMFF)."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    if len(head) >= 16 and head[4:8] == b"ftyp":
        return head[8:12]
    return None


def top_level_boxes(fh: BinaryIO, size: int) -> Iterator[tuple[int, bytes, int, int]]:
    """(offset, type, size, header size) of each top-level box of a file of `size` bytes, as
    the headers say (ISO/IEC 14496-12 4.2: a 64-bit `largesize` when size is 1; size 0 runs to
    the end of the file). The walk ends after a box whose size is below a header's."""
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        head = fh.read(16)
        box_size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if box_size == 1 and len(head) == 16:
            box_size, header = struct.unpack(">Q", head[8:16])[0], 16
        elif box_size == 0:
            box_size = size - pos
        yield pos, kind, box_size, header
        if box_size < 8:
            return
        pos += box_size


def complete_box(path: Path, kind: bytes) -> bool:
    """Whether a top-level box of this type lies wholly inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        for pos, found, box_size, _ in top_level_boxes(fh, size):
            if box_size < 8:
                return False
            if found == kind:
                return bool(pos + box_size <= size)
    return False


def box_overruns(path: Path) -> bool:
    """Whether an MP4's last top-level box runs past the end of the file (a cut-off write)."""
    size, end = path.stat().st_size, 0
    with open(path, "rb") as fh:
        for pos, _, box_size, _ in top_level_boxes(fh, size):
            if box_size < 8:
                return True
            end = pos + box_size
    return end != size


def fragmented_sample_count(path: Path, track_id: int) -> int | None:
    """Samples of one track in a fragmented MP4: the sum of its `trun` counts over every `moof`
    (ISO/IEC 14496-12 8.8), read box header by box header without touching `mdat`.

    None when the file is not fragmented or anything looks off (a cut-off last fragment, a
    box that does not add up): the caller then counts packets instead.
    """
    size = path.stat().st_size
    total, seen = 0, False
    with open(path, "rb") as fh:
        for pos, kind, box_size, header in top_level_boxes(fh, size):
            if box_size < header or pos + box_size > size:
                return None
            if kind == b"moof":
                if box_size > MAX_MOOF_BYTES:
                    return None
                fh.seek(pos + header)
                count = _moof_samples(fh.read(box_size - header), track_id)
                if count is None:
                    return None
                total, seen = total + count, True
    return total if seen else None


def _boxes(body: bytes) -> list[tuple[bytes, bytes]]:
    found, pos = [], 0
    while pos + 8 <= len(body):
        size, kind = struct.unpack(">I4s", body[pos : pos + 8])
        if size < 8 or pos + size > len(body):
            raise ValueError("box overruns its parent")
        found.append((kind, body[pos + 8 : pos + size]))
        pos += size
    return found


def _moof_samples(body: bytes, track_id: int) -> int | None:
    count = 0
    try:
        for kind, traf in _boxes(body):
            if kind != b"traf":
                continue
            children = _boxes(traf)
            ids = [struct.unpack(">I", p[4:8])[0] for k, p in children if k == b"tfhd"]
            if ids == [track_id]:
                count += sum(struct.unpack(">I", p[4:8])[0] for k, p in children if k == b"trun")
    except (ValueError, struct.error):
        return None
    return count
