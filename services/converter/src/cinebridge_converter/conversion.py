"""What the two steps of a conversion share: the media item and its limits, the prepared bit
streams, the pool that runs a check beside the work, and which failures are worth a retry.

`convert.prepare` (`convert.py`) makes the streams; `instance_write.write` writes them as
DICOM instances. Nothing here touches NATS or PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from av.codec.codec import UnknownCodecError
from cinebridge_common.store import sha256_file

from . import probe as probing
from .dicomize import Pixels
from .errors import RESOURCE_ERRNOS, BadMedia, ConversionError, TransientFailure

Progress = Callable[[float, str], None]
_T = TypeVar("_T")
#: The write of a source kept as it is runs here while the calling thread decode-checks it,
#: and the SHA-256 check of a source while it is remuxed or transcoded. (This way round the
#: decoder allocates in the caller's malloc arena, as it did before the two ran side by side:
#: a decoder in a new thread's arena added ~30 MB of peak RSS.)
COPIES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="part10-copy")


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 8192 * 8192
    max_duration_s: float = 12 * 3600
    max_fragment_bytes: int = 0xFFFFFFFE
    transcode_seconds_per_second: float = 4.0  # transcode time limit = this x duration + 60 s
    preset: str = "veryfast"


@dataclass(frozen=True)
class MediaInfo:
    id: str
    kind: str  # snapshot | recording
    path: Path
    sha256: str
    source: str
    captured_at: dt.datetime


class NotAsCoded(Exception):
    """The source kept as it is failed the decode check that ran beside its write."""


@dataclass
class Prepared:
    """Conforming bit streams ready to encapsulate (one per instance)."""

    streams: list[Path]
    pixels: list[Pixels]
    verbatim: bool  # the source itself is the stream (its hash is checked while copying)
    temporaries: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The decode check (stream, frames) of a source kept as it is: `write` runs it while it
    #: copies the stream (the check is decoding, the copy I/O and hashing: side by side the as-is
    #: path costs about the longer of the two, not their sum).
    deferred_check: tuple[Path, int, probing.CountedPass | None] | None = None
    #: Prepares again with a re-encode (the reason given) when the deferred check fails.
    redo: Callable[[str], Prepared] | None = None

    def adopt(self, other: Prepared) -> None:
        """Take `other`'s streams in place (the caller's reference sees the re-encode)."""
        self.cleanup()
        self.streams, self.pixels, self.verbatim = other.streams, other.pixels, other.verbatim
        self.temporaries, self.notes = other.temporaries, other.notes
        self.deferred_check, self.redo = other.deferred_check, None

    def cleanup(self) -> None:
        for path in self.temporaries:
            path.unlink(missing_ok=True)


def classify(exc: BaseException) -> ConversionError | TransientFailure:
    """Only a lack of resources (disk, memory, file handles) is worth a retry; anything else
    that FFmpeg or the file system says about the input is final. Never names a file path."""
    number = getattr(exc, "errno", None)
    cause = getattr(exc, "strerror", None) or type(exc).__name__
    if number in RESOURCE_ERRNOS:
        return TransientFailure(f"out of resources: {cause}")
    if isinstance(exc, UnknownCodecError):
        return BadMedia(f"the recording uses a codec FFmpeg cannot decode: {exc}")
    return BadMedia(f"the media cannot be converted: {cause}")


def verify(media: MediaInfo) -> None:
    if sha256_file(media.path) != media.sha256:
        raise BadMedia("the media file does not match its recorded SHA-256 (changed or corrupt)")


def verified_while(media: MediaInfo, work: Callable[[], _T]) -> _T:
    """`work()` (a remux or transcode of the source) while another thread checks the source
    against its SHA-256: the hash is a pass over the file that needs no result of the work, and
    hashlib releases the GIL, so the two overlap instead of adding up. Nothing made from a
    source that fails the check is returned; that failure wins over the work's own."""
    verifying = COPIES.submit(verify, media)
    try:
        result = work()
    except BaseException:
        verifying.result()  # a changed or corrupt source is the reason to report
        raise
    verifying.result()
    return result
