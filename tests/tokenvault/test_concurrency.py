"""Concurrent writers: the same deterministic value tokenized at once by many callers gives one token and one
entry, and several server PROCESSES writing to one database lose and duplicate nothing, on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from privmesh.tokenvault.store import MIGRATIONS
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc
from tests.conftest import identity, spiffe
from tests.tokenvault.conftest import SERVICES, TENANT, VaultEnv, create_field, detokenize, healthy, tokenize

PROCESSES = 3
DETERMINISTIC = pb.TokenProfile(ssn=pb.SsnProfile(method=pb.SHAPE_METHOD_DETERMINISTIC))

async def test_same_value_tokenized_concurrently_gives_one_token(start_vault: Callable[..., Any],
                                                                 database: str) -> None:
    env: VaultEnv = await start_vault(database)
    await create_field(env.alice, "ssn", DETERMINISTIC)  # drawn once per value: settled in the transaction
    values = ["123-45-6789", "987-65-4321"]
    results = await asyncio.gather(*(tokenize(env.alice if n % 2 else env.bob, ("ssn", values[n % 2]),
                                              ("ssn", values[(n + 1) % 2])) for n in range(12)))
    tokens = {(values[n % 2], r[0]) for n, r in enumerate(results)} | {(values[(n + 1) % 2], r[1])
                                                                        for n, r in enumerate(results)}
    assert len(tokens) == 2 and env.count() == 2
    assert await detokenize(env.alice, *[("ssn", t) for _, t in sorted(tokens)]) == sorted(values)


@pytest.mark.slow
async def test_several_server_processes_lose_and_duplicate_nothing(start_vault: Callable[..., Any], database: str,
                                                                   vault_processes: Callable[..., Any],
                                                                   pki: DevPki) -> None:
    env: VaultEnv = await start_vault(database)
    await create_field(env.alice, "ssn", DETERMINISTIC)
    await create_field(env.alice, "name", pb.TokenProfile(random=pb.RandomProfile()))
    targets: list[str] = []
    vault_processes(env.broker.port, database, PROCESSES, targets)
    for target in targets:
        await healthy(target, pki)
    shared = [f"{100 + i:03d}-00-{i:04d}" for i in range(40)]  # every process tokenizes these
    rounds = 6

    async def writer(n: int, target: str) -> list[list[str]]:
        async with secure_channel(target, identity(pki, "alice"), SERVICES, peer=spiffe("server")) as channel:
            stub = tokenvault_pb2_grpc.TokenVaultStub(channel)
            out = []
            for r in range(rounds):
                items = [pb.TokenizeItem(field="ssn", value=v) for v in shared]
                items += [pb.TokenizeItem(field="name", value=f"p{n}-r{r}-{i}") for i in range(25)]
                reply = await stub.Tokenize(pb.TokenizeRequest(parent=TENANT, items=items), timeout=60)
                out.append([x.token for x in reply.results])
            return out

    results = await asyncio.gather(*(writer(n, t) for n, t in enumerate(targets)))
    ssn_tokens = {tuple(batch[:len(shared)]) for per_process in results for batch in per_process}
    assert len(ssn_tokens) == 1  # one token per value across every process and round
    name_tokens = [t for per_process in results for batch in per_process for t in batch[len(shared):]]
    assert len(set(name_tokens)) == PROCESSES * rounds * 25
    assert env.count() == len(shared) + PROCESSES * rounds * 25  # nothing lost, nothing duplicated
    expected = [f"p{n}-r{r}-{i}" for n in range(PROCESSES) for r in range(rounds) for i in range(25)]
    found = await detokenize(env.alice, *[("name", t) for t in name_tokens[:900]])
    assert found == expected[:900]


async def test_bad_batch_on_postgres_writes_nothing(start_vault: Callable[..., Any], postgres_db: str) -> None:
    env: VaultEnv = await start_vault(postgres_db)
    await create_field(env.alice, "ssn", pb.TokenProfile(ssn=pb.SsnProfile(method=pb.SHAPE_METHOD_FF1)))
    [token] = await tokenize(env.alice, ("ssn", "123-45-6789"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tokenize(env.alice, ("ssn", "111-22-3333"), ("ssn", "bad"))
    details = read_error(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in details.violations] == [("items[1].value", "VALUE_SHAPE_MISMATCH")]
    assert env.count() == 1
    assert await detokenize(env.alice, ("ssn", token)) == ["123-45-6789"]
    assert env.rows("SELECT version FROM tv_schema")[0][0] == len(MIGRATIONS)


async def test_forget_subject_on_postgres(start_vault: Callable[..., Any], postgres_db: str) -> None:
    """The subject index is partial (entries with a subject only): erasure still finds them on PostgreSQL."""
    env: VaultEnv = await start_vault(postgres_db)
    await create_field(env.alice, "name", pb.TokenProfile(random=pb.RandomProfile()))
    _, kept = await tokenize(env.alice, pb.TokenizeItem(field="name", value="Ada", subject_id="patient-1"),
                             ("name", "Bea"))
    forgot = await env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT, subject_id="patient-1"))
    assert forgot.deleted_count == 1
    assert env.count() == 1
    assert await detokenize(env.alice, ("name", kept)) == ["Bea"]
