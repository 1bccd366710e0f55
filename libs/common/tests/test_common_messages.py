"""Every message of the catalogue round-trips through JSON and has a well-formed subject."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from cinebridge_common.messages import CATALOGUE, Message
from cinebridge_common.messages.catalogue import render
from pydantic import BaseModel, ValidationError

SUBJECT = re.compile(r"^cb\.(evt|job|rpc|dlq)(\.([a-z_]+|\{[a-z_]+\}))+$")
ROOT = Path(__file__).resolve().parents[3]


def _sample(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _sample(args[0])
    if origin is typing.Literal:
        return get_args(annotation)[0]
    if origin is list:
        return [_sample(get_args(annotation)[0])]
    if origin is dict:
        return {"k": "v"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _build(annotation)
    return {str: "x1", int: 3, float: 1.5, bool: True}.get(annotation, "2026-11-29T10:00:00Z")


def _build(model: type[BaseModel]) -> BaseModel:
    values = {
        name: _sample(field.annotation)
        for name, field in model.model_fields.items()
        if field.is_required()
    }
    try:
        return model.model_validate(values)
    except ValidationError:
        # A model whose validator ties optional fields together (a DIMSE destination needs its
        # AE title, host and port): sampled with every field.
        values = {name: _sample(f.annotation) for name, f in model.model_fields.items()}
        return model.model_validate(values)


@pytest.mark.parametrize("model", CATALOGUE, ids=lambda m: m.__name__)
def test_round_trip(model: type[Message]) -> None:
    msg = _build(model)
    assert isinstance(msg, Message)
    again = model.from_bytes(msg.to_bytes())
    assert again == msg
    assert SUBJECT.match(model.subject), model.subject
    assert "{" not in msg.subject_for()
    assert msg.subject_for().count(".") == model.subject.count(".")


def test_unknown_fields_are_ignored() -> None:
    model = CATALOGUE[0]
    data = _build(model).model_dump(mode="json") | {"added_in_v2": 1}
    assert model.model_validate(data)


def test_generated_table_is_current() -> None:
    assert (ROOT / "docs" / "messages.md").read_text() == render(), (
        "run: .venv/bin/cinebridge-messages-doc --write docs/messages.md"
    )


def test_a_worklist_reply_with_its_entries_one_per_line_reads_as_json_and_splits_back() -> None:
    """`encode_reply`: any JSON reader gets the reply; `split_reply` finds each entry's text
    (text with escaped newlines, quotes and non-ASCII stays inside its entry)."""
    import json

    from cinebridge_common.messages import WorklistItem, WorklistQueryReply
    from cinebridge_common.messages.worklist import encode_reply, split_reply

    items = [
        WorklistItem(item_key="a", patient_name='line\nbreak ",\n" Zoë'),
        WorklistItem(item_key="b", dataset={"00100010": {"vr": "PN", "Value": [{}]}}),
    ]
    reply = WorklistQueryReply(items=items, warnings=["first\nsecond"], server_id="ris")
    for entries in (items, []):
        plain = reply.model_copy(update={"items": entries})
        data = encode_reply(plain, [item.model_dump_json() for item in entries])
        assert json.loads(data) == json.loads(plain.to_bytes())
        split = split_reply(data)
        assert split is not None
        banner, texts = split
        assert WorklistQueryReply.model_validate_json(banner) == reply.model_copy(
            update={"items": []}
        )
        assert [WorklistItem.model_validate_json(t) for t in texts] == entries
    # Any other layout (pydantic's own dump): None, and the reader parses the whole reply.
    assert split_reply(reply.model_dump_json().encode()) is None
    assert split_reply(json.dumps(json.loads(reply.to_bytes()), indent=1).encode()) is None
    assert split_reply(b'{"ok": false, "error": "no server"}') is None
    assert split_reply(b'{"items":[\n') is None


def test_an_item_kept_as_text_keeps_its_dataset_on_the_bus() -> None:
    """`keep_as_text` drops the dict tree but not the data: the reply's bytes, the item's text
    and `full_dataset` all carry the dataset as it was."""
    from cinebridge_common.messages import WorklistItem, WorklistQueryReply

    dataset = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}}
    item = WorklistItem(item_key="a", patient_name="Doe^Jane", dataset=dataset)
    before = item.model_dump_json()
    kept = WorklistItem(item_key="a", patient_name="Doe^Jane", dataset=dataset).keep_as_text()
    assert kept.dataset == {} and kept.full_dataset() == dataset
    assert kept.json_text() == before
    back = WorklistQueryReply.from_bytes(WorklistQueryReply(items=[kept]).to_bytes())
    assert back.items == [item]
