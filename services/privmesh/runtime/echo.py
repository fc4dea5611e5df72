"""A domain-free service (raw bytes, no contract) that exercises every runtime layer: the runtime's tests
and its benchmark run it. Each call is audited; Put writes a row only after its audit entry committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc
from pydantic import BaseModel, ConfigDict

from privmesh.runtime.access import Declaration
from privmesh.runtime.context import CallContext
from privmesh.runtime.db import Database
from privmesh.runtime.errors import InvalidArgument
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition

SERVICE = "privmesh.testing.v1.Echo"


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    database: str = "sqlite:///echo.db"
    audit_every_call: bool = True


class Echo:
    def __init__(self, runtime: Runtime, settings: EchoSettings) -> None:
        self._audit = runtime.audit
        self._authorizer = runtime.authorizer
        self._every = settings.audit_every_call
        self.db = Database(settings.database)
        with self.db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, value TEXT NOT NULL)")

    async def echo(self, request: bytes, context: CallContext) -> bytes:
        if self._every:
            await self._audit.append("Echo", details={"bytes": str(len(request))})
        return request

    async def put(self, request: bytes, context: CallContext) -> bytes:
        name, _, value = request.decode("utf-8", "replace").partition("=")
        if not name or not value:
            raise InvalidArgument.single("value" if name else "name", "must not be empty")
        self._authorizer.require(f"items/{name}")
        await self._audit.append("Put", resource=f"items/{name}")
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO items (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = ?",
                        (name, value, value))
        return b"ok"

    async def fail(self, request: bytes, context: CallContext) -> bytes:
        raise RuntimeError("secret-bearing detail that must never reach the caller")


def _handler(behavior: Callable[[bytes, CallContext], Awaitable[bytes]]) -> grpc.RpcMethodHandler[bytes, bytes]:
    return grpc.unary_unary_rpc_method_handler(behavior)  # raw bytes in and out


async def build(runtime: Runtime, settings: EchoSettings) -> Sequence[Registration]:
    echo = Echo(runtime, settings)
    runtime.on_close.append(echo.db.close)
    handlers = {"Echo": _handler(echo.echo), "Put": _handler(echo.put), "Fail": _handler(echo.fail)}
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    declarations = {f"{SERVICE}/Echo": Declaration.without_contract(f"{SERVICE}/Echo"),
                    f"{SERVICE}/Fail": Declaration.without_contract(f"{SERVICE}/Fail"),
                    f"{SERVICE}/Put": Declaration.without_contract(f"{SERVICE}/Put", ("items/{name}",))}
    return [Registration(SERVICE, lambda server: server.add_generic_rpc_handlers((generic,)), declarations)]


DEFINITION = ServiceDefinition("echo", "echo.privmesh.dev", EchoSettings, build)
