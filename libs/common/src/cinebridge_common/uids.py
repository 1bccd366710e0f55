"""DICOM UIDs: under the organisation's root, or UUID-derived `2.25.` (PS3.5 B.2), deterministic.

The same job key always yields the same UID, so a redelivered job makes the same instance
(docs/reliability.md §2): `make_uid("sop", media_id, root=...)`.
"""

from __future__ import annotations

import hashlib
import re
import uuid

#: PS3.5 9.1: components of digits separated by dots, no leading zeros, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LENGTH = 64


class InvalidUid(ValueError):
    """A UID that breaks PS3.5 9.1 (hostile or malformed input)."""


def is_valid_uid(value: str) -> bool:
    return bool(value) and len(value) <= MAX_UID_LENGTH and bool(_UID.match(value))


def check_uid(value: str, what: str = "UID") -> str:
    if not is_valid_uid(value):
        raise InvalidUid(f"{what} is not a valid DICOM UID: {value[:80]!r}")
    return value


def make_uid(*key: str, root: str = "") -> str:
    """A UID derived from `key`; with a root, `root.<digits>`, else `2.25.<uuid as int>`."""
    digest = hashlib.sha256("\x1f".join(key).encode()).digest()
    if not root:
        # PS3.5 B.2: 2.25 followed by the decimal of a UUID (128 bits; set variant/version).
        return "2.25." + str(uuid.UUID(bytes=digest[:16], version=4).int)
    check_uid(root, "organisation UID root")
    room = MAX_UID_LENGTH - len(root) - 1
    if room < 10:
        raise InvalidUid(f"organisation UID root is too long to append a suffix: {root}")
    number = str(int.from_bytes(digest, "big"))[:room].lstrip("0") or "1"
    return f"{root}.{number}"
