"""The command line without a gateway: arguments, requests sent, exit codes (httpx mock)."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from cinebridge_cli.__main__ import main

HEALTHY = {
    "health": {
        "status": "up",
        "instances": [
            {"service": "scp", "instance": "box", "room": None, "state": "up", "age_s": 1.0}
        ],
    },
    "queues": [{"consumer": "converter", "pending": 2, "in_flight": 1, "redelivered": 0}],
    "outbox": {"pending": 0, "oldest_at": None},
    "deliveries": {"pending": 3, "oldest_unsent_at": "2026-12-07T01:00:00Z"},
    "failed_deliveries": [],
    "dead_letters": 0,
    "disk": {"path": "/media", "total_bytes": 10e9, "free_bytes": 4e9, "free_fraction": 0.4},
}


def run(
    argv: list[str], answer: Any, status: int = 200
) -> tuple[int, list[str], list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = answer(request) if callable(answer) else answer
        return httpx.Response(status, json=body)

    lines: list[str] = []
    code = main(
        ["--url", "http://gw", "--token", "t0k", *argv],
        out=lines.append,
        transport=httpx.MockTransport(handler),
    )
    return code, lines, seen


def test_status_healthy_and_needing_attention() -> None:
    code, out, seen = run(["status"], HEALTHY)
    assert code == 0 and out[0] == "station: ok"
    assert seen[0].url.path == "/api/v1/ops/summary"
    assert seen[0].headers["Authorization"] == "Bearer t0k"
    assert "queue converter: 2 pending, 1 in flight, 0 redelivered" in out
    assert "disk /media: 4.0 GB free of 10.0 GB (40 %)" in out
    down = {**HEALTHY, "dead_letters": 2}
    down["health"] = {"instances": [{**HEALTHY["health"]["instances"][0], "state": "stale"}]}  # type: ignore[index]
    code, out, _ = run(["status"], down)
    assert code == 1 and out[0] == "station: needs attention: scp@box stale; 2 dead letters"
    code, out, _ = run(["--json", "status"], down)
    assert code == 1 and len(json.loads("\n".join(out))["problems"]) == 2


def test_echo_address_is_sent_as_fields() -> None:
    code, out, seen = run(["echo", "ORTHANC@10.0.0.5:4242"], {"reachable": True, "rtt_ms": 3.0})
    assert code == 0 and out == ["ORTHANC@10.0.0.5:4242: reachable, 3.0 ms"]
    assert json.loads(seen[0].content) == {"ae_title": "ORTHANC", "host": "10.0.0.5", "port": 4242}
    code, _, _ = run(["echo", "ORTHANC@10.0.0.5:4242"], {"reachable": False, "reason": "refused"})
    assert code == 1


def test_deliveries_retry_reports_refusals() -> None:
    failed = [
        {"id": "d1", "destination_name": "PACS", "state": "failed-permanent", "attempts": 3},
        {"id": "d2", "destination_name": "PACS", "state": "failed-permanent", "attempts": 3},
    ]

    def answer(request: httpx.Request) -> Any:
        if request.url.path.endswith("/d2/retry"):
            return httpx.Response(409, json={"error": {"code": "x", "message": "gone"}})
        if request.url.path.endswith("/retry"):
            return {"delivery_id": "d1", "state": "queued"}
        return {**HEALTHY, "failed_deliveries": failed}

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        body = answer(request)
        return body if isinstance(body, httpx.Response) else httpx.Response(200, json=body)

    lines: list[str] = []
    code = main(
        ["--url", "http://gw", "--token", "t", "deliveries", "--retry"],
        out=lines.append,
        transport=httpx.MockTransport(handler),
    )
    assert code == 1
    assert seen[1:] == ["/api/v1/deliveries/d1/retry", "/api/v1/deliveries/d2/retry"]
    assert "retried: 1, refused: 1" in lines and "  d2: refused (409): gone" in lines


@pytest.mark.parametrize(
    ("status", "code"), [(401, 4), (403, 4), (404, 5), (409, 1), (500, 3), (502, 1), (503, 3)]
)
def test_http_errors_map_to_exit_codes(status: int, code: int) -> None:
    assert run(["status"], {"error": {"code": "x", "message": "no"}}, status)[0] == code


def test_without_token_or_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CINEBRIDGE_TOKEN", raising=False)
    assert main(["--url", "http://gw", "status"], out=print) == 4

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    assert main(["--token", "t", "status"], out=print, transport=transport) == 3


def test_worklist_query_sends_only_given_keys() -> None:
    reply = {"items": [], "warnings": ["no partial matches"], "cached": True}
    code, out, seen = run(["worklist", "query", "--patient-id", "P1", "--server", "ris"], reply)
    assert code == 0 and out == ["note: no partial matches", "0 entries (cached)"]
    assert json.loads(seen[0].content) == {"server_id": "ris", "patient_id": "P1"}


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["echo"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["worklist"])
    assert exc.value.code == 2


def test_users_add_reads_the_password_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("long-enough-pw\n"))
    created = {"username": "nurse1", "role": "operator"}
    code, out, seen = run(["users", "add", "nurse1"], created)
    assert code == 0 and out == ["created nurse1 (operator)"]
    assert json.loads(seen[0].content) == {
        "username": "nurse1",
        "password": "long-enough-pw",
        "role": "operator",
    }
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert run(["users", "add", "nurse2"], created)[0] == 2
