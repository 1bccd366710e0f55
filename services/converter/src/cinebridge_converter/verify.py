"""The check every bit stream passes before it becomes an instance: it plays, and it holds the
frames the instance will state.

Counting uses the container's index when it has one (MP4 `stsz`, fragmented MP4 `trun`) and a
packet count otherwise; a source kept as it is was counted by the probe's pass over the same
file (its packets then are not demuxed a second time: the probe hands over its last GOP).
Decoding covers the first GOP (from the start, up to the second key frame) and the last GOP
(from the last key frame to the end); its leading pictures, which may refer to the GOP before,
are not required. A stream that fails is never encapsulated: the caller
re-encodes it, or fails the job with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from .isobmff import fragmented_sample_count
from .probe import LAST_GOP_BYTES, CountedPass, container_of, open_input

#: The first GOP check decodes at most this many packets (a stream with one key frame only).
FIRST_GOP_LIMIT = 600
#: Decoder options of the check: the deblocking filter changes how pictures look, not whether
#: they decode, and skipping it halves the work. One thread keeps memory low.
CHECK_OPTIONS = {"skip_loop_filter": "all"}


class Unplayable(Exception):
    """The stream does not decode as a whole, or holds another number of frames."""


@dataclass(frozen=True)
class Checked:
    frames: int
    counted_by: str  # "index" | "packets"


def check_playable(path: Path, expected_frames: int, counted: CountedPass | None = None) -> Checked:
    """Raise `Unplayable` with the reason unless `path` decodes and has `expected_frames`.

    `counted`: the probe's pass over every packet of this same file (a source kept as it is,
    whose bytes the copy checks against their SHA-256): its count stands for a count here, and
    its last GOP is decoded after the first; only the first GOP is demuxed here."""
    try:
        with open_input(path) as inp:
            if not inp.streams.video:
                raise Unplayable("the converted stream has no video stream")
            stream = inp.streams.video[0]
            indexed = _index_count(path, inp, stream)
            known = indexed if indexed is not None else counted.packets if counted else None
            scan = _Scan(stream)
            for packet in inp.demux(stream):
                if packet.size == 0:
                    continue
                if not scan.add(packet) and known is not None:
                    break  # the first GOP is checked; the index (or the probe) gives the count
            scan.finish_first()
            frames = known if known is not None else scan.packets
            if frames != expected_frames:
                raise Unplayable(
                    f"the converted stream holds {frames} frames where {expected_frames} are stated"
                )
            last = scan.last if counted is None else counted.last_gop
            if indexed is None and last:
                # The decoder that read the stream has its parameter sets (a TS or elementary
                # stream may repeat them only at its start).
                stream.codec_context.flush_buffers()
                _decode_last(stream.codec_context, list(last))
        if indexed is not None:
            _last_gop_by_seek(path)
    except av.error.FFmpegError as exc:
        raise Unplayable(f"the converted stream cannot be read: {exc.strerror}") from exc
    return Checked(frames, "index" if indexed is not None else "packets")


def _index_count(path: Path, inp: av.container.InputContainer, stream: Any) -> int | None:
    name = container_of(path, inp.format.name)
    if name not in ("mp4", "mov"):
        return None
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    return fragmented_sample_count(path, stream.id)


class _Scan:
    """One pass over the packets: count them, decode the first GOP, keep the last one."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        stream.codec_context.options = dict(CHECK_OPTIONS)
        self.packets = 0
        self.keyframes = 0
        self.first_fed = 0
        self.first_decoded = 0
        self.first_done = False
        self.last: list[Any] | None = []
        self.last_bytes = 0

    def add(self, packet: Any) -> bool:
        """Take one packet; False once the first GOP is complete."""
        self.packets += 1
        if self.packets == 1 and not packet.is_keyframe:
            raise Unplayable("the converted stream does not start with a key frame")
        if packet.is_keyframe:
            self.keyframes += 1
            self.last, self.last_bytes = [], 0
        if not self.first_done:
            if self.keyframes >= 2 or self.first_fed >= FIRST_GOP_LIMIT:
                self.finish_first()
            else:
                self.first_fed += 1
                self.first_decoded += len(self._decode(packet))
        if self.last is not None:
            self.last.append(packet)
            self.last_bytes += packet.size
            if self.last_bytes > LAST_GOP_BYTES:
                self.last = None
        return not self.first_done

    def _decode(self, packet: Any) -> list[Any]:
        try:
            return list(self.stream.codec_context.decode(packet))
        except av.error.FFmpegError as exc:
            raise Unplayable(f"a picture of the first GOP does not decode: {exc.strerror}") from exc

    def finish_first(self) -> None:
        if self.first_done:
            return
        self.first_done = True
        self.first_decoded += len(self._decode(None))
        if self.first_decoded != self.first_fed:
            raise Unplayable(
                f"only {self.first_decoded} of the {self.first_fed} pictures of the first GOP "
                "decode (field-coded or damaged stream)"
            )


def _last_gop_by_seek(path: Path) -> None:
    """Decode the packets from the last key frame on, found through the container's index."""
    with open_input(path) as inp:
        stream = inp.streams.video[0]
        stream.codec_context.options = dict(CHECK_OPTIONS)
        end = (stream.start_time or 0) + (stream.duration or 0)
        inp.seek(end, stream=stream, backward=True, any_frame=False)
        packets: list[Any] = []
        size = 0
        for packet in inp.demux(stream):
            if packet.size == 0:
                continue
            if packet.is_keyframe:
                packets, size = [], 0
            packets.append(packet)
            size += packet.size
            if size > LAST_GOP_BYTES:
                return  # one long GOP: the first GOP's check covered its start
        stream.codec_context.flush_buffers()
        _decode_last(stream.codec_context, packets)


def _decode_last(ctx: Any, packets: list[Any]) -> None:
    """Decode the last GOP; every picture from its key frame on must come out (leading
    pictures before the key frame in display order may need the GOP before)."""
    if not packets:
        return
    key_pts = packets[0].pts
    needed = sum(1 for p in packets if p.pts is None or key_pts is None or p.pts >= key_pts)
    shown = 0
    try:
        for packet in [*packets, None]:
            for frame in ctx.decode(packet):
                if frame.pts is None or key_pts is None or frame.pts >= key_pts:
                    shown += 1
    except av.error.FFmpegError as exc:
        raise Unplayable(f"a picture of the last GOP does not decode: {exc.strerror}") from exc
    if shown < needed:
        raise Unplayable(f"only {shown} of the {needed} pictures of the last GOP decode")
