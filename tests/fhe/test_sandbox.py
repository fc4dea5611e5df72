"""The FHE worker's confinement, from inside a real worker: code that runs there (as code injected through a
malicious ciphertext would) cannot open the service's key file or any new file, create a socket or run a
program; it runs as another user than the server (the tests run as root); a call outside the seccomp allow-list
kills it; and the worker still evaluates, reading the key files the server passes as descriptors."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from privmesh.fhe.worker import MAX_HANDOVERS, Worker, WorkerCrashed, WorkerLimits
from privmesh.runtime.pki import DevPki
from tests.fhe.test_worker import LinearSession, linear  # noqa: F401 (a fixture)

pytestmark = pytest.mark.insecure_params

# Runs inside the worker while it unpickles a request: the attacker's code, using only what the worker has loaded.
_PROBE = '''
def probe(key_file, session_file):
    import os, socket
    results = {}
    def attempt(name, action):
        try:
            action()
            results[name] = "allowed"
        except OSError as exc:
            results[name] = type(exc).__name__
    attempt("read_service_key", lambda: open(key_file, "rb").read())
    attempt("read_session_key_by_path", lambda: open(session_file, "rb").read())
    attempt("read_other_file", lambda: open("/etc/hostname", "rb").read())
    attempt("write_new_file", lambda: open(session_file + ".new", "wb").close())
    attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
    attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
    attempt("socketpair", lambda: socket.socketpair())
    attempt("exec", lambda: os.execv("/bin/true", ["/bin/true"]))
    attempt("kill_parent", lambda: os.kill(os.getppid(), 0))
    attempt("fork", lambda: os.fork())
    results["environment"] = ",".join(sorted(os.environ))
    attempt("read_proc", lambda: os.listdir("/proc/self/fd"))
    results["ids"] = (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), tuple(os.getgroups()))
    return results
'''

_OUTSIDE_THE_LIST = '''
def probe():
    import os
    return os.getsid(0)  # getsid is on neither list: the kernel kills the process
'''


class Injected:
    """Unpickles, in the worker, into what the probe returns (pickle calls eval on the worker's side)."""

    def __init__(self, source: str, *args: str) -> None:
        self.source = source
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        expression = (f"__import__('types').FunctionType(compile({self.source!r}, '<probe>', 'exec').co_consts[0], "
                      f"{{'__builtins__': __builtins__}})(*{self.args!r})")
        return eval, (expression,)


@pytest.fixture
async def confined() -> AsyncIterator[Worker]:
    worker = Worker("test")
    await worker.start()
    yield worker
    await worker.close()


async def test_code_in_a_worker_cannot_read_secrets_open_files_or_sockets_or_run_programs(
        confined: Worker, linear: LinearSession, pki: DevPki) -> None:  # noqa: F811
    service_key = pki.bundle("server").key_file  # the TLS private key of the service that runs the worker
    assert service_key.stat().st_mode & 0o077 == 0 and service_key.stat().st_uid == os.geteuid() == 0
    session_file = linear.parts["public_key"]
    await confined.call("__setattr__", "findings", Injected(_PROBE, str(service_key), session_file))
    findings = await confined.call("__getattribute__", "findings")
    for attempt in ("read_service_key", "read_session_key_by_path", "read_other_file", "write_new_file", "socket",
                    "unix_socket", "socketpair", "exec", "kill_parent", "fork", "read_proc"):
        assert findings[attempt] == "PermissionError", attempt
    assert findings["environment"] == ""
    # Another user than the server's (root here), no supplementary group: the key file, 0600 root, is not its.
    assert findings["ids"] == (65534, 65534, 65534, 65534, ())
    # And it still evaluates, in the same confined process, from the descriptors the server passes.
    reply = await confined.call(*linear.request(linear.encrypt(0.25)))
    linear.assert_scores(reply, 0.25)


async def test_the_sandbox_user_is_configurable(linear: LinearSession) -> None:  # noqa: F811
    worker = Worker("test", limits=WorkerLimits(uid=4242, gid=4343))
    await worker.start()
    try:
        await worker.call("__setattr__", "findings", Injected(_PROBE, "/nonexistent", linear.parts["public_key"]))
        assert (await worker.call("__getattribute__", "findings"))["ids"] == (4242, 4242, 4343, 4343, ())
        linear.assert_scores(await worker.call(*linear.request(linear.encrypt(0.5))), 0.5)
    finally:
        await worker.close()


async def test_a_call_outside_the_allow_list_kills_the_worker_and_a_fresh_one_takes_over(
        confined: Worker, linear: LinearSession, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    pid = confined.pid
    with pytest.raises(WorkerCrashed):
        await confined.call("__setattr__", "findings", Injected(_OUTSIDE_THE_LIST))
    assert f"exit code -{signal.SIGSYS}" in caplog.text  # killed by seccomp, not a Python error
    # It died unpickling the request, before starting it: like any such request, it is tried on MAX_HANDOVERS.
    assert confined.restarts == MAX_HANDOVERS and confined.pid != pid
    linear.assert_scores(await confined.call(*linear.request(linear.encrypt(0.75))), 0.75)
