"""`python -m privmesh.fl.flare.server_main`: FLARE's server_train with one fix, binding the configured host.

FLARE 2.9 binds its FL/admin listener to the host of `service.target` only when that host is a loopback address;
any other host (the advertised DNS name or IP) makes it listen on every interface (`grpc://0:port`). The fix
treats every configured host as the bind host, so the server listens where fed_server.json says and nowhere else.
"""

from __future__ import annotations

import runpy

from nvflare.private.fed.server import fed_server


def _configured_host_is_bind_host(host: str) -> bool:
    return bool(host)


def main() -> None:
    fed_server._is_loopback_host = _configured_host_is_bind_host
    runpy.run_module("nvflare.private.fed.app.server.server_train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
