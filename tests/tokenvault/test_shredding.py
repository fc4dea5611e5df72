"""Crypto-shredding through key-broker: in subject_key_shredding fields every subject's data keys are wrapped
under a key-broker key of its own (a subject KEK) that ForgetSubject destroys, so that a backup of the vault's
database taken BEFORE the erasure cannot give the subject's values back; ForgetSubject fails closed without
key-broker; concurrent first use of a subject ends with one KEK; data keys wrapped under the field key before
subject KEKs existed still decrypt, and a rotation moves them under a subject KEK."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.runtime.db import Database
from privmesh.runtime.errors import read_error
from privmesh.tokenvault import keyring
from privmesh.tokenvault.keybroker_source import SUBJECT_KEY_DESCRIPTION
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.vault import aad
from tests.tokenvault.conftest import KEY, TENANT, VaultEnv, create_field, detokenize, tokenize

SSN = pb.TokenProfile(ssn=pb.SsnProfile(method=pb.SHAPE_METHOD_FF1))
NAME = pb.TokenProfile(random=pb.RandomProfile())
RECORDS = [("ssn", "123-45-6789", "patient-1"), ("name", "Ada", "patient-1"),
           ("ssn", "987-65-4321", "patient-2"), ("name", "Bea", "patient-2")]


async def _tokenize_records(env: VaultEnv) -> list[str]:
    await create_field(env.alice, "ssn", SSN, subject_key_shredding=True)
    await create_field(env.alice, "name", NAME, subject_key_shredding=True)
    return await tokenize(env.alice, *[pb.TokenizeItem(field=f, value=v, subject_id=s) for f, v, s in RECORDS])


async def _refused(call: Any) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = read_error(caught.value)
    return details.code, details.reason


def _kek_of(env: VaultEnv, ssn_token: str) -> str:
    """The KEK name of the subject of an SSN token (FF1 tokens are stored)."""
    return str(env.rows("SELECT k.key_name FROM tv_subject_keks k JOIN tv_entries e ON e.tenant = k.tenant AND "
                        "e.field = k.field AND e.subject_hash = k.subject_hash WHERE e.token = ?", (ssn_token,))[0][0])


def _keks(env: VaultEnv) -> set[str]:
    return {str(r[0]) for r in env.rows("SELECT key_name FROM tv_subject_keks")}


async def test_a_backup_taken_before_forget_subject_cannot_give_the_subject_back(
        start_vault: Callable[..., Any], another_vault: Callable[..., Any], tmp_path: Path) -> None:
    env: VaultEnv = await start_vault(subject_key_deletion_waiting_seconds=0)
    tokens = await _tokenize_records(env)
    keks = _keks(env)
    assert len(keks) == 4  # one per (field, subject)
    assert {r[0] for r in env.rows("SELECT key_name FROM tv_data_keys WHERE subject_hash IS NOT NULL")} == keks
    for name in keks:  # the vault alone may use a subject KEK; nothing on it names the subject
        key = await env.vault_keys.get_key(name)
        assert key.state == kb.KEY_STATE_ENABLED and not key.alias and key.description == SUBJECT_KEY_DESCRIPTION
        code, _ = await _refused(env.keys.get_key(name))  # not even key-broker's administrator
        assert code == grpc.StatusCode.PERMISSION_DENIED
    backup = tmp_path / "backup.db"
    with sqlite3.connect(env.database.removeprefix("sqlite:///")) as source, sqlite3.connect(backup) as copy:
        source.backup(copy)

    forgot = await env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT, subject_id="patient-1"))
    assert forgot.deleted_count == 2 and forgot.subject_key_destroyed
    forgotten = keks - _keks(env)
    assert len(forgotten) == 2 and _kek_of(env, tokens[2]) in keks - forgotten
    # The broker's minimum waiting period is 0 here: the scheduled deletion is applied as it is scheduled
    # (a due deletion is also applied by the broker's sweeper and by any look-up of the key).
    for name in forgotten:
        assert (await env.vault_keys.get_key(name)).state == kb.KEY_STATE_DESTROYED

    restored = await another_vault(env, f"sqlite:///{backup}")
    code, reason = await _refused(detokenize(restored, ("ssn", tokens[0])))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_BROKER_REFUSED")
    code, reason = await _refused(detokenize(restored, ("name", tokens[1])))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_BROKER_REFUSED")
    # The backup still holds the rows; only the forgotten subject's keys are gone.
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT COUNT(*) FROM tv_entries").fetchone()[0] == 4
    assert await detokenize(restored, ("ssn", tokens[2]), ("name", tokens[3])) == ["987-65-4321", "Bea"]
    assert await detokenize(env.alice, ("ssn", tokens[2]), ("name", tokens[3])) == ["987-65-4321", "Bea"]


async def test_forget_subject_without_key_broker_deletes_nothing(start_vault: Callable[..., Any]) -> None:
    env: VaultEnv = await start_vault(subject_key_deletion_waiting_seconds=0, key_broker_timeout_seconds=2)
    tokens = await _tokenize_records(env)
    tables = ("tv_entries", "tv_data_keys", "tv_subject_keks")
    before = {table: env.rows(f"SELECT * FROM {table} ORDER BY 1") for table in tables}
    await env.broker.stop(grace=0)
    code, reason = await _refused(env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT,
                                                                                  subject_id="patient-1")))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "KEY_BROKER_UNAVAILABLE")
    assert {table: env.rows(f"SELECT * FROM {table} ORDER BY 1") for table in tables} == before
    assert len(before["tv_entries"]) == len(tokens) and len(before["tv_subject_keks"]) == 4


async def test_forget_subject_retried_after_its_kek_was_scheduled(start_vault: Callable[..., Any]) -> None:
    """A KEK already pending deletion (an attempt that stopped after shredding) counts as shredded; the subject
    may come back afterwards, under a new KEK."""
    env: VaultEnv = await start_vault(subject_key_deletion_waiting_seconds=3600)
    tokens = await _tokenize_records(env)
    kek, keks = _kek_of(env, tokens[0]), _keks(env)
    await env.vault_keys.stub.ScheduleKeyDeletion(kb.ScheduleKeyDeletionRequest(name=kek))
    forgot = await env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT, subject_id="patient-1"))
    # The keys are only scheduled: the answer says so, with their dates, and does not claim them destroyed.
    assert forgot.deleted_count == 2 and not forgot.subject_key_destroyed
    forgotten = keks - _keks(env)
    assert kek in forgotten and len(forgotten) == 2
    pending = [await env.vault_keys.get_key(name) for name in forgotten]
    assert [k.state for k in pending] == [kb.KEY_STATE_PENDING_DELETION] * 2
    assert sorted(d.field for d in forgot.subject_key_deletions) == ["name", "ssn"]
    assert sorted(d.deletion_time.ToSeconds() for d in forgot.subject_key_deletions) == \
        sorted(k.deletion_time.ToSeconds() for k in pending)
    assert all(d.deletion_time.ToSeconds() > forgot.forget_time.ToSeconds() + 3000
               for d in forgot.subject_key_deletions)
    code, _ = await _refused(detokenize(env.alice, ("ssn", tokens[0])))
    assert code == grpc.StatusCode.NOT_FOUND
    [again] = await tokenize(env.alice, pb.TokenizeItem(field="ssn", value="123-45-6789", subject_id="patient-1"))
    assert await detokenize(env.alice, ("ssn", again)) == ["123-45-6789"]
    assert len(env.rows("SELECT key_name FROM tv_subject_keks WHERE field = 'ssn'")) == 2
    assert _kek_of(env, again) not in keks


async def test_concurrent_first_use_of_a_subject_ends_with_one_kek(start_vault: Callable[..., Any],
                                                                   another_vault: Callable[..., Any],
                                                                   database: str) -> None:
    env: VaultEnv = await start_vault(database, subject_key_deletion_waiting_seconds=0)
    await create_field(env.alice, "ssn", SSN, subject_key_shredding=True)
    vaults = [env.alice] + [await another_vault(env, database, subject_key_deletion_waiting_seconds=0)
                            for _ in range(2)]
    values = [f"{100 + n:03d}-45-{n:04d}" for n in range(6)]
    results = await asyncio.gather(*(tokenize(vaults[n % 3], pb.TokenizeItem(field="ssn", value=value,
                                                                              subject_id="patient-7"))
                                     for n, value in enumerate(values)))
    [(kek,)] = env.rows("SELECT key_name FROM tv_subject_keks")
    assert {r[0] for r in env.rows("SELECT key_name FROM tv_data_keys")} == {kek}  # every data key under it
    assert await detokenize(env.alice, *[("ssn", t) for [t] in results]) == values
    listed = await env.vault_keys.stub.ListKeys(kb.ListKeysRequest(page_size=100, show_destroyed=True))
    created = [k for k in listed.keys if k.description == SUBJECT_KEY_DESCRIPTION]
    assert kek in {k.name for k in created} and len(created) > 1  # the first uses did race
    # The losers' keys protect nothing and are shredded.
    assert all(k.state == kb.KEY_STATE_DESTROYED for k in created if k.name != kek)
    assert (await env.vault_keys.get_key(kek)).state == kb.KEY_STATE_ENABLED


async def _make_legacy(env: VaultEnv, ssn_token: str) -> None:
    """Turns a subject's entry into what a vault before subject KEKs wrote: its data key under the field key."""
    [(entry_id, key_id, nonce, ciphertext, wrapped, kek)] = env.rows(
        "SELECT e.id, e.data_key_id, e.nonce, e.ciphertext, k.wrapped, k.key_name FROM tv_entries e JOIN "
        "tv_data_keys k ON k.id = e.data_key_id WHERE e.token = ?", (ssn_token,))
    context = keyring.context("acme", "ssn", "data")
    value = AESGCM(await env.vault_keys.decrypt(bytes(wrapped), context, kek)).decrypt(
        bytes(nonce), bytes(ciphertext), aad("acme", "ssn", entry_id))
    legacy = await env.vault_keys.generate_data_key(KEY, context)
    nonce = secrets.token_bytes(12)
    db = Database(env.database)
    try:
        with db.transaction() as cur:
            cur.execute("UPDATE tv_data_keys SET key_name = (SELECT secret_key FROM tv_fields WHERE field = 'ssn'), "
                        "wrapped = ? WHERE id = ?", (legacy.wrapped, key_id))
            cur.execute("UPDATE tv_entries SET nonce = ?, ciphertext = ? WHERE id = ?",
                        (nonce, AESGCM(legacy.plaintext).encrypt(nonce, value, aad("acme", "ssn", entry_id)), entry_id))
            cur.execute("DELETE FROM tv_subject_keks WHERE key_name = ?", (kek,))
    finally:
        db.close()


async def test_subjects_from_before_subject_keks_still_work_and_a_rotation_moves_them_under_one(
        start_vault: Callable[..., Any]) -> None:
    env: VaultEnv = await start_vault(subject_key_deletion_waiting_seconds=0)
    tokens = await _tokenize_records(env)
    for token in (tokens[0], tokens[2]):
        await _make_legacy(env, token)
    assert not env.rows("SELECT 1 FROM tv_subject_keks WHERE field = 'ssn'")
    # No Detokenize ran before: the plaintext data keys come from key-broker, through the legacy wraps.
    assert await detokenize(env.alice, ("ssn", tokens[0]), ("ssn", tokens[2])) == ["123-45-6789", "987-65-4321"]
    forgot = await env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT, subject_id="patient-1"))
    assert dict(forgot.deleted_by_field) == {"ssn": 1, "name": 1} and forgot.subject_key_destroyed
    rotation = (await env.alice.RotateKeys(pb.RotateKeysRequest(parent=TENANT, fields=["ssn"]))).rotation
    for _ in range(200):
        current = (await env.alice.GetRotation(pb.GetRotationRequest(name=rotation.name))).rotation
        if current.state == pb.ROTATION_STATE_SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    assert current.state == pb.ROTATION_STATE_SUCCEEDED and current.entries_done == 1
    [(kek,)] = env.rows("SELECT key_name FROM tv_subject_keks WHERE field = 'ssn'")  # patient-2's, new
    assert [r[0] for r in env.rows("SELECT key_name FROM tv_data_keys WHERE field = 'ssn'")] == [kek]
    assert await detokenize(env.alice, ("ssn", tokens[2])) == ["987-65-4321"]


async def test_delete_field_shreds_its_subject_keks(start_vault: Callable[..., Any], tmp_path: Path) -> None:
    """A deleted field's subject KEKs are destroyed too, so backups of its entries are shredded like a
    forgotten subject's; the other field's KEKs are untouched."""
    env: VaultEnv = await start_vault(subject_key_deletion_waiting_seconds=0)
    tokens = await _tokenize_records(env)
    ssn_keks = {str(r[0]) for r in env.rows("SELECT key_name FROM tv_subject_keks WHERE field = 'ssn'")}
    name_keks = _keks(env) - ssn_keks
    assert len(ssn_keks) == len(name_keks) == 2
    deleted = await env.alice.DeleteField(pb.DeleteFieldRequest(name=f"{TENANT}/fields/ssn", force=True))
    assert deleted.deleted_count == 2
    assert _keks(env) == name_keks and env.rows("SELECT key_name FROM tv_kek_graveyard") == []
    for name in ssn_keks:
        assert (await env.vault_keys.get_key(name)).state == kb.KEY_STATE_DESTROYED
    for name in name_keks:
        assert (await env.vault_keys.get_key(name)).state == kb.KEY_STATE_ENABLED
    assert await detokenize(env.alice, ("name", tokens[1]), ("name", tokens[3])) == ["Ada", "Bea"]


async def test_delete_field_without_key_broker_keeps_its_keks_for_maintenance(
        start_vault: Callable[..., Any]) -> None:
    """The field goes at once; its KEKs wait in the graveyard until key-broker takes their deletion."""
    env: VaultEnv = await start_vault(subject_key_deletion_waiting_seconds=0, key_broker_timeout_seconds=2)
    await _tokenize_records(env)
    ssn_keks = {str(r[0]) for r in env.rows("SELECT key_name FROM tv_subject_keks WHERE field = 'ssn'")}
    await env.broker.stop(grace=0)
    deleted = await env.alice.DeleteField(pb.DeleteFieldRequest(name=f"{TENANT}/fields/ssn", force=True))
    assert deleted.deleted_count == 2
    assert {str(r[0]) for r in env.rows("SELECT key_name FROM tv_kek_graveyard")} == ssn_keks
    assert env.rows("SELECT key_name FROM tv_subject_keks WHERE field = 'ssn'") == []
