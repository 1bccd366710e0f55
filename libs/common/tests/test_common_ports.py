"""free_port: outside the ephemeral range, bindable, never the same twice in a process."""

from __future__ import annotations

import socket

from cinebridge_common.embedded import FREE_PORT_RANGE, free_port


def test_free_ports_are_distinct_bindable_and_not_ephemeral() -> None:
    low, _high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert low > 21000, "this machine's ephemeral range leaves no room below it"
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for port in ports:
        assert FREE_PORT_RANGE[0] <= port <= FREE_PORT_RANGE[1] < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
