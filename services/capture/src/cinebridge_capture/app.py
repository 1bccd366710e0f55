"""Composition root of one capture process (one room): context, room, RPC, the study catalog's
RPC, the purge policy, preview, recovery."""

from __future__ import annotations

import asyncio
import logging

from cinebridge_common.logging import kv
from cinebridge_common.messages.base import Message
from cinebridge_common.service import ServiceContext
from cinebridge_common.supervise import every

from . import catalog_repository as catalog
from . import purge_repository
from . import repository as repo
from .catalog import CATALOG_CONSUMERS, CATALOG_HANDLERS, QUEUE, CatalogDeps, consumer_spec
from .handlers import RPC_HANDLERS, Deps
from .keys import InputReader, key_code
from .preview import PreviewServer, PreviewWorker
from .purge import READ_MODELS, PurgeDeps, purge_once
from .purge_handlers import PURGE_CONSUMERS, PURGE_RPC
from .recovery import recover_recordings
from .room import Room
from .settings import CaptureSettings
from .supervisor import supervise

log = logging.getLogger(__name__)


async def run(settings: CaptureSettings) -> None:
    room_name = settings.capture_room
    async with ServiceContext("capture", settings, room=room_name) as ctx:

        async def emit(msg: Message) -> None:
            await ctx.bus.publish_core(msg)  # state changes: the next one supersedes it

        # Held until exit; closing the pool ends the session and frees the room.
        claim = await ctx.pool.acquire()
        ctx.stack.push_async_callback(ctx.pool.release, claim)
        await repo.claim_room(claim, room_name)
        room = Room(settings, ctx.pool, ctx.store, emit)
        recovered = await recover_recordings(room)
        if recovered:
            log.info("recordings recovered", extra=kv(room=room_name, count=recovered))
        await room.start()
        ctx.stack.push_async_callback(room.close)

        worker = PreviewWorker(
            room.pipelines,
            settings.capture_preview_fps,
            settings.capture_preview_width,
            settings.capture_preview_quality,
            settings.capture_thumbnail_interval_s,
        )
        worker.start()
        ctx.stack.callback(worker.close)
        preview = PreviewServer(
            worker, settings.capture_preview_host, settings.capture_preview_port
        )
        await preview.start()
        ctx.stack.push_async_callback(preview.stop)
        ctx.detail.update(room=room_name, preview=preview.url, sources=",".join(room.pipelines))

        deps = Deps(room, preview.url)
        for request_type, handler in RPC_HANDLERS:
            subject = request_type.subject.format(room=room_name)
            await ctx.bus.serve(request_type, ctx.bind_rpc(handler, deps), subject=subject)
        catalog_deps = CatalogDeps(ctx.pool)
        for request_type, catalog_handler in CATALOG_HANDLERS:
            await ctx.bus.serve(
                request_type, ctx.bind_rpc(catalog_handler, catalog_deps), queue=QUEUE
            )
        for durable, event_type, event_handler in CATALOG_CONSUMERS:
            spec = consumer_spec(durable, event_type.subject)
            ctx.bus.start_consumer(spec, event_type, ctx.bind_job(event_handler, catalog_deps))
        ctx.replay_lost(catalog.LOST_WORK + purge_repository.LOST_WORK)
        await start_purge_policy(ctx, settings)
        ctx.spawn(supervise(room, ctx.stop), "supervise")
        if settings.capture_input_device is not None:
            reader = recording_keys(settings, room)
            reader.start()
            ctx.stack.callback(reader.close)
        log.info("room ready", extra=kv(room=room_name, preview=preview.url))
        await ctx.serve_forever()


async def start_purge_policy(ctx: ServiceContext, settings: CaptureSettings) -> None:
    """The purge planner (one runner at a time across rooms), the hold RPC and the converter's
    report (docs/purge.md)."""
    deps = PurgeDeps(ctx.pool, ctx.store, ctx.bus, batch=settings.capture_purge_batch)
    for request_type, handler in PURGE_RPC:
        await ctx.bus.serve(request_type, ctx.bind_rpc(handler, deps), queue=QUEUE)
    for durable, event_type, event_handler in PURGE_CONSUMERS:
        spec = consumer_spec(durable, event_type.subject)
        ctx.bus.start_consumer(spec, event_type, ctx.bind_job(event_handler, deps))
    ctx.watch_read_models(READ_MODELS)
    interval = settings.capture_purge_interval_s
    ctx.spawn(lambda: every("capture-purge", interval, lambda: purge_once(deps), ctx.stop), "purge")


def recording_keys(settings: CaptureSettings, room: Room) -> InputReader:
    """Map the input device's key presses to room commands (run on the event loop)."""
    assert settings.capture_input_device is not None
    actions = {key_code(name): key for name, key in settings.capture_input_keys.items()}
    for key in actions.values():
        room.pipeline(key.source)  # an unknown source is a configuration error: fail at start
    loop = asyncio.get_running_loop()

    def on_press(code: int) -> None:
        key = actions.get(code)
        if key is not None:
            loop.call_soon_threadsafe(room.press, key)

    return InputReader(settings.capture_input_device, on_press)
