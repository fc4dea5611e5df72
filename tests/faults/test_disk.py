"""A full disk or a read-only state directory: writes fail with UNAVAILABLE (AUDIT_UNAVAILABLE or
STORAGE_UNAVAILABLE), nothing is half-written, reads keep working, and once the disk has room again the
service continues with its audit chain intact. The state lives on a small tmpfs or a bind mount made for
the test (root only, as in CI; elsewhere the test says why it cannot run). The kernel refuses a read-only
remount while the service holds its files open for writing, so the read-only case stops the service,
remounts its state read-only and restarts it: the start fails closed (every start migrates in a write
transaction), and nothing changes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from privmesh.attestation import server as attestation_server
from privmesh.attestation.v1 import attestation_pb2 as pb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle
from privmesh.runtime.audit.chain import key_id
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.runtime.db import StorageUnavailable
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe

SERVICE = "privmesh.attestation.v1.AttestationVerifier"
RULES = [{"name": "admin", "principals": [spiffe("alice")],
          "methods": [f"{SERVICE}/*", "privmesh.common.v1.AuditLog/*"]}]
REFUSED = {"AUDIT_UNAVAILABLE", "STORAGE_UNAVAILABLE"}


def _mount(*args: str) -> None:
    """Runs mount(8). A failure is a failure as root or under CI; only a non-root developer run skips, saying why."""
    done = subprocess.run(["mount", *args], capture_output=True)
    if done.returncode != 0:
        why = f"cannot mount {args} (uid {os.geteuid()}): {done.stderr.decode().strip()}"
        if os.geteuid() == 0 or os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state"
    mount.mkdir()
    _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def bound_dir(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the directory, a bind mount of it that the test may remount read-only)."""
    real, mount = tmp_path / "real-state", tmp_path / "state"
    real.mkdir()
    mount.mkdir()
    _mount("--bind", str(real), str(mount))
    try:
        yield real, mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,bind,{mode}", str(mount)], check=True, capture_output=True)


def _policy(name: str, byte: int) -> pb.Policy:
    return pb.Policy(name=name, allowed_pcr_sets=[pb.PcrSet(pcrs={0: bytes([byte]) * 48})])


async def _refused(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    details = read_error(err.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE, details
    return str(details.reason)


def _config(state: Path, tmp_path: Path, pki: DevPki) -> Path:
    settings = {"database": f"sqlite:///{state / 'attestation.db'}",
                "token_signing_key_file": str(tmp_path / "token-key.pem")}
    return server_config(tmp_path, pki, RULES, settings, audit_database=f"sqlite:///{state / 'audit.db'}")


async def test_a_full_disk_refuses_writes_with_unavailable_and_keeps_state(
        small_disk: Path, tmp_path: Path, pki: DevPki, start_server) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(attestation_server.DEFINITION, _config(small_disk, tmp_path, pki))
    target = f"127.0.0.1:{server.port}"
    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as channel:
        stub = attestation_pb2_grpc.AttestationVerifierStub(channel)
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("kept", 1)))
        before = await stub.ListPolicies(pb.ListPoliciesRequest())

        filler = small_disk / "filler"
        with filler.open("wb") as out:  # the disk fills up
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        reasons = {await _refused(stub.PutPolicy(pb.PutPolicyRequest(policy=_policy(f"new-{i}", 2))))
                   for i in range(3)}
        assert reasons <= REFUSED, reasons
        assert await _refused(stub.DeletePolicy(pb.DeletePolicyRequest(name="kept"))) in REFUSED
        assert await stub.ListPolicies(pb.ListPoliciesRequest()) == before  # reads still work; nothing changed
        filler.unlink()
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("after-full", 3)))

        names = [p.name for p in (await stub.ListPolicies(pb.ListPoliciesRequest())).policies]
        assert names == ["after-full", "kept"]
    bundle = await export_bundle({"attestation-verifier": (target, spiffe("server"))}, identity(pki, "alice"))
    verdicts = verify_bundle(bundle, Trust(keys={"attestation-verifier": key_id(server.audit.public_key)}))
    assert [v.ok for v in verdicts] == [True] and verdicts[0].entries == 2, verdicts  # the two policies put


async def test_a_read_only_state_dir_fails_closed_with_unavailable_and_keeps_state(
        bound_dir: tuple[Path, Path], tmp_path: Path, pki: DevPki, start_server) -> None:  # type: ignore[no-untyped-def]
    real, state = bound_dir
    config = _config(state, tmp_path, pki)
    server = await start_server(attestation_server.DEFINITION, config)
    target = f"127.0.0.1:{server.port}"
    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as channel:
        await attestation_pb2_grpc.AttestationVerifierStub(channel).PutPolicy(
            pb.PutPolicyRequest(policy=_policy("kept", 1)))
    await server.stop(grace=0)
    files = {p.name: p.read_bytes() for p in real.iterdir()}
    _remount(state, "ro")

    with pytest.raises(StorageUnavailable) as refused:  # its migrations need a write transaction: no start
        await start_server(attestation_server.DEFINITION, config)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE and refused.value.reason == "STORAGE_UNAVAILABLE"
    assert {p.name: p.read_bytes() for p in real.iterdir()} == files  # nothing written, not even half

    _remount(state, "rw")
    server = await start_server(attestation_server.DEFINITION, config)
    target = f"127.0.0.1:{server.port}"
    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as channel:
        stub = attestation_pb2_grpc.AttestationVerifierStub(channel)
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("after-read-only", 3)))
        names = [p.name for p in (await stub.ListPolicies(pb.ListPoliciesRequest())).policies]
        assert names == ["after-read-only", "kept"]
    bundle = await export_bundle({"attestation-verifier": (target, spiffe("server"))}, identity(pki, "alice"))
    verdicts = verify_bundle(bundle, Trust(keys={"attestation-verifier": key_id(server.audit.public_key)}))
    assert [v.ok for v in verdicts] == [True] and verdicts[0].entries == 2, verdicts
