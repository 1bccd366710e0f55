"""Room status for the status RPC, and the supervisor that ends recordings and exports metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from cinebridge_common.logging import kv
from cinebridge_common.messages.capture import SourceStatus

from . import metrics
from .pipeline import SourcePipeline
from .room import CaptureRefused, Room, redact_url

log = logging.getLogger(__name__)


def source_status(room: Room, preview_base: str | None) -> list[SourceStatus]:
    out = []
    for name, p in room.pipelines.items():
        rec, info = p.recording, p.info
        out.append(
            SourceStatus(
                name=name,
                kind=p.config.url.split(":", 1)[0],
                url=redact_url(p.config.url),
                state="stopping" if room.stopping(name) else p.state,
                signal=p.signal,
                width=info.width if info else None,
                height=info.height if info else None,
                fps_in=round(p.stats.fps_in.value, 2) if p.signal else 0.0,
                fps_encoded=round(p.stats.fps_encoded.value, 2) if p.signal else 0.0,
                dropped_frames=p.stats.dropped,
                recording_id=rec.recording_id if rec else None,
                recording_seconds=(
                    round(time.monotonic() - rec.started, 2)
                    if rec and not room.stopping(name)
                    else None
                ),
                preview_url=f"{preview_base}/preview/{name}.mjpg" if preview_base else None,
                last_recording=room.last.get(name),
            )
        )
    return out


async def supervise(room: Room, stop: asyncio.Event, interval_s: float = 0.5) -> None:
    """End recordings that hit the maximum duration, a low disk, a lost or changed source."""
    while not stop.is_set():
        try:
            free = await asyncio.to_thread(room.disk_free)
        except OSError as exc:  # the media volume is away: no recording can go on
            log.warning("media store unreadable", extra=kv(room=room.name, error=str(exc)))
            free = 0
        for name, p in room.pipelines.items():
            reason = _stop_reason(room, p, free)
            if reason and name in room.active:
                await _end_recording(room, name, reason)
        _update_metrics(room, free)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def _end_recording(room: Room, source: str, reason: str) -> None:
    """End one recording; whatever goes wrong is logged here, never ends the supervisor."""
    log.warning("recording ended", extra=kv(room=room.name, source=source, reason=reason))
    try:
        await room.record_stop(source, reason=reason)
    except CaptureRefused:
        pass  # the operator stopped it meanwhile
    except Exception:
        # The journal row stays "recording": the next start of the service salvages the file.
        log.exception("ending the recording failed", extra=kv(room=room.name, source=source))


def _stop_reason(room: Room, p: SourcePipeline, free: int) -> str | None:
    rec = p.recording
    if rec is None:
        return None
    if time.monotonic() - rec.started >= room.settings.capture_max_recording_s:
        return "maximum recording duration reached"
    if rec.broken:
        return rec.broken
    if free < room.settings.capture_disk_reserve_bytes:
        return "disk below the reserve"
    if p.no_signal_for() > room.settings.capture_dropout_max_s:
        return "source lost for too long"
    return None


def _update_metrics(room: Room, free: int) -> None:
    metrics.DISK_FREE.labels(room.name).set(free)
    metrics.DISK_HEADROOM.labels(room.name).set(free - room.settings.capture_disk_reserve_bytes)
    for name, p in room.pipelines.items():
        labels = (room.name, name)
        live = p.signal  # rates are per whole second: stale once frames stop
        metrics.INPUT_FPS.labels(*labels).set(p.stats.fps_in.value if live else 0)
        metrics.ENCODED_FPS.labels(*labels).set(p.stats.fps_encoded.value if live else 0)
        metrics.advance(metrics.DROPPED, labels, p.stats.dropped)
        metrics.ENCODER_LAG.labels(*labels).set(p.stats.encoder_lag_s)
        metrics.SIGNAL.labels(*labels).set(1 if p.signal else 0)
        metrics.RECORDING.labels(*labels).set(1 if p.recording else 0)
        metrics.advance(metrics.RECONNECTS, labels, p.stats.reconnects)
