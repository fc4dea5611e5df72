"""Per-call context set by the server interceptor: who is calling which method.

Context variables follow the asyncio task that serves the call, so domain code (audit, resource checks)
reads them without threading them through every signature.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc

SYSTEM_PRINCIPAL = "system"

# The context every servicer method receives. Request and response types are left open: the generated
# servicer base classes (grpc_python_out writes no .pyi) do not type them per method.
CallContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

current_principal: ContextVar[str] = ContextVar("privmesh_principal", default=SYSTEM_PRINCIPAL)
current_method: ContextVar[str] = ContextVar("privmesh_method", default="")
# Set once the serving code audited a refusal itself, so the interceptor does not audit it a second time.
refusal_audited: ContextVar[bool] = ContextVar("privmesh_refusal_audited", default=False)
