"""The data set of a Part 10 file as it is on disk, for C-STORE without decoding (PS3.10 7.1).

A Part 10 file is a 128-byte preamble, "DICM", the File Meta Information (group 0002, always
Explicit VR Little Endian) and then the data set in its transfer syntax. A C-STORE sends that
data set byte for byte, so only the meta group is read here: each element's header, bounded.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

#: PS3.5 7.1.2: the VRs with a reserved 2-byte field and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})  # fmt: skip
#: A File Meta Information group is a few hundred bytes; more is not a Part 10 header.
MAX_META = 1 << 16


class NotPart10(ValueError):
    """The file does not start with a well-formed Part 10 header."""


def data_set_offset(fh: BinaryIO) -> int:
    """Position the file at its data set (after group 0002) and return that offset."""
    head = fh.read(132)
    if len(head) != 132 or head[128:] != b"DICM":
        raise NotPart10("no DICM prefix after the 128-byte preamble")
    pos = 132
    while True:
        header = fh.read(8)
        if len(header) < 8:
            break  # a file of File Meta Information only: an empty data set
        group, _, vr = struct.unpack("<HH2s", header[:6])
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            extra = fh.read(4)
            if len(extra) != 4:
                raise NotPart10("File Meta Information truncated")
            (length,) = struct.unpack("<I", extra)
            size = 12 + length
        else:
            (length,) = struct.unpack("<H", header[6:8])
            size = 8 + length
        pos += size
        if pos > 132 + MAX_META:
            raise NotPart10("File Meta Information longer than any header can be")
        fh.seek(pos)
    fh.seek(pos)
    return pos
