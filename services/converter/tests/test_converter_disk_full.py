"""A media store that cannot take the output (a real write limit, RLIMIT_FSIZE: the kernel fails
the write with EFBIG as a full disk fails it with ENOSPC) is a transient failure, retried later;
the recording is not called bad media."""

from __future__ import annotations

import itertools
import resource
import threading
from pathlib import Path

import pytest
from cinebridge_converter import video
from cinebridge_converter.errors import TransientFailure
from cinebridge_testkit.media import make_video

H264 = "1.2.840.10008.1.2.4.102"


def test_remux_into_a_full_store_is_transient(tmp_path: Path) -> None:
    src = tmp_path / "rec.mp4"
    make_video(src, width=640, height=360, frames=50, options={"preset": "ultrafast", "crf": "0"})
    assert src.stat().st_size > 256 << 10, "the source must not fit under the limit"
    counter = itertools.count()
    outputs: list[Path] = []

    def new_path() -> Path:
        outputs.append(tmp_path / f"out{next(counter)}.mp4")
        return outputs[-1]

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, limit[1]))
    try:
        with pytest.raises(TransientFailure, match="full"):
            video.remux(
                src,
                ts_uid=H264,
                container="mp4",
                new_path=new_path,
                max_bytes=1 << 30,
                progress=lambda _f, _s: None,
                cancel=threading.Event(),
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    assert not any(p.exists() for p in outputs), "a cut-short output was left behind"
