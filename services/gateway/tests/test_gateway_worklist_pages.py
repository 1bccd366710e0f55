"""The gateway's short-lived store of worklist answers: pages, owners and bounds."""

from __future__ import annotations

import json

import pytest
from cinebridge_common.messages import ValueFlag, WorklistItem, WorklistQueryReply
from cinebridge_common.messages.worklist import encode_reply
from cinebridge_gateway import worklist_pages
from cinebridge_gateway.routes_worklist import WorklistPage, page_json
from cinebridge_gateway.worklist_pages import StoredAnswer, WorklistPages


def answer(count: int) -> StoredAnswer:
    flag = ValueFlag(tag="(0010,0030)", problem="not a date", action="left empty", value="x")
    items = [
        WorklistItem(
            patient_id=f"P{n:04d}",
            dataset={"00100020": {"vr": "LO", "Value": [f"P{n}"]}},
            flags=[flag] if n == 3 else [],
        )
        for n in range(count)
    ]
    return StoredAnswer.of(WorklistQueryReply(items=items, too_many=True, warnings=["w"]))


def test_pages_come_back_as_they_were_with_the_answers_banner() -> None:
    stored = answer(250)
    assert stored.total == 250 and stored.meta.items == [] and stored.meta.too_many
    page = stored.page(200, 100)
    assert [i.patient_id for i in page] == [f"P{n:04d}" for n in range(200, 250)]
    assert stored.page(0, 5)[3].flags[0].value == "x"
    assert stored.page(0, 1)[0].dataset == {"00100020": {"vr": "LO", "Value": ["P0"]}}


def test_only_the_owner_pages_and_the_store_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pages = WorklistPages()
    first = pages.keep("anna", answer(10))
    assert pages.get("anna", first) is not None and pages.get("ben", first) is None
    monkeypatch.setattr(worklist_pages, "MAX_RESULTS", 2)
    second, third = pages.keep("anna", answer(1)), pages.keep("anna", answer(1))
    assert pages.get("anna", first) is None  # the oldest went first
    assert pages.get("anna", second) is not None and pages.get("anna", third) is not None
    monkeypatch.setattr(worklist_pages, "MAX_BYTES", 1)
    newest = pages.keep("anna", answer(20))
    assert pages.get("anna", newest) is not None  # over the bound alone: the newest stays
    assert pages.get("anna", third) is None
    monkeypatch.setattr(worklist_pages, "TTL_S", -1.0)
    assert pages.get("anna", newest) is None  # expired


def test_an_answer_kept_from_its_bytes_pages_like_the_parsed_one() -> None:
    reply = WorklistQueryReply(
        items=[
            WorklistItem(
                patient_name=f"MÜLLER^Jörg{n}",
                dataset={"00100010": {"vr": "PN", "Value": [{"Alphabetic": f"MÜLLER^Jörg{n}"}]}},
                flags=[ValueFlag(tag="(0010,0040)", problem="too long", action="left empty")],
            )
            for n in range(30)
        ],
        incomplete=True,
        warnings=["one server did not answer"],
    )
    kept, parsed = StoredAnswer.from_reply_bytes(reply.to_bytes()), StoredAnswer.of(reply)
    assert kept.meta == parsed.meta and kept.meta.items == [] and kept.meta.incomplete
    assert kept.page(10, 15) == parsed.page(10, 15) == reply.items[10:25]
    failed = StoredAnswer.from_reply_bytes(b'{"ok": false, "error": "no server"}')
    assert not failed.meta.ok and failed.meta.error == "no server" and failed.total == 0
    # The worklist service's layout (entries one per line) is kept without parsing them.
    texts = [item.model_dump_json() for item in reply.items]
    lines = StoredAnswer.from_reply_bytes(encode_reply(reply, texts))
    assert lines.meta == parsed.meta and lines.items == [t.encode() for t in texts]
    assert lines.page(10, 15) == reply.items[10:25] and lines.size == parsed.size


def test_a_page_passes_the_entries_through_as_the_page_model_would_dump_them() -> None:
    """The page's JSON is spliced from the kept texts; it reads back as the `WorklistPage` the
    route validated and dumped before, for the worklist service's layout and for any other
    (the day's cache, a reply that lacks defaults), whose entries are put in shape first."""
    items = [
        WorklistItem(
            patient_name=f"MÜLLER^Jörg{n}",
            dataset={"00100010": {"vr": "PN", "Value": [{"Alphabetic": f"MÜLLER^Jörg{n}"}]}},
            flags=[ValueFlag(tag="(0010,0040)", problem="too long", action="left empty")],
        )
        for n in range(30)
    ]
    reply = WorklistQueryReply(items=items, too_many=True, warnings=['a "quoted" warning'])
    sparse = b'{"ok": true, "cached": true, "items": [{"patient_id": "P1"}, {"patient_id": "P2"}]}'
    for data, expected in (
        (encode_reply(reply, [i.model_dump_json() for i in items]), items[10:25]),
        (reply.to_bytes(), items[10:25]),
        (sparse, [WorklistItem(patient_id="P2")]),
    ):
        stored = StoredAnswer.from_reply_bytes(data)
        offset = 10 if len(expected) > 1 else 1
        page = json.loads(page_json(stored, "ab" * 16, offset, 15))
        assert WorklistPage.model_validate(page) == WorklistPage(
            result_id="ab" * 16,
            total=stored.total,
            offset=offset,
            limit=15,
            items=expected,
            incomplete=stored.meta.incomplete,
            cached=stored.meta.cached,
            too_many=stored.meta.too_many,
            warnings=stored.meta.warnings,
        )
        assert page["items"] == [json.loads(i.model_dump_json()) for i in expected]
