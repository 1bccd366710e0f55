"""Pure gateway rules: patient data limits, study origins, the §8.1.5 edit rule, search text."""

from __future__ import annotations

import datetime as dt

import pytest
from cinebridge_common.messages import WorklistItem
from cinebridge_common.uids import is_valid_uid
from cinebridge_gateway.search_repository import (
    UNBOUNDED,
    StudyFilter,
    build_search,
    has_match_conditions,
    like_prefix,
    prefix_range,
)
from cinebridge_gateway.security import (
    LoginThrottle,
    digest,
    hash_password,
    new_api_token,
    role_allows,
    verify_password,
)
from cinebridge_gateway.settings import GatewaySettings
from cinebridge_gateway.studies import (
    PatientData,
    PatientEdit,
    apply_edit,
    display_name,
    new_study_from_form,
    new_study_from_local,
    new_study_from_worklist,
    new_unscheduled_study,
)
from pydantic import ValidationError

NOW = dt.datetime(2026, 11, 29, 8, 30, tzinfo=dt.UTC)


def test_patient_data_enforces_vr_limits_and_normalises_dates() -> None:
    ok = PatientData(patient_name="DOE^JANE", patient_birth_date="1980-01-02", patient_sex="F")
    assert ok.patient_birth_date == "19800102"
    for bad in (
        {"patient_name": "A" * 65},
        {"accession_number": "X" * 17},
        {"patient_id": "a\\b"},
        {"patient_name": "x\x00"},
        {"patient_sex": "X"},
        {"patient_birth_date": "19801301"},
        {"unknown": "field"},
    ):
        with pytest.raises(ValidationError):
            PatientData(**bad)  # type: ignore[arg-type]


def test_form_study_gets_a_generated_uid_under_the_org_root() -> None:
    study = new_study_from_form(
        PatientData(patient_id="P1"), "or1", "1.2.826.0.1.3680043.8.498", NOW
    )
    assert study["origin"] == "form" and study["room"] == "or1"
    assert study["study_instance_uid"].startswith("1.2.826.0.1.3680043.8.498.")
    assert is_valid_uid(study["study_instance_uid"])
    assert len(study["study_date"]) == 8 and len(study["study_time"]) == 6


def test_worklist_study_copies_the_item_and_survives_a_bad_uid() -> None:
    item = WorklistItem(
        patient_name="DOE^JANE",
        patient_id="P1",
        accession_number="A" * 20,
        requested_procedure_id="RP1",
        requested_procedure_description="Colo",
        study_instance_uid="1.2.3",
        patient_sex="F",
        dataset={"00100020": {"vr": "LO", "Value": ["P1"]}},
    )
    study = new_study_from_worklist(item, None, "", NOW)
    assert study["study_instance_uid"] == "1.2.3"
    assert (study["study_id"], study["study_description"]) == ("RP1", "Colo")
    assert study["accession_number"] == "A" * 16  # SH: clipped, never refused at the cart
    assert study["worklist_item"] == {"00100020": {"vr": "LO", "Value": ["P1"]}}
    hostile = WorklistItem(study_instance_uid="../../etc", patient_sex="Q", patient_name="a\\b")
    study = new_study_from_worklist(hostile, None, "", NOW)
    assert study["study_instance_uid"].startswith("2.25.")
    assert study["patient_sex"] == "" and "\\" not in study["patient_name"]


def test_local_study_takes_patient_only_and_a_new_uid() -> None:
    earlier = {
        "patient_name": "A^B",
        "patient_id": "P9",
        "patient_birth_date": "19700101",
        "patient_sex": "M",
        "accession_number": "OLD",
        "study_instance_uid": "1.2.3",
    }
    study = new_study_from_local(earlier, "or2", "", NOW)
    assert study["patient_id"] == "P9" and "accession_number" not in study
    assert study["study_instance_uid"] != "1.2.3" and study["origin"] == "local"


def test_edit_of_a_worklist_study_unlinks_it_once() -> None:
    study = {
        "id": "5f1c",
        "origin": "worklist",
        "edited": False,
        "patient_name": "DOE^JANE",
        "study_instance_uid": "1.2.3",
    }
    changes = apply_edit(study, PatientEdit(patient_name="DOE^JANET"), "")
    assert changes["edited"] is True and changes["patient_name"] == "DOE^JANET"
    # The worklist data goes; the procedure's modality (its own column) is not touched.
    assert changes["worklist_item"] is None and "modality" not in changes
    assert changes["study_instance_uid"] not in ("1.2.3", "") and is_valid_uid(
        changes["study_instance_uid"]
    )
    # Already unlinked: later edits keep the (new) UID.
    again = apply_edit({**study, **changes}, PatientEdit(patient_id="X"), "")
    assert "study_instance_uid" not in again and again["edited"] is True
    # Nothing changed: nothing to write.
    assert apply_edit(study, PatientEdit(patient_name="DOE^JANE"), "") == {}
    form = {"id": "1", "origin": "form", "edited": False, "patient_name": ""}
    assert "study_instance_uid" not in apply_edit(form, PatientEdit(patient_name="X"), "")


def test_search_text_becomes_an_escaped_like_prefix() -> None:
    assert like_prefix("Doe") == "doe%"
    assert like_prefix("D*E?") == "d%e_%"
    assert like_prefix("100%_x") == "100\\%\\_x%"
    assert like_prefix("a*") == "a%"


def test_search_text_becomes_an_index_range_of_its_literal_part() -> None:
    assert prefix_range("Doe") == ("doe", "dof")
    assert prefix_range("D*E?") == ("d", "e")  # the literal part ends at the first wildcard
    assert prefix_range("AB?C") == ("ab", "ac")
    assert prefix_range("100%_x") == ("100%_x", "100%_y")  # no LIKE escapes in a range
    assert prefix_range("*son") is None
    assert prefix_range("?x") is None
    assert prefix_range("a\ud7ff") == ("a\ud7ff", "a\ue000")  # over the surrogates
    assert prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    assert prefix_range("\U0010ffff") == ("\U0010ffff", None)
    every = ["doe", "doe^j", "dof", "do", "d\U0010ffff", "e"]
    low, high = prefix_range("doe") or ("", None)
    assert [t for t in every if low <= t < (high or "\U0010ffff")] == ["doe", "doe^j"]


def test_passwords_and_tokens() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong")
    assert not verify_password(None, "anything")
    assert not verify_password("not-a-hash", "x")
    token = new_api_token()
    assert token.startswith("cbt_") and len(token) > 40
    assert digest(token) != token and len(digest(token)) == 64


def test_login_throttle_refuses_a_name_after_repeated_failures() -> None:
    throttle = LoginThrottle(limit=3, window_s=60)
    for t in (0.0, 1.0, 2.0):
        assert throttle.retry_after("Admin", now=t) == 0
        throttle.failed("Admin", now=t)
    assert throttle.retry_after("admin", now=3.0) == pytest.approx(57.0)
    assert throttle.retry_after("other", now=3.0) == 0
    assert throttle.retry_after("admin", now=61.0) == 0  # the first failure left the window
    throttle.succeeded("admin")
    assert throttle.retry_after("admin", now=3.0) == 0


def test_listening_beyond_loopback_needs_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="CB_SECRET_KEY"):
        GatewaySettings(gateway_host="0.0.0.0")
    assert GatewaySettings(gateway_host="0.0.0.0", secret_key="x" * 32).gateway_port == 8080
    monkeypatch.setenv("CB_GATEWAY_PREVIEW_UPSTREAMS", '{"or1": "http://capture-or1:8091"}')
    assert GatewaySettings().gateway_preview_upstreams == {"or1": "http://capture-or1:8091"}


def test_search_repository_takes_the_sides_the_filters_allow() -> None:
    both = build_search(StudyFilter(q="doe"), with_deliveries=True, with_received=True)
    assert both is not None
    sql, args = both
    assert "FROM studies s" in sql and "FROM received_study_index s" in sql
    assert "delivery_states" in sql
    # name, patient ID, accession (each its LIKE pattern and index range); page
    assert args == ["doe%", "doe", "dof"] * 3 + [50, 0]
    local = build_search(StudyFilter(room="or1"), with_deliveries=False, with_received=True)
    # No received side; only the "received back" mark looks at the received studies.
    assert local is not None and "FROM received_study_index s" not in local[0]
    assert "delivery_states" not in local[0]
    received = build_search(
        StudyFilter(status="received"), with_deliveries=True, with_received=True
    )
    assert received is not None and "FROM studies s" not in received[0]
    assert (
        build_search(StudyFilter(origin="received"), with_deliveries=True, with_received=False)
        is None
    )


def test_a_search_with_conditions_takes_few_matches_or_the_newest_studies_first() -> None:
    matched = build_search(StudyFilter(q="acc0009"), with_deliveries=True, with_received=False)
    newest = build_search(StudyFilter(room="or1"), with_deliveries=True, with_received=False)
    assert matched is not None and newest is not None
    # Three bounded branches (few matches sorted; the newest studies filtered; else every
    # match sorted), chosen by a bound of the matches counted up to 201 on each indexed column:
    # a match of `q` is one of three columns, so the three counts add up ...
    assert "WITH bound AS MATERIALIZED" in matched[0] and "recent AS MATERIALIZED" in matched[0]
    assert "OFFSET 0" in matched[0] and matched[0].count("LIMIT 201) n)") == 3
    assert "LEAST((SELECT count(*)" in matched[0] and ") n) + (SELECT count(*)" in matched[0]
    # ... each condition must hold, so the least of their bounds counts ...
    both = build_search(
        StudyFilter(patient_id="P1", date_from="20240101"),
        with_deliveries=True,
        with_received=False,
    )
    assert both is not None and both[0].count("LIMIT 201) n)") == 2
    # ... and a text that starts with a wildcard has no index range: nothing to count, so no
    # branch reads every match of it unsorted.
    unindexed = build_search(StudyFilter(q="*son"), with_deliveries=True, with_received=False)
    assert unindexed is not None and f"SELECT {UNBOUNDED} AS n" in unindexed[0]
    dated = build_search(
        StudyFilter(q="*son", date_from="20240101"), with_deliveries=True, with_received=False
    )
    assert dated is not None and dated[0].count("LIMIT 201) n)") == 1
    # ... and the plain walk by time when nothing narrows the search.
    assert "WITH recent" not in newest[0]
    assert has_match_conditions(StudyFilter(date_to="20201231"))
    assert not has_match_conditions(StudyFilter(room="or1", origin="form"))


def test_the_operator_may_change_the_modality_and_a_bad_one_is_refused() -> None:
    study = {"id": "5f1c", "origin": "worklist", "edited": False, "modality": "ES"}
    assert apply_edit(study, PatientEdit(modality="XC"), "")["modality"] == "XC"
    with pytest.raises(ValueError):
        PatientEdit(modality="es")
    # The patient form (a new study) takes a modality too, checked as a CS (PS3.5 6.2).
    assert PatientData(modality=" ES ").modality == "ES"
    for bad in ("E\\S", "ENDOSCOPY-VIDEO-1", "X" * 17):
        with pytest.raises(ValueError):
            PatientData(modality=bad)
    assert new_study_from_form(PatientData(modality="XC"), "or1", "", NOW)["modality"] == "XC"


def test_a_worklist_study_keeps_the_procedures_modality_and_only_valid_values() -> None:
    item = WorklistItem(
        patient_birth_date="1980-13-45", patient_sex="FEMALE", modality="ES", patient_id="P"
    )
    row = new_study_from_worklist(item, "or1", "", NOW)
    assert (row["patient_birth_date"], row["patient_sex"], row["modality"]) == ("", "", "ES")


def test_person_names_read_family_comma_given() -> None:
    assert display_name("DOE^JANE") == "DOE, JANE"
    assert display_name("POE^EDGAR^ALLAN^MR") == "POE, EDGAR ALLAN MR"
    assert display_name("DOE") == "DOE"
    assert display_name("^JANE") == "JANE"
    assert display_name("YAMADA^TARO=山田^太郎") == "YAMADA, TARO"
    assert display_name("") == ""


def test_an_unscheduled_study_is_identified_by_its_timestamp() -> None:
    study = new_unscheduled_study("or1", "", NOW)
    assert study["origin"] == "unscheduled" and study["room"] == "or1"
    # Table 30: YYYYMMDDHHIISSss, 16 characters (SH).
    assert len(study["study_id"]) == 16 and study["accession_number"] == study["study_id"]
    assert is_valid_uid(study["study_instance_uid"])


def test_roles_are_ordered_viewer_operator_administrator() -> None:
    assert role_allows("administrator", "operator") and role_allows("operator", "viewer")
    assert not role_allows("viewer", "operator") and not role_allows("operator", "administrator")
    assert not role_allows("guest", "viewer")
