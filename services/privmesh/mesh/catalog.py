"""The implemented services, and what the local mesh needs to know to run each one.

A service appears here only once it is real: nothing that answers UNIMPLEMENTED is ever started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # process, audit chain and SPIFFE service-account name
    module: str  # run as `python -m <module>`
    grpc_service: str  # the full name its health status is reported under
    local_settings: Callable[[Path], dict[str, Any]]  # the `service:` section for a local state directory
    client_methods: tuple[str, ...] = ()  # what the demo client may call (authorization policy globs)
    peer_methods: dict[str, tuple[str, ...]] = field(default_factory=dict)  # other service -> methods it may call


CATALOG: tuple[ServiceSpec, ...] = ()
