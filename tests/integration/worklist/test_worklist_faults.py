"""Faults with a real RIS: wlmscpfs slower than the client limit, and dying mid-response.

`wlmscpfs --sleep-during 1` waits one second before each response, so a 7-entry answer takes
~7 s: the 2.5 s client limit cuts it (Table 26), and killing the server after ~2.5 s leaves the
entries received so far, flagged as possibly incomplete (Table 17). The 100,000-match cap,
C-CANCEL and malformed entries are in the unit tests (in-process SCP that can misbehave).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest
from cinebridge_testkit import require_tool
from cinebridge_testkit.demo_worklist import DEMO_AE
from cinebridge_testkit.worklist_peers import Wlmscpfs
from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier
from cinebridge_worklist.scu import FindLimits, FindResult, Peer, find_worklist

pytestmark = pytest.mark.integration


def seven_entries(port: int, today: dt.date, limits: FindLimits) -> FindResult:
    """ES at ROOM1 scheduled today: entries 80, 220, ..., 920 of the demo worklist."""
    day = today.strftime("%Y%m%d")
    identifier = build_identifier(
        SearchFields(date_from=day, date_to=day), ServerKeys(modality="ES", station_ae="ROOM1")
    )
    return find_worklist(Peer("127.0.0.1", port, DEMO_AE, "SPACS"), identifier, limits, "")


def test_a_server_slower_than_the_limit_reports_a_timeout(
    worklist_root: Path, worklist_today: dt.date, tmp_path: Path
) -> None:
    require_tool("wlmscpfs")
    with Wlmscpfs(worklist_root, tmp_path / "slow.log", "--sleep-during", "1") as server:
        started = time.monotonic()
        result = seven_entries(server.port, worklist_today, FindLimits(timeout_s=2.5))
        elapsed = time.monotonic() - started
    assert result.outcome == "timeout" and result.incomplete
    assert 1 <= len(result.items) < 7
    assert "2.5 s" in result.detail
    # Below the 7 s the whole answer takes, with room for a loaded machine.
    assert elapsed < 6.5, f"the 2.5 s limit took {elapsed:.1f} s"


def test_a_server_dying_mid_response_leaves_a_flagged_partial_list(
    worklist_root: Path, worklist_today: dt.date, tmp_path: Path
) -> None:
    require_tool("wlmscpfs")
    with Wlmscpfs(
        worklist_root, tmp_path / "dying.log", "--single-process", "--sleep-during", "1"
    ) as server:
        assert server.proc is not None
        killer = threading.Timer(2.5, server.proc.kill)
        killer.start()
        try:
            result = seven_entries(server.port, worklist_today, FindLimits(timeout_s=20))
        finally:
            killer.cancel()
    assert result.outcome == "partial" and result.incomplete
    assert 1 <= len(result.items) < 7
    assert "incomplete" in result.detail
    assert all(item.modality == "ES" for item in result.items)


def test_the_full_answer_when_nothing_goes_wrong(
    worklist_root: Path, worklist_today: dt.date, wlmscpfs_peer: object
) -> None:
    port = wlmscpfs_peer.port  # type: ignore[attr-defined]
    result = seven_entries(port, worklist_today, FindLimits())
    assert result.outcome == "complete"
    assert sorted(item.patient_id or "" for item in result.items) == [
        f"PID{i:05d}" for i in (80, 220, 360, 500, 640, 780, 920)
    ]
