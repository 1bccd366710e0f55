"""Structural check of a received Part 10 file without loading its values.

The chunked C-STORE receive gives us the dataset exactly as the peer sent it. Before we answer
0000 we must know it is complete (pydicom decodes lazily, so a truncated dataset would only
fail later, docs/reliability.md §1.4): this walks every element header, item and fragment,
seeking over values, checks that each length fits inside its parent and the file, bounds the
sequence nesting depth, and returns the raw bytes of a few small top-level elements we index.
A 2 GB video costs a handful of reads. Deflated datasets are walked through a streaming
inflater (PS3.5 A.5), still forward-only and in bounded memory.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from pydicom.datadict import dictionary_VR

UNDEFINED: Final = 0xFFFFFFFF
ITEM: Final = (0xFFFE, 0xE000)
ITEM_END: Final = (0xFFFE, 0xE00D)
SEQ_END: Final = (0xFFFE, 0xE0DD)
PIXEL_DATA: Final = (0x7FE0, 0x0010)
#: PS3.5 7.1.2: explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
IMPLICIT_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"
DEFLATED: Final = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")
#: Largest value of a wanted (indexed) element we read; LO/PN/UI are far below it.
MAX_WANTED_VALUE: Final = 4096


class MalformedDataset(ValueError):
    """The dataset is truncated, inconsistent or too deep; says where."""


@dataclass
class WalkResult:
    transfer_syntax: str
    meta: dict[tuple[int, int], bytes] = field(default_factory=dict)
    values: dict[tuple[int, int], bytes] = field(default_factory=dict)
    elements: int = 0


class _Reader:
    """Forward-only reader over the file (seeks) or over an inflater (discards)."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.pos = fh.tell()
        self.size = size  # None-equivalent for deflate is handled by the subclass

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise MalformedDataset(f"truncated at byte {self.pos + len(data)} (wanted {n})")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise MalformedDataset(f"value of {n} bytes at {self.pos} runs past end of file")
        self.fh.seek(n, 1)
        self.pos += n

    def at_end(self) -> bool:
        return self.pos >= self.size


class _InflateReader(_Reader):
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.pos = 0
        self.size = 1 << 62
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = b""

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            if self._z.unconsumed_tail:
                chunk = self._z.unconsumed_tail
            else:
                chunk = self.fh.read(1 << 16)
                if not chunk:
                    return
            self._buf += self._z.decompress(chunk, max(n - len(self._buf), 1 << 16))

    def read(self, n: int) -> bytes:
        self._fill(n)
        if len(self._buf) < n:
            raise MalformedDataset(f"deflated stream truncated at byte {self.pos}")
        data, self._buf = self._buf[:n], self._buf[n:]
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            step = min(n, 1 << 20)
            self.read(step)
            n -= step

    def at_end(self) -> bool:
        self._fill(1)
        if self._buf:
            return False
        if not self._z.eof:  # input ran out before the final deflate block: truncated
            raise MalformedDataset(f"deflated stream ends before its final block at {self.pos}")
        return True


class _Walker:
    def __init__(
        self,
        r: _Reader,
        implicit: bool,
        little: bool,
        max_depth: int,
        wanted: Collection[tuple[int, int]],
    ) -> None:
        self.r = r
        self.implicit = implicit
        self.tag_fmt = "<HH" if little else ">HH"
        self.u32 = "<L" if little else ">L"
        self.u16 = "<H" if little else ">H"
        self.max_depth = max_depth
        self.wanted = wanted
        self.result_values: dict[tuple[int, int], bytes] = {}
        self.count = 0

    def header(self) -> tuple[tuple[int, int], bytes | None, int]:
        tag: tuple[int, int] = struct.unpack(self.tag_fmt, self.r.read(4))
        if tag[0] == 0xFFFE:
            return tag, None, struct.unpack(self.u32, self.r.read(4))[0]
        if self.implicit:
            return tag, None, struct.unpack(self.u32, self.r.read(4))[0]
        vr = self.r.read(2)
        if vr in LONG_VRS:
            self.r.read(2)
            return tag, vr, struct.unpack(self.u32, self.r.read(4))[0]
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise MalformedDataset(f"invalid VR {vr!r} for tag {tag[0]:04X},{tag[1]:04X}")
        return tag, vr, struct.unpack(self.u16, self.r.read(2))[0]

    def dataset(self, end: int | None, depth: int) -> None:
        """Walk elements until `end` (defined length) or an item delimiter (end None)."""
        while True:
            if end is not None and self.r.pos >= end:
                if self.r.pos > end:
                    raise MalformedDataset(f"element overruns its item at byte {self.r.pos}")
                return
            if end is None and depth == 0 and self.r.at_end():
                return
            tag, vr, length = self.header()
            self.count += 1
            if tag == ITEM_END:
                if end is not None or depth == 0:
                    raise MalformedDataset(f"unexpected item delimiter at {self.r.pos}")
                return
            if tag[0] == 0xFFFE:
                raise MalformedDataset(f"unexpected item tag at byte {self.r.pos}")
            self.element(tag, vr, length, end, depth)

    def element(
        self, tag: tuple[int, int], vr: bytes | None, length: int, end: int | None, depth: int
    ) -> None:
        is_sq = vr == b"SQ" or (vr is None and _implicit_vr(tag) == "SQ")
        if length == UNDEFINED:
            if tag == PIXEL_DATA and not is_sq and not self.implicit:
                self.fragments()
            elif is_sq or vr == b"UN" or vr is None:
                self.sequence(None, depth + 1)
            else:
                raise MalformedDataset(f"undefined length on VR {vr!r} at {self.r.pos}")
            return
        if end is not None and self.r.pos + length > end:
            raise MalformedDataset(f"element of {length} bytes overruns its item at {self.r.pos}")
        if is_sq:
            self.sequence(self.r.pos + length, depth + 1)
        elif depth == 0 and tag in self.wanted and length <= MAX_WANTED_VALUE:
            self.result_values[tag] = self.r.read(length)
        else:
            self.r.skip(length)

    def sequence(self, end: int | None, depth: int) -> None:
        if depth > self.max_depth:
            raise MalformedDataset(f"sequences nest deeper than {self.max_depth}")
        while end is None or self.r.pos < end:
            tag, _, length = self.header()
            if tag == SEQ_END and end is None:
                return
            if tag != ITEM:
                raise MalformedDataset(f"expected an item in a sequence at {self.r.pos}")
            if length == UNDEFINED:
                self.dataset(None, depth)
            else:
                if end is not None and self.r.pos + length > end:
                    raise MalformedDataset(f"item overruns its sequence at {self.r.pos}")
                self.dataset(self.r.pos + length, depth)
        if self.r.pos != end:
            raise MalformedDataset(f"sequence overruns its length at {self.r.pos}")

    def fragments(self) -> None:
        while True:
            tag, _, length = self.header()
            if tag == SEQ_END:
                return
            if tag != ITEM or length == UNDEFINED:
                raise MalformedDataset(f"bad encapsulated fragment at {self.r.pos}")
            self.r.skip(length)


def _implicit_vr(tag: tuple[int, int]) -> str:
    try:
        return str(dictionary_VR((tag[0] << 16) | tag[1]))
    except KeyError:
        return ""


def _read_meta(r: _Reader) -> dict[tuple[int, int], bytes]:
    if r.read(132)[128:] != b"DICM":
        raise MalformedDataset("no DICM prefix")
    walker = _Walker(r, implicit=False, little=True, max_depth=0, wanted=())
    meta: dict[tuple[int, int], bytes] = {}
    while True:
        peek = r.fh.read(2)
        r.fh.seek(-len(peek), 1)
        if len(peek) < 2 or struct.unpack("<H", peek)[0] != 0x0002:
            return meta
        tag, _, length = walker.header()
        if length > MAX_WANTED_VALUE:
            raise MalformedDataset("file meta element too long")
        meta[tag] = r.read(length)


def walk_file(
    fh: BinaryIO, size: int, wanted: Collection[tuple[int, int]], max_depth: int = 64
) -> WalkResult:
    """Check the whole file; return its transfer syntax, meta and the `wanted` top-level values."""
    fh.seek(0)
    r = _Reader(fh, size)
    try:
        meta = _read_meta(r)
        ts = meta.get((0x0002, 0x0010), b"").rstrip(b"\x00 ").decode("ascii")
        if not ts:
            raise MalformedDataset("file meta has no transfer syntax")
        body: _Reader = _InflateReader(fh) if ts in DEFLATED else r
        walker = _Walker(
            body,
            implicit=ts == IMPLICIT_LE,
            little=ts != EXPLICIT_BE,
            max_depth=max_depth,
            wanted=wanted,
        )
        walker.dataset(None, 0)
    except (struct.error, UnicodeDecodeError, zlib.error) as exc:
        raise MalformedDataset(f"undecodable dataset: {exc}") from exc
    return WalkResult(ts, meta, walker.result_values, walker.count)
