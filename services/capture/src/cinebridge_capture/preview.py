"""Live preview over HTTP: MJPEG per source at a reduced size and rate, plus thumbnails.

`GET /preview/<source>.mjpg` streams `multipart/x-mixed-replace` JPEG parts (what an `<img>`
tag shows directly); `GET /thumbnail/<source>.jpg` returns a thumbnail at most the thumbnail
interval old. Preview JPEGs are made in one worker thread from the latest frame only, and only
while someone watches; thumbnails are made there too, when asked for (a dashboard that polls),
never on a timer nobody reads. So preview never holds up the reader or encoder threads of a
recording, and a room nobody looks at spends nothing on pictures; the thread also runs at a
lower CPU priority (nice +10), so on a loaded box the encoder wins. A pass-through source is
decoded live only while its preview is watched; its thumbnail is its last keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from cinebridge_common.logging import kv

from .pipeline import SourcePipeline
from .pipeline_types import NoSignal
from .priority import set_thread_nice
from .snapshot import jpeg_from_frame

log = logging.getLogger(__name__)

BOUNDARY = "cbframe"
MAX_VIEWERS_PER_SOURCE = 8
#: Niceness of the preview thread (and of the decoder threads it starts).
PREVIEW_NICE = 10


#: How long a thumbnail request waits for a fresh picture before it gets the last one (if any).
THUMBNAIL_WAIT_S = 2.0


@dataclass
class _Image:
    seq: int = 0
    jpeg: bytes = b""
    made: float = float("-inf")  # monotonic time it was made


class PreviewWorker:
    """Makes preview and thumbnail JPEGs in its own thread, at most `fps` per source."""

    def __init__(
        self,
        pipelines: dict[str, SourcePipeline],
        fps: float,
        width: int,
        quality: int,
        thumbnail_interval_s: float,
    ) -> None:
        self.pipelines = pipelines
        self.fps = fps
        self.width = width
        self.quality = quality
        self.thumbnail_interval_s = thumbnail_interval_s
        self.viewers = dict.fromkeys(pipelines, 0)
        self.previews = {name: _Image() for name in pipelines}
        self.thumbnails = {name: _Image() for name in pipelines}
        self._thumb_wanted: set[str] = set()
        #: Requests waiting for the next thumbnail attempt of a source, resolved by the worker.
        self._thumb_waiters: dict[str, list[asyncio.Future[None]]] = {n: [] for n in pipelines}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="preview", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=3)

    def watch(self, name: str, delta: int) -> None:
        """A live preview viewer of `name` arrives (+1) or leaves (-1)."""
        self.viewers[name] += delta
        self._wake.set()

    def request_thumbnail(self, name: str) -> None:
        """Make a fresh thumbnail of `name` soon (the worker thread decodes and compresses)."""
        with self._lock:
            self._thumb_wanted.add(name)
        self._wake.set()

    async def thumbnail(self, name: str) -> bytes:
        """A thumbnail at most the thumbnail interval old; made now if the last one is older
        (waiting up to THUMBNAIL_WAIT_S for it). The last one, however old, when no fresh one
        comes (no signal right now); b"" when there has never been one."""
        image = self.thumbnails[name]
        if image.jpeg and time.monotonic() - image.made < self.thumbnail_interval_s:
            return image.jpeg
        attempt = asyncio.get_running_loop().create_future()
        with self._lock:
            self._thumb_waiters[name].append(attempt)
        self.request_thumbnail(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempt, THUMBNAIL_WAIT_S)
        return image.jpeg

    def _attempted(self, name: str) -> None:
        """A thumbnail of `name` was made (or could not be: no signal): wake its requests."""
        with self._lock:
            waiters, self._thumb_waiters[name] = self._thumb_waiters[name], []
        for attempt in waiters:
            with contextlib.suppress(RuntimeError):  # its event loop has closed
                attempt.get_loop().call_soon_threadsafe(_settle, attempt)

    def _run(self) -> None:
        set_thread_nice(PREVIEW_NICE)
        while not self._stop.is_set():
            watched = any(count > 0 for count in self.viewers.values())
            # Unwatched, the thread sleeps until asked (a viewer, a thumbnail request); the
            # 1 s bound only notices viewers counted without `watch` (tests, the benchmark).
            self._wake.wait(1 / self.fps if watched else 1.0)
            self._wake.clear()
            with self._lock:
                thumbs, self._thumb_wanted = self._thumb_wanted, set()
            for name, pipeline in self.pipelines.items():
                want_preview = self.viewers[name] > 0
                pipeline.preview_watched = want_preview
                want_thumb = name in thumbs
                if not (want_preview or want_thumb):
                    continue
                try:
                    self._picture(name, pipeline, want_preview, want_thumb)
                finally:
                    if want_thumb:
                        self._attempted(name)

    def _picture(
        self, name: str, pipeline: SourcePipeline, want_preview: bool, want_thumb: bool
    ) -> None:
        try:
            jpeg = jpeg_from_frame(pipeline.preview_frame(), self.quality, self.width)
        except NoSignal:
            return
        except Exception:
            log.exception("preview failed", extra=kv(source=name))
            return
        if want_preview:
            image = self.previews[name]
            image.seq, image.jpeg = image.seq + 1, jpeg
        if want_thumb:
            thumb = self.thumbnails[name]
            thumb.jpeg, thumb.made = jpeg, time.monotonic()
            thumb.seq += 1


class PreviewServer:
    """A small HTTP/1.1 server for the two GET routes; anything else is 404/405."""

    def __init__(self, worker: PreviewWorker, host: str, port: int) -> None:
        self.worker = worker
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path = await _read_request(reader)
            if method != "GET":
                await _respond(writer, "405 Method Not Allowed", b"only GET")
            elif (name := _route(path, "/preview/", ".mjpg")) in self.worker.pipelines:
                await self._stream(name, writer)
            elif (name := _route(path, "/thumbnail/", ".jpg")) in self.worker.pipelines:
                jpeg = await self.worker.thumbnail(name)
                if jpeg:
                    await _respond(writer, "200 OK", jpeg, "image/jpeg")
                else:
                    await _respond(writer, "503 Service Unavailable", b"no signal yet")
            else:
                await _respond(writer, "404 Not Found", b"not found")
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stream(self, name: str, writer: asyncio.StreamWriter) -> None:
        if self.worker.viewers[name] >= MAX_VIEWERS_PER_SOURCE:
            await _respond(writer, "503 Service Unavailable", b"too many viewers")
            return
        self.worker.watch(name, +1)
        try:
            writer.write(
                "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nConnection: close\r\n"
                f"Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\r\n".encode()
            )
            sent = 0
            while True:
                image = self.worker.previews[name]
                if image.seq != sent and image.jpeg:
                    sent = image.seq
                    writer.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(image.jpeg)}\r\n\r\n".encode()
                        + image.jpeg
                        + b"\r\n"
                    )
                    # A viewer that does not read within 5 s is dropped (bounded buffering).
                    await asyncio.wait_for(writer.drain(), 5)
                await asyncio.sleep(1 / (2 * self.worker.fps))
        finally:
            self.worker.watch(name, -1)


def _settle(attempt: asyncio.Future[None]) -> None:
    if not attempt.done():
        attempt.set_result(None)


def _route(path: str, prefix: str, suffix: str) -> str | None:
    path = path.split("?", 1)[0]
    if path.startswith(prefix) and path.endswith(suffix):
        return path[len(prefix) : -len(suffix)]
    return None


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    line = await asyncio.wait_for(reader.readline(), 5)
    for _ in range(100):  # bounded header block
        header = await asyncio.wait_for(reader.readline(), 5)
        if header in (b"\r\n", b"\n", b""):
            break
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        raise ValueError("bad request line")
    return parts[0], parts[1]


async def _respond(
    writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str = "text/plain"
) -> None:
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
