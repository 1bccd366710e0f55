"""TCP relays between a requestor and its peer: one that stalls mid-transfer, one that adds TLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path


def _pipe(src: socket.socket, dst: socket.socket, limit: int | None = None) -> None:
    """Copy `src` to `dst` until EOF; after `limit` bytes, hang (read nothing more, close
    nothing)."""
    sent = 0
    with contextlib.suppress(OSError):
        while True:
            data = src.recv(65536)
            if not data:
                break
            if limit is not None and sent + len(data) > limit:
                dst.sendall(data[: limit - sent])
                threading.Event().wait()
            dst.sendall(data)
            sent += len(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class _Relay:
    """Listens on a loopback port of its own; each accepted connection goes to `_relay`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _upstream(self, client: socket.socket) -> socket.socket:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self._open += [client, upstream]
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        return upstream

    def close(self) -> None:
        self.listener.close()
        for sock in self._open:
            # shutdown, not just close: a close() does not wake a recv() blocked in another
            # thread nor send the FIN, so the peer behind the relay would wait on its socket
            # forever and keep the test process from exiting.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class StallingProxy(_Relay):
    """A TCP relay to `target_port` that, on its first `stall_connections` connections, stops
    relaying after `stall_after` bytes from the client while keeping the socket open: a PACS
    that hangs mid-transfer."""

    def __init__(self, target_port: int, stall_after: int, stall_connections: int = 1) -> None:
        self.stall_after = stall_after
        self.stall_connections = stall_connections
        self.connections = 0
        self._count = threading.Lock()
        super().__init__(target_port)

    def _relay(self, client: socket.socket) -> None:
        with self._count:
            self.connections += 1
            stall = self.connections <= self.stall_connections
        _pipe(client, self._upstream(client), self.stall_after if stall else None)


class TlsRelay(_Relay):
    """An https front for a plain-http peer on loopback (Debian's Orthanc 1.10 with `SslEnabled`
    logs that it listens but accepts no connection, docs/peers.md): TLS with `cert`/`key` on
    `port`, relayed to `target_port`."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        super().__init__(target_port)

    def _relay(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()  # a client that refused our certificate
            return
        _pipe(client, self._upstream(client))
