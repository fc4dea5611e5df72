"""token-vault's DynamoDB store under the vault itself (in process, against moto's DynamoDB and KMS): batches
whose claims span several transactions, raced by independent vaults, end with one token and one entry per
value (a lost claim leaves nothing behind), and a refused batch writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privmesh.keybroker.backends.aws_kms import AwsKmsBackend
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.db import Database
from privmesh.runtime.errors import InvalidArgument
from privmesh.serverless.kms import KmsKeySource
from privmesh.tokenvault import dynamo
from privmesh.tokenvault.dynamo import DynamoStore, create_table
from privmesh.tokenvault.field_service import FieldService
from privmesh.tokenvault.keyring import Keyring
from privmesh.tokenvault.keys import Limits
from privmesh.tokenvault.store import NewEntries
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.vault import TokenizeBatch, Vault
from tests.serverless.conftest import REGION, Aws


def _vault(aws: Aws, table: str, audit: AuditLog) -> tuple[Vault, FieldService, DynamoStore]:
    store = DynamoStore(table, REGION, aws.endpoint)
    keyring = Keyring(KmsKeySource(AwsKmsBackend(REGION, aws.endpoint, 5.0), Limits(300, 100_000)), store)
    return Vault(store, keyring, audit), FieldService(store, keyring, audit), store


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    key = Ed25519PrivateKey.generate()
    return AuditLog(AuditStore(Database(f"sqlite:///{tmp_path / 'audit.db'}"), "token-vault", key, 100),
                    key.public_key())


class _Interfering(DynamoStore):
    """A store whose first write transaction meets another writer's claim of `value_hash`, made after the
    transaction read the claims and before it commits (as a concurrent invocation would)."""

    value_hash = b""
    claimed = False

    def insert_entries(self, cur: Any, tenant: str, entries: NewEntries, now: int) -> None:
        if not self.claimed:
            self.claimed = True
            self.client.put_item(TableName=self.table, Item={
                "pk": {"S": f"E#{tenant}#ssn"}, "sk": {"S": "V#" + self.value_hash.hex()}, "token": {"S": "theirs"},
                "ver": {"N": "1"},
                "subjects": {"M": {"-": {"M": {"id": {"S": "their-entry"}, "exp": {"NULL": True}}}}}})
        super().insert_entries(cur, tenant, entries, now)


async def test_a_claim_lost_in_a_later_transaction_undoes_the_batch(aws: Aws, audit: AuditLog,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamo, "MAX_TRANSACTION_ITEMS", 20)  # small transactions: the path of DynamoDB's 100
    create_table(aws.dynamodb, "race")
    aws.kms.create_alias(AliasName="alias/race", TargetKeyId=aws.kms.create_key()["KeyMetadata"]["KeyId"])
    store = _Interfering("race", REGION, aws.endpoint)
    keyring = Keyring(KmsKeySource(AwsKmsBackend(REGION, aws.endpoint, 5.0), Limits(300, 100_000)), store)
    vault, fields = Vault(store, keyring, audit), FieldService(store, keyring, audit)
    created = await fields.create("acme", "ssn", pb.Field(
        profile=pb.TokenProfile(deterministic=pb.DeterministicProfile()), key="aliases/race"), "")
    keys = await keyring.field_keys(created.stored)
    values = [f"v{n:04d}" for n in range(30)]  # 30 claims and 30 token items: three transactions
    hashes = {keys.value_hash(v): v for v in values}
    store.value_hash = max(hashes)  # claimed in the last transaction, after the first ones committed

    def items() -> int:  # of the table, but for data keys (a retry takes a fresh one)
        return sum(1 for i in aws.dynamodb.scan(TableName="race")["Items"] if not i["pk"]["S"].startswith("K#"))

    before = items()

    tokens, _ = await vault.tokenize("acme", TokenizeBatch(["ssn"] * 30, values, [""] * 30))
    assert store.claimed
    assert tokens[values.index(hashes[store.value_hash])] == "theirs"  # the retry settled on the other writer's
    assert store.count_entries("acme", "ssn") == 29  # the undone attempt's entries are gone, not orphaned
    # Each value's claim, token item and entry (the other writer's token item and entry are not in this table).
    assert items() == before + 30 + 29 + 29
    again, _ = await vault.tokenize("acme", TokenizeBatch(["ssn"] * 30, values[::-1], [""] * 30))
    assert again == tokens[::-1] and store.count_entries("acme", "ssn") == 29

    with pytest.raises(InvalidArgument):
        await vault.tokenize("acme", TokenizeBatch(["ssn"] * 3, ["fresh-1", "fresh-2", ""], [""] * 3))
    assert items() == before + 30 + 29 + 29


async def test_erasure_and_deleted_tokens_leave_the_claims_consistent(aws: Aws, audit: AuditLog) -> None:
    create_table(aws.dynamodb, "erase")
    aws.kms.create_alias(AliasName="alias/erase", TargetKeyId=aws.kms.create_key()["KeyMetadata"]["KeyId"])
    vault, fields, store = _vault(aws, "erase", audit)
    await fields.create("acme", "email", pb.Field(profile=pb.TokenProfile(deterministic=pb.DeterministicProfile()),
                                                  key="aliases/erase"), "")
    one = TokenizeBatch(["email"] * 2, ["a@x", "a@x"], ["p1", "p2"])
    tokens, _ = await vault.tokenize("acme", one)
    assert tokens[0] == tokens[1] and store.count_entries("acme", "email") == 2  # one entry per subject
    erased = await vault.forget_subject("acme", "p1")
    assert erased.counts == {"email": 1} and store.count_entries("acme", "email") == 1
    again: Any = await vault.tokenize("acme", TokenizeBatch(["email"], ["a@x"], ["p1"]))
    assert again[0] == [tokens[0]] and store.count_entries("acme", "email") == 2
    assert await vault.delete_tokens("acme", [("email", tokens[0])]) == 2
    assert store.count_entries("acme", "email") == 0
