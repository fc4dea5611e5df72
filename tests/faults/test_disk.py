"""A full disk: writes fail with UNAVAILABLE (AUDIT_UNAVAILABLE or STORAGE_UNAVAILABLE), nothing is
half-written, reads keep working, and once the disk has room again the service continues with its audit
chain intact. The state lives on a small tmpfs mounted for the test (root only, as in CI; elsewhere the
test says why it cannot run). A read-only remount is refused by the kernel while SQLite holds its files
open for writing, so a full disk is the storage failure tested here."""

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
from privmesh.runtime.audit.bundle import Trust, export_bundle, verify_bundle
from privmesh.runtime.audit.chain import key_id
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe

SERVICE = "privmesh.attestation.v1.AttestationVerifier"
RULES = [{"name": "admin", "principals": [spiffe("alice")],
          "methods": [f"{SERVICE}/*", "privmesh.common.v1.AuditLog/*"]}]
REFUSED = {"AUDIT_UNAVAILABLE", "STORAGE_UNAVAILABLE"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        why = f"cannot mount a tmpfs (uid {os.geteuid()}): {done.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _policy(name: str, byte: int) -> pb.Policy:
    return pb.Policy(name=name, allowed_pcr_sets=[pb.PcrSet(pcrs={0: bytes([byte]) * 48})])


async def _refused(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    details = read_error(err.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE, details
    return str(details.reason)


async def test_a_full_disk_refuses_writes_with_unavailable_and_keeps_state(
        small_disk: Path, tmp_path: Path, pki: DevPki, start_server) -> None:  # type: ignore[no-untyped-def]
    settings = {"database": f"sqlite:///{small_disk / 'attestation.db'}",
                "token_signing_key_file": str(tmp_path / "token-key.pem")}
    config = server_config(tmp_path, pki, RULES, settings, audit_database=f"sqlite:///{small_disk / 'audit.db'}")
    server = await start_server(attestation_server.DEFINITION, config)
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
