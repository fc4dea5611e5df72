"""Free loopback ports for the processes a local mesh, a federation or an emulator starts.

A port the kernel hands out for bind(0) lies in its ephemeral range, which is also where every outgoing
connection takes its local port: on a busy machine one of them took such a port between the pick and the
service's own bind (`Address already in use`, 2 of 10 demo runs while tests ran beside it). A port below that
range can only be taken by another listener, so the pick is drawn at random from there and checked free."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000
_ATTEMPTS = 200


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux; elsewhere the IANA range's start)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_loopback_port() -> int:
    """A loopback TCP port that no one listens on now, outside the ephemeral range where possible."""
    start = _ephemeral_start()
    if start > _LOWEST:
        for _ in range(_ATTEMPTS):
            port = _LOWEST + secrets.randbelow(start - _LOWEST)
            if _bindable(port):
                return port
    with socket.socket() as sock:  # no room below the ephemeral range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
