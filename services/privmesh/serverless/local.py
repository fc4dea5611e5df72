"""A handler run locally for real, as Lambda runs it: the AWS Lambda Runtime Interface Emulator
(aws-lambda-rie, installed by scripts/dev/lambda-rie.sh) driving awslambdaric in a process of its own, bound
to loopback only (the emulator binds every interface unless told otherwise). Tests, the benchmark and the
guide's local try-out use it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from privmesh.runtime.ports import free_loopback_port

INVOCATIONS = "/2015-03-31/functions/function/invocations"


class Emulator:
    """One Lambda execution environment: initialized on its first invocation (the cold start), warm after."""

    def __init__(self, rie: Path, handler: str, env: Mapping[str, str], log: Path, cwd: Path | None = None,
                 start_timeout: float = 20) -> None:
        self.port, api = free_loopback_port(), free_loopback_port()
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [str(rie), "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
             "--runtime-api-address", f"127.0.0.1:{api}", sys.executable, "-m", "awslambdaric", handler],
            env={"PATH": os.environ.get("PATH", ""), **env},  # only what the function is given, as on Lambda
            stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd)
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("aws-lambda-rie did not start")

    def invoke(self, event: Any, timeout: float = 60) -> Any:
        """The handler's return value for `event`, as the Lambda Invoke API gives it."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{INVOCATIONS}",
                                         data=json.dumps(event).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - loopback, fixed scheme
            return json.loads(reply.read())

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
