"""The `privmesh` command as a user runs it: real processes, real mTLS, SIGTERM to stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from privmesh.runtime.ports import free_loopback_port

PRIVMESH = [sys.executable, "-m", "privmesh.cli.main"]


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PRIVMESH, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def test_demo_runs_the_scenario_and_passes(tmp_path: Path) -> None:
    result = run("demo", cwd=tmp_path, timeout=420)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert [line.split(".")[0] for line in out.splitlines() if line[:2] in {f"{n}." for n in range(1, 7)}] == \
        ["1", "2", "3", "4", "5", "6"]
    assert out.count("   passed") == 6 and "FAILED" not in out
    # What each step must have shown, not only that it ended: the checks a reader of the scenario expects.
    assert "patients_tokenized.csv" in out or "tokenized" in out
    assert "BUDGET_EXCEEDED" in out and "ledger unchanged" in out
    assert "SecAgg+" in out and "stored encrypted under key-broker key" in out
    assert "decrypted risk" in out and "secret key stays here" in out
    assert "NONCE_REPLAYED" in out and "ATTESTATION_REQUIRED" in out
    assert "fl-coordinator:" in out and "intact" in out and "tampered copy refused" in out
    assert "verified offline: in the tree of" in out and "cosigned by" in out
    assert "refused by witness" in out and "BROKEN: fork" in out
    assert "demo passed" in out


def test_up_status_evidence_and_clean_stop(tmp_path: Path) -> None:
    up = subprocess.Popen([*PRIVMESH, "up", "--state-dir", "mesh"], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        mesh_file = tmp_path / "mesh" / "mesh.json"
        deadline = time.monotonic() + 120
        while True:
            status = run("status", "--state-dir", "mesh", cwd=tmp_path)
            if status.returncode == 0:
                break
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.5)
        assert "attestation-verifier" in status.stdout and "SERVING" in status.stdout
        pids = [e["pid"] for e in json.loads(mesh_file.read_text())["endpoints"]]
        exported = run("evidence", "export", "--state-dir", "mesh", "-o", "bundle.json", cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
        unpinned = run("evidence", "verify", "bundle.json", cwd=tmp_path)
        assert unpinned.returncode == 2 and "no pinned audit keys" in unpinned.stderr
        verified = run("evidence", "verify", "bundle.json", "--ca", "mesh/pki/ca.crt", cwd=tmp_path)
        assert verified.returncode == 0 and "ok" in verified.stdout
        partial = run("evidence", "verify", "bundle.json", "--ca", "mesh/pki/ca.crt", "--expect", "no-such-service",
                      cwd=tmp_path)
        assert partial.returncode == 1 and "missing from the bundle" in partial.stdout
        bundle = json.loads((tmp_path / "bundle.json").read_text())
        _receipt_verifies_against_the_mesh_ca(tmp_path)
        head = bundle["services"][0]["head"]
        head["sequence"] = str(int(head.get("sequence", 0)) + 1)  # claims an entry the signature never covered
        (tmp_path / "forged.json").write_text(json.dumps(bundle))
        forged = run("evidence", "verify", "forged.json", "--ca", "mesh/pki/ca.crt", cwd=tmp_path)
        assert forged.returncode == 1 and "BROKEN" in forged.stdout
        _console_reads_the_mesh(tmp_path)
    finally:
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=60)[0]
    assert up.returncode == 0, output
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert not mesh_file.exists()
    log = (tmp_path / "mesh" / "logs" / "attestation-verifier.log").read_text()
    assert '"message": "draining"' in log


def _receipt_verifies_against_the_mesh_ca(tmp_path: Path) -> None:
    """A refused call leaves the demo client an audit entry; its receipt verifies under the mesh CA alone."""
    import asyncio

    import grpc

    from privmesh.mesh.local import MeshLayout
    from privmesh.runtime.client import secure_channel

    layout = MeshLayout(tmp_path / "mesh")
    [(target, peer)] = [(e.target, e.spiffe_id) for e in layout.endpoints() if e.service == "attestation-verifier"]

    async def refused_call() -> grpc.StatusCode:
        async with secure_channel(target, layout.identity("demo-client"), timeout_seconds=30, peer=peer) as channel:
            try:
                await channel.unary_unary("/privmesh.attestation.v1.AttestationVerifier/DeletePolicy")(b"")
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert asyncio.run(refused_call()) == grpc.StatusCode.PERMISSION_DENIED
    fetched = run("evidence", "receipt", "--state-dir", "mesh", "attestation-verifier", "-o", "receipt.json",
                  cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    unpinned = run("evidence", "verify-receipt", "receipt.json", cwd=tmp_path)
    assert unpinned.returncode == 2 and "no pinned audit keys" in unpinned.stderr
    verified = run("evidence", "verify-receipt", "receipt.json", "--ca", "mesh/pki/ca.crt", "--min-witnesses", "2",
                   cwd=tmp_path)
    assert verified.returncode == 0 and "cosigned by" in verified.stdout, verified.stdout + verified.stderr
    short = run("evidence", "verify-receipt", "receipt.json", "--ca", "mesh/pki/ca.crt", "--min-witnesses", "99",
                cwd=tmp_path)
    assert short.returncode == 1 and "99 required" in short.stdout


def _console_reads_the_mesh(tmp_path: Path) -> None:
    """`privmesh console` on a running mesh: every section readable as the auditor, every log verified."""
    import urllib.request

    port = free_loopback_port()
    console = subprocess.Popen([*PRIVMESH, "console", "--state-dir", "mesh", "--port", str(port)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "300"})
    try:
        assert console.stdout is not None
        token = console.stdout.readline().strip().rsplit("token=", 1)[1]
        deadline = time.monotonic() + 30

        def get(path: str) -> dict:  # type: ignore[type-arg]
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=60) as reply:
                return json.loads(reply.read())

        while True:
            try:
                overview = get("/api/overview")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        assert len(overview["services"]) == 6 and all(s["ok"] for s in overview["services"]), overview
        from privmesh.console.inventory import PAGES, SOURCES

        sections = [s for page in PAGES for s in get(f"/api/state/{page}")["sections"]]
        assert len(sections) == len(SOURCES) + 1 and not [s for s in sections if s["error"]], sections  # + budgets
    finally:
        console.terminate()
        console.wait(timeout=30)


def test_pki_init_and_reissue(tmp_path: Path) -> None:
    assert run("pki", "init", "--dir", "pki", cwd=tmp_path).returncode == 0
    first = (tmp_path / "pki" / "admin.crt").read_bytes()
    again = run("pki", "init", "--dir", "pki", cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert run("pki", "issue", "admin", "--dir", "pki", "--hours", "1", cwd=tmp_path).returncode == 0
    assert (tmp_path / "pki" / "admin.crt").read_bytes() != first
