"""Recording keys: a Linux input device (USB foot pedal, keypad) mapped to capture actions.

Reads `struct input_event` records from `/dev/input/event*` (linux/input.h) in a thread, with no
extra dependency; a key press (EV_KEY, value 1) whose code is mapped calls back with the action.
An unplugged device is reopened every few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from cinebridge_common.logging import kv

log = logging.getLogger(__name__)

#: struct input_event on 64-bit Linux: struct timeval (2 x long), __u16 type, __u16 code, __s32.
EVENT = struct.Struct("llHHi")
EV_KEY = 1
KEY_PRESS = 1

#: Codes of linux/input-event-codes.h that pedals and keypads commonly send.
KEY_CODES = {
    **{f"KEY_F{n}": 58 + n for n in range(1, 11)},
    "KEY_F11": 87,
    "KEY_F12": 88,
    "KEY_ENTER": 28,
    "KEY_SPACE": 57,
    "KEY_ESC": 1,
    "KEY_PAGEUP": 104,
    "KEY_PAGEDOWN": 109,
    "KEY_LEFT": 105,
    "KEY_RIGHT": 106,
    "KEY_UP": 103,
    "KEY_DOWN": 108,
    "KEY_A": 30,
    "KEY_B": 48,
    "KEY_C": 46,
    "KEY_1": 2,
    "KEY_2": 3,
    "KEY_3": 4,
    "BTN_LEFT": 272,
    "BTN_RIGHT": 273,
    "BTN_MIDDLE": 274,
}


def key_code(name: str) -> int:
    """`KEY_F9`, `BTN_LEFT` ... or a decimal code."""
    if name.isdigit():
        return int(name)
    try:
        return KEY_CODES[name.upper()]
    except KeyError:
        raise ValueError(f"unknown key name {name!r}: use a KEY_/BTN_ name or a code") from None


class InputReader:
    """Calls `on_press(code)` for every key press on `device`, until `close()`."""

    def __init__(self, device: Path, on_press: Callable[[int], None], retry_s: float = 3.0) -> None:
        self.device = device
        self.on_press = on_press
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="input-keys", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open(self.device, "rb", buffering=0) as fh:
                    log.info("input device open", extra=kv(device=str(self.device)))
                    self._read(fh)
            except OSError as exc:
                log.warning(
                    "input device unavailable", extra=kv(device=str(self.device), error=str(exc))
                )
            self._stop.wait(self.retry_s)

    def _read(self, fh: object) -> None:
        read = fh.read  # type: ignore[attr-defined]
        buffer = b""
        while not self._stop.is_set():
            chunk = read(EVENT.size * 16)
            if not chunk:
                return  # device gone (or the writer of a test FIFO closed it)
            buffer += chunk
            while len(buffer) >= EVENT.size:
                _, _, ev_type, code, value = EVENT.unpack_from(buffer)
                buffer = buffer[EVENT.size :]
                if ev_type == EV_KEY and value == KEY_PRESS:
                    with contextlib.suppress(Exception):
                        self.on_press(code)
