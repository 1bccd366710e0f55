"""Health board states, the SSE hub's bounded fan-out, the body size limit middleware, and the
conversion reports kept for a page loaded mid-conversion."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from cinebridge_common.messages import ConversionFailed, ConversionProgressed, ServiceHeartbeat
from cinebridge_gateway.conversion_progress import ConversionProgress
from cinebridge_gateway.health_board import HealthBoard
from cinebridge_gateway.hub import EventHub, LiveEvent
from cinebridge_gateway.web import BodySizeLimit
from fastapi import FastAPI, Request

T0 = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)


def beat(
    service: str,
    instance: str,
    state: str = "up",
    room: str | None = None,
    started_at: dt.datetime = T0,
) -> ServiceHeartbeat:
    return ServiceHeartbeat(
        service=service,
        instance=instance,
        version="1",
        state=state,  # type: ignore[arg-type]
        room=room,
        started_at=started_at,
    )


def test_health_board_shows_a_process_started_again_and_how_its_run_ended() -> None:
    """A run killed without a word and started again by its supervisor looked just like the
    same run before: now the restart is counted with `ended unexpectedly`, a stop that said so
    with `stopped`; two rooms of one host are not taken for restarts of each other, nor is a
    late beat of the previous run."""
    board = HealthBoard(stale_after_s=10)
    later = T0 + dt.timedelta(minutes=5)
    board.record(beat("converter", "box"), T0)
    board.record(beat("converter", "box", started_at=later), later)
    board.record(beat("converter", "box"), later)  # late, of the killed run
    board.record(beat("capture", "box", room="or1"), T0)
    board.record(beat("capture", "box", room="or2", started_at=later), later)
    rows = {(r["service"], r["room"]): r for r in board.snapshot(later)}
    converter = rows[("converter", None)]
    assert (converter["restarts"], converter["restarted_at"]) == (1, later)
    assert converter["previous_end"] == "ended unexpectedly"
    assert converter["started_at"] == later
    assert [rows[("capture", room)]["restarts"] for room in ("or1", "or2")] == [0, 0]
    assert board.rooms() == ["or1", "or2"]

    again = later + dt.timedelta(minutes=5)
    board.record(beat("converter", "box", state="stopping", started_at=later), again)
    board.record(beat("converter", "box", started_at=again), again)
    converter = next(r for r in board.snapshot(again) if r["service"] == "converter")
    assert (converter["restarts"], converter["previous_end"]) == (2, "stopped")


def test_health_board_turns_silent_instances_stale_then_down() -> None:
    board = HealthBoard(stale_after_s=10)
    assert board.overall(T0) == "unknown"
    board.record(beat("capture", "cap-1", room="or1"), T0)
    board.record(beat("sender", "snd-1"), T0 + dt.timedelta(seconds=25))
    now = T0 + dt.timedelta(seconds=31)
    states = {r["instance"]: r["state"] for r in board.snapshot(now)}
    assert states == {"cap-1": "down", "snd-1": "up"}
    assert board.snapshot(T0 + dt.timedelta(seconds=12))[0]["state"] == "stale"
    assert board.overall(now) == "degraded"
    assert board.rooms() == ["or1"]
    board.record(beat("capture", "cap-1", state="stopping", room="or1"), now)
    assert board.overall(now) == "up"


async def test_hub_fans_out_and_drops_oldest_for_slow_listeners() -> None:
    hub = EventHub(queue_size=3)
    async with hub.listen() as fast, hub.listen() as slow:
        assert hub.listeners == 2
        for n in range(5):
            hub.publish(LiveEvent("cb.evt.x", str(n)))
            if n < 3:
                assert (await fast.get()) == LiveEvent("cb.evt.x", str(n))
        assert [slow.get_nowait().data for _ in range(3)] == ["2", "3", "4"]
        assert hub.dropped == 2
        hub.close()
        assert (await slow.get()) is None
    assert hub.listeners == 0


async def call(
    app: object, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    chunks = list(body_chunks)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "headers": headers,
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("t", 80),
        "http_version": "1.1",
    }
    await app(scope, receive, send)  # type: ignore[operator]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    return int(status), body  # type: ignore[call-overload]


async def test_body_limit_by_header_and_by_counting() -> None:
    inner = FastAPI()

    @inner.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app = BodySizeLimit(inner, limit=1000)
    status, body = await call(app, [b"x" * 10], [(b"content-length", b"10")])
    assert (status, json.loads(body)) == (200, {"size": 10})
    status, body = await call(app, [b""], [(b"content-length", b"104857600")])
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    status, body = await call(app, [b"x" * 600, b"x" * 600], [(b"transfer-encoding", b"chunked")])
    assert status == 413
    status, _ = await call(app, [b""], [(b"content-length", b"-5")])
    assert status == 413


def test_conversion_progress_is_kept_until_the_outcome() -> None:
    """The latest report of each item being converted, for a page loaded mid-conversion; its
    outcome (an instance, a failure) ends it, and an item the catalog already records as
    converted shows none."""
    progress = ConversionProgress(limit=2)

    def report(media: str, fraction: float) -> None:
        msg = ConversionProgressed(media_id=media, study_id="s", fraction=fraction, stage="remux")
        progress.observe(msg.subject, msg.to_bytes())

    def shown(media: str, state: str = "converting") -> object:
        [item] = progress.annotate([{"id": media, "state": state}])
        return item.get("progress")

    report("a", 0.25)
    report("a", 0.5)
    assert shown("a") == {"stage": "remux", "fraction": 0.5}
    assert shown("a", state="captured") == {"stage": "remux", "fraction": 0.5}
    assert shown("a", state="converted") is None
    failed = ConversionFailed(media_id="a", study_id="s", reason="bad")
    progress.observe(failed.subject, failed.to_bytes())
    assert shown("a") is None
    report("b", 0.1)
    report("c", 0.2)
    report("d", 0.3)  # beyond the limit: the oldest report goes
    assert (shown("b"), len(progress)) == (None, 2)
    progress.observe("cb.evt.conversion.progressed", b"not json")
    assert shown("d") == {"stage": "remux", "fraction": 0.3}
