"""The purge planner's watermark choice (docs/purge.md): oldest committed first, until the
expected free space reaches the high watermark."""

from __future__ import annotations

from cinebridge_capture.purge import Space, pick_for_space
from cinebridge_capture.purge_repository import Candidate

MB = 1 << 20


def studies(*sizes_mb: int) -> list[Candidate]:
    return [Candidate(f"study-{i}", f"2.25.{i}", size * MB) for i, size in enumerate(sizes_mb)]


def test_oldest_first_until_the_high_watermark_is_expected() -> None:
    # 1000 MB volume, 50 MB free (5 %), high watermark 20 %: 150 MB must be freed; each study
    # frees its media and about as much in DICOM files (twice its media bytes).
    picked = pick_for_space(studies(40, 30, 10, 500), Space(50 * MB, 1000 * MB), 20.0)
    assert [c.study_id for c in picked] == ["study-0", "study-1", "study-2"]


def test_nothing_when_free_space_is_above_the_high_watermark() -> None:
    assert pick_for_space(studies(40, 30), Space(300 * MB, 1000 * MB), 20.0) == []


def test_every_study_when_even_all_of_them_fall_short() -> None:
    picked = pick_for_space(studies(1, 2), Space(0, 1000 * MB), 90.0)
    assert [c.study_id for c in picked] == ["study-0", "study-1"]


def test_free_percent_of_an_empty_volume_reads_full() -> None:
    assert Space(0, 0).free_percent == 100.0
    assert Space(25, 100).free_percent == 25.0
