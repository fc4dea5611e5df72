"""Per-call context set by the server interceptor: who is calling which method.

Context variables follow the asyncio task that serves the call, so domain code (audit, resource checks)
reads them without threading them through every signature.
"""

from __future__ import annotations

from contextvars import ContextVar

SYSTEM_PRINCIPAL = "system"

current_principal: ContextVar[str] = ContextVar("privmesh_principal", default=SYSTEM_PRINCIPAL)
current_method: ContextVar[str] = ContextVar("privmesh_method", default="")
# Set once the serving code audited a refusal itself, so the interceptor does not audit it a second time.
refusal_audited: ContextVar[bool] = ContextVar("privmesh_refusal_audited", default=False)
