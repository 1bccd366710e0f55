"""DICOM UIDs: valid per PS3.5 9.1, deterministic from the job key, under the org root."""

from __future__ import annotations

import pytest
from cinebridge_common.uids import InvalidUid, check_uid, is_valid_uid, make_uid


def test_uuid_derived_uid_is_valid_and_deterministic() -> None:
    a = make_uid("sop", "media-1")
    assert a.startswith("2.25.")
    assert is_valid_uid(a)
    assert a == make_uid("sop", "media-1")
    assert a != make_uid("sop", "media-2")
    assert make_uid("a", "bc") != make_uid("ab", "c")  # key parts are separated


def test_org_root_uid_fits_64_chars() -> None:
    root = "1.2.826.0.1.3680043.10.1234"
    uid = make_uid("series", "x", root=root)
    assert uid.startswith(root + ".")
    assert len(uid) <= 64
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "bad", ["../../etc/x", "1.2.3/../4", "1.02.3", "1..2", "", "1.2.", "a.b", "1" * 65]
)
def test_hostile_uids_are_refused(bad: str) -> None:
    assert not is_valid_uid(bad)
    with pytest.raises(InvalidUid):
        check_uid(bad)


def test_bad_root_is_refused() -> None:
    with pytest.raises(InvalidUid):
        make_uid("x", root="1.2.abc")
