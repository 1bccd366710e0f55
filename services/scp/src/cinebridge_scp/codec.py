"""Direct encoding of DIMSE command sets (PS3.7 E.1) for pynetdicom's hot path.

pynetdicom encodes every command set it sends with pydicom's `write_dataset`, twice per
message (once for the group length, once to send): for a C-STORE-RSP that is most of the
cost of answering. Command sets are flat, Implicit VR Little Endian, and made of a handful of
US/UL/UI/AE elements, so they are encoded here directly, byte-identical (unit-tested against
pydicom); any element outside the table, or a value of an unexpected type, goes to pydicom.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import dimse_messages
from pynetdicom.dsutils import encode as _pydicom_encode

#: PS3.7 Table E.1-1: command elements by tag → VR (the US/UL/UI/AE ones).
COMMAND_VRS: dict[int, str] = {
    0x00000000: "UL",  # Command Group Length
    0x00000002: "UI",  # Affected SOP Class UID
    0x00000003: "UI",  # Requested SOP Class UID
    0x00000100: "US",  # Command Field
    0x00000110: "US",  # Message ID
    0x00000120: "US",  # Message ID Being Responded To
    0x00000600: "AE",  # Move Destination
    0x00000700: "US",  # Priority
    0x00000800: "US",  # Command Data Set Type
    0x00000900: "US",  # Status
    0x00001000: "UI",  # Affected SOP Instance UID
    0x00001001: "UI",  # Requested SOP Instance UID
    0x00001030: "AE",  # Move Originator Application Entity Title
    0x00001031: "US",  # Move Originator Message ID
}
_INTS = {"US": ("<H", 0xFFFF), "UL": ("<I", 0xFFFFFFFF)}
_PADS = {"UI": b"\0", "AE": b" "}


def encode_command(ds: Dataset) -> bytes | None:
    """Implicit VR LE bytes of a command set, or None if it holds anything unusual."""
    parts: list[bytes] = []
    for elem in ds:
        tag = int(elem.tag)
        vr = COMMAND_VRS.get(tag)
        if vr is None:
            return None
        value: Any = elem.value
        if vr in _INTS:
            fmt, top = _INTS[vr]
            if type(value) is not int or not 0 <= value <= top:
                return None
            raw = struct.pack(fmt, value)
        else:
            if not isinstance(value, str) or not value.isascii():
                return None
            raw = value.encode("ascii")
            if len(raw) % 2:
                raw += _PADS[vr]
        parts.append(struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(raw)) + raw)
    return b"".join(parts)


def encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """Replacement of `encode` inside pynetdicom.dimse_messages (command sets only there)."""
    if is_implicit_vr and is_little_endian and not deflated:
        encoded = encode_command(ds)
        if encoded is not None:
            return encoded
    return _pydicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


def install() -> None:
    setattr(dimse_messages, "encode", encode)  # noqa: B010 - module patch
