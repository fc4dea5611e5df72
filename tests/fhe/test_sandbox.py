"""The FHE worker's confinement, from inside a real worker: code that runs there (as code injected through a
malicious ciphertext would) cannot open the service's key file, create a socket or run a program, and the
worker still evaluates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from privmesh.fhe.worker import Worker, WorkerLimits
from privmesh.runtime.pki import DevPki
from tests.fhe.test_worker import LinearSession, linear  # noqa: F401 (a fixture)

pytestmark = pytest.mark.insecure_params

# Runs inside the worker while it unpickles a request: the attacker's code, using only what the worker has loaded.
_PROBE = '''
def probe(key_file, key_dir_file):
    import os, socket
    results = {}
    def attempt(name, action):
        try:
            action()
            results[name] = "allowed"
        except OSError as exc:
            results[name] = type(exc).__name__
    attempt("read_service_key", lambda: open(key_file, "rb").read())
    attempt("read_session_key", lambda: open(key_dir_file, "rb").read())
    attempt("write_session_dir", lambda: open(key_dir_file + ".new", "wb").close())
    attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
    attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
    attempt("exec", lambda: os.execv("/bin/true", ["/bin/true"]))
    results["environment"] = ",".join(sorted(os.environ))
    attempt("read_proc", lambda: os.listdir("/proc/self/fd"))
    return results
'''


class Injected:
    """Unpickles, in the worker, into the probe's findings (pickle calls eval on the worker's side)."""

    def __init__(self, key_file: str, session_file: str) -> None:
        self.args = (key_file, session_file)

    def __reduce__(self) -> tuple[Any, ...]:
        expression = (f"__import__('types').FunctionType(compile({_PROBE!r}, '<probe>', 'exec').co_consts[0], "
                      f"{{'__builtins__': __builtins__}})(*{self.args!r})")
        return eval, (expression,)


@pytest.fixture
async def confined(tmp_path: Path) -> AsyncIterator[Worker]:
    worker = Worker("test", limits=WorkerLimits(key_dir=str(tmp_path)))
    await worker.start()
    yield worker
    await worker.close()


async def test_code_in_a_worker_cannot_read_secrets_open_sockets_or_run_programs(
        confined: Worker, linear: LinearSession, pki: DevPki, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    service_key = pki.bundle("server").key_file  # the TLS private key of the service that runs the worker
    session_file = linear.parts["public_key"]
    await confined.call("__setattr__", "findings", Injected(str(service_key), session_file))
    findings = await confined.call("__getattribute__", "findings")
    assert findings["read_service_key"] == "PermissionError"
    assert findings["read_session_key"] == "allowed"  # what it is there for
    assert findings["write_session_dir"] == "PermissionError"
    assert findings["socket"] == findings["unix_socket"] == "PermissionError"
    assert findings["exec"] == "PermissionError"
    assert findings["environment"] == "" and findings["read_proc"] == "PermissionError"
    # And it still evaluates, in the same confined process.
    reply = await confined.call(*linear.request(linear.encrypt(0.25))[0:])
    linear.assert_scores(reply, 0.25)
