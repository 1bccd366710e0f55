"""A socket read through one buffer, every read bounded by a deadline (PS3.8 9.1.2 transport).

Each association has a small buffer for PDU headers and command sets; the larger one for data
set bytes is allocated at its first data set, and `stream()` hands those bytes on in pieces
without collecting them. A read that does not complete within its deadline raises `TooSlow`;
a connection the peer closed (or that broke) raises `Closed`.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time
from collections.abc import Callable

#: Receive buffer for PDU headers and command sets (every association has one).
SMALL = 1 << 16
#: Largest read of data set bytes; this buffer is allocated at an association's first data set.
CHUNK = 1 << 18
#: The most buffers one sendmsg takes (Linux UIO_MAXIOV is 1024).
IOV_MAX = 512


#: What a connection error means for the person who reads it (a delivery's last error, the
#: Echo button), by errno; the errno's own text follows in brackets.
_MEANINGS = {
    errno.ECONNREFUSED: "connection refused: nothing listens on that port (is the peer running, "
    "the port right?)",
    errno.ETIMEDOUT: "no answer to the connection (the host is down, or a firewall drops it)",
    errno.EHOSTUNREACH: "host unreachable (no network route to it)",
    errno.ENETUNREACH: "network unreachable (no network route to it)",
    errno.ECONNRESET: "connection reset by the peer",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "the peer closed the connection",
}


def describe(exc: OSError) -> str:
    """An OSError of a connection in words an operator can act on, e.g. "connection refused:
    nothing listens on that port (is the peer running, the port right?) [Errno 111]"."""
    if isinstance(exc, socket.timeout) and exc.errno is None:
        return _MEANINGS[errno.ETIMEDOUT]
    meaning = _MEANINGS.get(exc.errno or 0)
    if meaning is None:
        return str(exc) or type(exc).__name__
    return f"{meaning} [Errno {exc.errno}]"


class Closed(Exception):
    """The peer closed the connection, or it broke."""


class TooSlow(Exception):
    """A PDU did not arrive completely within its deadline, or the association sat idle."""


class Connection:
    """A socket read through one buffer, every read bounded by a deadline."""

    def __init__(self, sock: socket.socket, prefix: bytes, network_timeout_s: float) -> None:
        self.sock = sock
        self._buf = bytearray(SMALL)
        self._view = memoryview(self._buf)
        self._big: memoryview | None = None
        self._start = 0
        self._end = len(prefix)
        self._buf[: len(prefix)] = prefix
        self._network_timeout_s = network_timeout_s
        self._timeout: float | None = -1.0

    def _recv_into(self, view: memoryview, deadline: float) -> int:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TooSlow("deadline passed")
        timeout = min(remaining, self._network_timeout_s)
        if abs(timeout - (self._timeout or 0.0)) > 0.05:  # settimeout is a system call
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            count = self.sock.recv_into(view)
        except TimeoutError as exc:
            raise TooSlow("no data within the network timeout") from exc
        except OSError as exc:
            raise Closed(str(exc)) from exc
        if count == 0:
            raise Closed("connection closed by the peer")
        return count

    def read(self, n: int, deadline: float) -> bytes:
        """Exactly `n` bytes (the caller has bounded `n`)."""
        if self._end - self._start >= n:
            out = bytes(self._view[self._start : self._start + n])
            self._start += n
            return out
        if n > SMALL:
            out_buf = bytearray()
            self.stream(n, out_buf.extend, deadline)
            return bytes(out_buf)
        if self._start:  # compact what is buffered to the front
            have = self._end - self._start
            self._buf[:have] = self._view[self._start : self._end]
            self._start, self._end = 0, have
        while self._end < n:
            self._end += self._recv_into(self._view[self._end :], deadline)
        out = bytes(self._view[:n])
        self._start = n
        return out

    def stream(self, n: int, sink: Callable[[memoryview], object], deadline: float) -> None:
        """Pass the next `n` bytes to `sink` in pieces, without collecting them."""
        have = self._end - self._start
        if have:
            take = min(have, n)
            sink(self._view[self._start : self._start + take])
            self._start += take
            n -= take
        if self._start == self._end:
            self._start = self._end = 0
        if n > 0 and self._big is None:
            self._big = memoryview(bytearray(CHUNK))
        big = self._big
        while n > 0:
            assert big is not None
            count = self._recv_into(big[: min(n, CHUNK)], deadline)
            sink(big[:count])
            n -= count

    def readable(self) -> bool:
        """Whether bytes wait to be read (buffered here, in TLS, or on the socket), without
        blocking: a peer's closing counts, the read then raises `Closed`."""
        if self._end > self._start:
            return True
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            ready, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):  # closed meanwhile: the read says so
            return True
        return bool(ready)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise Closed(str(exc)) from exc


def send_gathered(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """Send every buffer with as few system calls as possible (sendmsg may send part); TLS
    sockets cannot gather, and copying is cheap next to encryption."""
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(b"".join(buffers))
        return
    views = [memoryview(b) for b in buffers]
    while views:
        sent = sock.sendmsg(views[:IOV_MAX])
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]
