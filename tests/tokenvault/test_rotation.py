"""RotateKeys: entries move to new data keys (under a rotated key-broker key version) in the background,
with progress, while every token stays detokenizable and keeps its value; a rotation whose process dies is
taken over by another process and completes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc
from tests.conftest import identity, spiffe
from tests.tokenvault.conftest import SERVICES, TENANT, VaultEnv, create_field, detokenize, healthy, tokenize

COUNT = 240


async def test_rotation_moves_every_entry_without_a_window(env: VaultEnv) -> None:
    await create_field(env.alice, "ssn", pb.TokenProfile(ssn=pb.SsnProfile(method=pb.SHAPE_METHOD_FF1)),
                       subject_key_shredding=True)
    await create_field(env.alice, "name", pb.TokenProfile(random=pb.RandomProfile()))
    ssns = [f"{100 + i:03d}-{i % 90 + 10:02d}-{i:04d}" for i in range(COUNT)]
    items = [pb.TokenizeItem(field="ssn", value=v, subject_id=f"s{i % 7}") for i, v in enumerate(ssns)]
    reply = await env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=items))
    ssn_tokens = [r.token for r in reply.results]
    name_tokens = await tokenize(env.alice, *[("name", f"name {i}") for i in range(COUNT // 2)])
    old_keys = {r[0] for r in env.rows("SELECT id FROM tv_data_keys")}
    assert {r[0] for r in env.rows("SELECT key_version FROM tv_data_keys")} == {1}

    started = await env.alice.RotateKeys(pb.RotateKeysRequest(parent=TENANT, rotate_master_keys=True,
                                                              request_id="0b7e6e52-0000-4000-8000-000000000003"))
    rotation = started.rotation
    assert rotation.state in (pb.ROTATION_STATE_PENDING, pb.ROTATION_STATE_RUNNING)
    assert list(rotation.fields) == ["name", "ssn"] and rotation.rotate_master_keys
    retried = await env.alice.RotateKeys(pb.RotateKeysRequest(parent=TENANT, rotate_master_keys=True,
                                                              request_id="0b7e6e52-0000-4000-8000-000000000003"))
    assert retried.rotation.name == rotation.name  # the retry started nothing new

    checked = 0
    progress = []
    while True:  # detokenize throughout: there must be no moment a token fails
        sample = slice(checked % COUNT, checked % COUNT + 20)
        values = await detokenize(env.alice, *[("ssn", t) for t in ssn_tokens[sample]])
        assert values == ssns[sample]
        checked += 20
        current = (await env.alice.GetRotation(pb.GetRotationRequest(name=rotation.name))).rotation
        progress.append(current.entries_done)
        if current.state not in (pb.ROTATION_STATE_PENDING, pb.ROTATION_STATE_RUNNING):
            break
        await asyncio.sleep(0)
    assert current.state == pb.ROTATION_STATE_SUCCEEDED, current.error_reason
    assert current.entries_total == current.entries_done == COUNT + COUNT // 2
    assert progress == sorted(progress) and current.HasField("end_time")
    # Old data keys are gone, new ones are wrapped under the rotated master key version.
    rows = env.rows("SELECT id, key_version FROM tv_data_keys")
    assert not {r[0] for r in rows} & old_keys and {r[1] for r in rows} == {2}
    assert {r[0] for r in env.rows("SELECT secret_version FROM tv_fields")} == {2}
    assert await detokenize(env.alice, *[("ssn", t) for t in ssn_tokens]) == ssns
    assert await detokenize(env.alice, *[("name", t) for t in name_tokens]) == [f"name {i}"
                                                                                 for i in range(COUNT // 2)]
    assert await tokenize(env.alice, ("ssn", ssns[0])) == [ssn_tokens[0]]  # token keys never change
    listed = await env.alice.ListRotations(pb.ListRotationsRequest(parent=TENANT))
    assert [r.name for r in listed.rotations] == [rotation.name]
    cancelled = await env.alice.CancelRotation(pb.CancelRotationRequest(name=rotation.name))
    assert cancelled.rotation.state == pb.ROTATION_STATE_SUCCEEDED  # a finished rotation stays as it was
    operations = [op for _, op, _, _, _ in env.audit()]
    assert operations.count("RotateKeys") == 1 and operations.count("RotationFinished") == 1


async def test_rotation_of_unknown_fields_and_unknown_rotations(env: VaultEnv) -> None:
    await create_field(env.alice, "name", pb.TokenProfile(random=pb.RandomProfile()))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.alice.RotateKeys(pb.RotateKeysRequest(parent=TENANT, fields=["name", "nope"]))
    details = read_error(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND and details.metadata["indices"] == "1"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.alice.GetRotation(pb.GetRotationRequest(name=f"{TENANT}/rotations/0123abc"))
    assert read_error(caught.value).reason == "ROTATION_NOT_FOUND"
    assert env.count("tv_rotations") == 0


async def test_a_rotation_whose_process_is_killed_is_resumed_by_another(start_vault: Callable[..., Any],
                                                                        vault_processes: Callable[..., Any],
                                                                        database: str, pki: DevPki) -> None:
    env: VaultEnv = await start_vault(database, purge_interval_seconds=0.2, rotation_lease_seconds=1)
    await create_field(env.alice, "name", pb.TokenProfile(random=pb.RandomProfile()))
    await create_field(env.alice, "ssn", pb.TokenProfile(ssn=pb.SsnProfile(method=pb.SHAPE_METHOD_FF1)),
                       subject_key_shredding=True)
    names = [f"name {i}" for i in range(300)]
    name_tokens = await tokenize(env.alice, *[("name", n) for n in names])
    ssns = [f"{200 + i:03d}-45-{i:04d}" for i in range(40)]
    ssn_tokens = await tokenize(env.alice, *[pb.TokenizeItem(field="ssn", value=v, subject_id=f"s{i % 4}")
                                             for i, v in enumerate(ssns)])
    targets: list[str] = []
    [process] = vault_processes(env.broker.port, database, 1, targets, rotation_batch_size=4,
                                rotation_lease_seconds=1)
    await healthy(targets[0], pki)
    async with secure_channel(targets[0], identity(pki, "alice"), SERVICES, peer=spiffe("server")) as channel:
        rotation = (await tokenvault_pb2_grpc.TokenVaultStub(channel).RotateKeys(
            pb.RotateKeysRequest(parent=TENANT))).rotation
    deadline = time.monotonic() + 30
    while not env.rows("SELECT 1 FROM tv_rotations WHERE entries_done > 0"):  # it is moving entries
        assert time.monotonic() < deadline and process.poll() is None
        await asyncio.sleep(0.005)
    os.kill(process.pid, signal.SIGSTOP)
    [(state, done, total)] = env.rows("SELECT state, entries_done, entries_total FROM tv_rotations")
    assert state == "RUNNING" and 0 < done < total == len(names) + len(ssns)  # stopped half-way
    process.kill()
    process.wait()

    while True:  # the vault left takes the rotation over once the dead process's lease has expired
        current = (await env.alice.GetRotation(pb.GetRotationRequest(name=rotation.name))).rotation
        if current.state not in (pb.ROTATION_STATE_PENDING, pb.ROTATION_STATE_RUNNING):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert current.state == pb.ROTATION_STATE_SUCCEEDED, current.error_reason
    assert current.entries_done == current.entries_total == total
    assert [op for _, op, _, _, _ in env.audit()].count("RotationResumed") == 1
    assert env.rows("SELECT COUNT(*) FROM tv_data_keys WHERE rotation_id IS NOT NULL")[0][0] == 0  # old keys gone
    assert await detokenize(env.alice, *[("name", t) for t in name_tokens]) == names
    assert await detokenize(env.alice, *[("ssn", t) for t in ssn_tokens]) == ssns
