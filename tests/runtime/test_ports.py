"""Ports for locally started processes come from below the kernel's ephemeral range, where no outgoing
connection can take them between the pick and the bind, and are free when handed out."""

from __future__ import annotations

import socket
from pathlib import Path

from privmesh.runtime.ports import free_loopback_port


def test_ports_are_free_and_below_the_ephemeral_range() -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_loopback_port() for _ in range(50)}
    assert len(ports) > 40  # drawn at random, not one fixed port
    for port in ports:
        assert 10_000 <= port < start
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))

