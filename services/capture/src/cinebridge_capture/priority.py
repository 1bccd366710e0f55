"""CPU priority of the capture's own threads (Linux niceness is per thread).

The reader and encoder threads of a recording run above everything else on the box (negative
niceness, which needs CAP_SYS_NICE or an RLIMIT_NICE allowance: compose `cap_add: [SYS_NICE]`);
preview and thumbnail work runs below it. Threads started later by a thread (x264's worker
threads, FFmpeg's decoder threads) inherit its niceness.
"""

from __future__ import annotations

import logging
import os
import threading

from cinebridge_common.logging import kv

log = logging.getLogger(__name__)
_warned = False


def set_thread_nice(nice: int) -> bool:
    """Give the calling thread niceness `nice`; False (logged once) where that is not allowed."""
    global _warned
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError) as exc:
        if not _warned:
            _warned = True
            log.warning(
                "thread priority not raised (needs CAP_SYS_NICE); recording threads run at "
                "normal priority and may drop frames on a loaded box",
                extra=kv(nice=nice, error=str(exc)),
            )
        return False
    return True


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def receive_threads() -> set[int]:
    """Native ids of FFmpeg's network receive threads in this process (`udp-rx`, started by
    opening a UDP input; the other protocols receive in the reading thread itself)."""
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                if fh.read().strip() == "udp-rx":
                    found.add(int(tid))
        except OSError:
            continue  # ended meanwhile
    return found


def renice(tids: set[int], nice: int) -> None:
    """Give other threads of this process niceness `nice` (best effort: a thread may have
    ended, and raising priority may not be allowed)."""
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            continue
