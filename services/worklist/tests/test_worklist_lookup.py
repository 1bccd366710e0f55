"""Query use case pieces that need no network: merging several servers' answers."""

from __future__ import annotations

import json

from cinebridge_common.messages import ValueFlag, WorklistItem, WorklistQueryReply
from cinebridge_worklist.lookup import EncodedReply, merge_replies


def item(key: str) -> WorklistItem:
    return WorklistItem(item_key=key, patient_id=key)


def test_answers_of_several_servers_merge_without_duplicates() -> None:
    merged = merge_replies(
        [
            WorklistQueryReply(server_id="a", outcome="complete", items=[item("1"), item("2")]),
            WorklistQueryReply(
                server_id="b",
                outcome="too_many",
                too_many=True,
                incomplete=True,
                items=[item("2"), item("3")],
                warnings=["narrow the search"],
            ),
        ]
    )
    assert merged.ok and merged.outcome == "too_many" and merged.too_many and merged.incomplete
    assert [i.item_key for i in merged.items] == ["1", "2", "3"]
    assert merged.warnings == ["b: narrow the search"]


def test_an_answer_serialized_once_reads_as_the_plain_reply() -> None:
    """The entries' JSON is made once for the bus and the cache: the same reply, byte for byte
    in each entry (text with quotes, backslashes, control characters and non-ASCII)."""
    tricky = WorklistItem(
        item_key="k2",
        patient_name='O"Brien^Zoë\\x',
        dataset={"00100010": {"vr": "PN", "Value": [{"Alphabetic": 'O"Brien^Zoë\u0007'}]}},
        flags=[ValueFlag(tag="(0010,0040)", keyword="PatientSex", problem="p", action="a")],
    )
    plain = WorklistQueryReply(
        server_id="a", outcome="complete", items=[item("1"), tricky], warnings=["w"]
    )
    encoded = EncodedReply.of(plain)
    assert json.loads(encoded.to_bytes()) == json.loads(plain.to_bytes())
    assert WorklistQueryReply.from_bytes(encoded.to_bytes()) == plain
    assert encoded.item_texts == [i.model_dump_json() for i in plain.items]
    empty = EncodedReply.of(WorklistQueryReply(server_id="a", outcome="complete"))
    assert json.loads(empty.to_bytes()) == json.loads(
        WorklistQueryReply(server_id="a", outcome="complete").to_bytes()
    )
    # A copy with other entries serializes them again, never a stale text.
    changed = encoded.model_copy(update={"items": [item("3")]})
    assert WorklistQueryReply.from_bytes(changed.to_bytes()).items == [item("3")]


def test_one_server_down_still_shows_the_others_with_the_error_as_a_warning() -> None:
    merged = merge_replies(
        [
            WorklistQueryReply(server_id="a", outcome="complete", items=[item("1")]),
            WorklistQueryReply(ok=False, server_id="b", outcome="unreachable", error="refused"),
        ]
    )
    assert merged.ok and merged.outcome == "unreachable" and merged.error is None
    assert merged.warnings == ["b: refused"]


def test_every_server_failing_is_an_error_naming_each() -> None:
    merged = merge_replies(
        [
            WorklistQueryReply(ok=False, server_id="a", outcome="failed", error="0xC001"),
            WorklistQueryReply(ok=False, server_id="b", outcome="unreachable", error="refused"),
        ]
    )
    assert not merged.ok and merged.outcome == "failed"
    assert merged.error == "a: 0xC001; b: refused"


async def test_the_offline_answer_is_capped_like_a_live_one() -> None:
    import datetime as dt
    from typing import Any, cast

    from cinebridge_common.messages import WorklistServer
    from cinebridge_worklist.lookup import Deps, _offer_cache
    from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier
    from cinebridge_worklist.scu import FindResult
    from cinebridge_worklist.settings import WorklistSettings

    class Repo:
        async def cached_items(self, server_id: str) -> tuple[list[WorklistItem], dt.datetime]:
            return [item(f"{n:04d}") for n in range(30)], dt.datetime.now(dt.UTC)

    server = WorklistServer(id="ris", host="h", port=104, called_ae="RIS", max_entries=10)
    deps = Deps(pool=cast(Any, None), repo=cast(Any, Repo()), settings=WorklistSettings())
    result = FindResult(outcome="unreachable", detail="connection refused")
    identifier = build_identifier(SearchFields(), ServerKeys())
    reply = await _offer_cache(server, identifier, result, deps)
    assert reply.ok and reply.cached and reply.too_many and len(reply.items) == 10
    assert "too many results" in reply.warnings[1]
