"""The vault's storage in one DynamoDB table (the serverless deployment's store, beside SQLite and PostgreSQL):
the same methods the vault, keyring and field service call on `Store`, over DynamoDB items.

Items (partition key `pk`, sort key `sk`; binary attributes hold ciphertexts and keyed hashes, never a value):
  F#{tenant}            {field}           a field: configuration and wrapped secret
  K#{data key id}       -                 a wrapped data key
  S#{tenant}#{field}    {subject hash}    a subject KEK (subject_key_shredding)
  E#{tenant}#{field}    I#{entry id}      an entry: token, ciphertext, keyed hashes, expiry
                        V#{value hash}    a deterministic value's token and its entries by subject (claim)
                        T#{token}         the entries a stored token names (drawn tokens: one, claimed)
                        U#{subject}#{id}  the subject's entries (erasure); D#{subject}#{id}: its data keys
  R#{tenant}#{method}   {request id}      an idempotency record
Expiring entries carry `expires_at` (epoch seconds), the table's TTL attribute: DynamoDB deletes them
after expiry, and reads ignore them before that, as the SQL stores do.

A write transaction (`DynamoDatabase.transaction`) collects the writes and commits them at its end: entries
first (unreachable until claimed), then the claims (value and token items, each conditional on what was read)
in TransactWriteItems of at most 100 items, a value's claim and its token items in one. A claim lost to a
concurrent writer undoes the claims already made and raises WriteConflict, on which the vault prepares and
writes again: two concurrent invocations never create two tokens for one value.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from privmesh.runtime.errors import Unavailable
from privmesh.tokenvault.store import (
    REQUEST_RETENTION_US,
    DataKeyRow,
    EtagMismatch,
    FoundEntry,
    NewEntries,
    StoredField,
    WriteConflict,
    now_us,
)

MAX_TRANSACTION_ITEMS = 100  # TransactWriteItems' limit
MAX_BATCH_GET = 100  # BatchGetItem's limit
MAX_BATCH_WRITE = 25  # BatchWriteItem's limit
TTL_ATTRIBUTE = "expires_at"
_SERIALIZE = TypeSerializer().serialize
_DESERIALIZE = TypeDeserializer().deserialize


def create_table(client: Any, table: str) -> None:
    """Creates the vault's table as serverless/template.yaml declares it (local development and tests)."""
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}])
    client.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True,
                                                                          "AttributeName": TTL_ATTRIBUTE})


def _epoch_s(micros: int | None) -> int | None:
    """DynamoDB's TTL attribute: whole seconds, rounded up so that nothing is deleted before it expires."""
    return None if micros is None else -(-micros // 1_000_000)


def _item(**attributes: Any) -> dict[str, Any]:
    return {k: _SERIALIZE(v) for k, v in attributes.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _DESERIALIZE(v) for k, v in item.items()}


def _bytes(value: Any) -> bytes:
    return bytes(value.value) if hasattr(value, "value") else bytes(value)


def _subject_key(subject_hash: bytes) -> str:
    """A subject's key in a value's claim ("-": no subject; DynamoDB refuses empty map keys)."""
    return subject_hash.hex() or "-"


def _subject_hash(key: str) -> bytes:
    return b"" if key == "-" else bytes.fromhex(key)


def _live(expire_us: Any, now: int) -> bool:
    return expire_us is None or int(expire_us) > now


class StoreUnavailable(Unavailable):
    def __init__(self) -> None:
        super().__init__("STORAGE_UNAVAILABLE", "the vault's table could not be reached; nothing was written")


@dataclass
class _Value:
    """A deterministic value's claim as read (version 0: absent) and as this transaction leaves it."""

    version: int
    token: str
    subjects: dict[str, dict[str, Any]]  # subject hash (hex) -> {"id": entry id, "exp": expiry µs or None}
    dirty: bool = False


@dataclass
class DynamoTransaction:
    """The writes of one vault transaction (what the SQL stores' cursor is to them), committed at the end."""

    table: str
    entries: list[dict[str, Any]] = field(default_factory=list)  # puts of unreachable items (phase 1)
    values: dict[tuple[str, bytes], _Value] = field(default_factory=dict)  # (entry pk, value hash) -> claim
    token_adds: dict[tuple[str, str], tuple[list[str], bool, bytes | None]] = field(default_factory=dict)
    writes: list[dict[str, Any]] = field(default_factory=list)  # unconditional updates and deletes
    entry_values: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)  # entry id -> (pk, vh, subject)


class DynamoDatabase:
    """What the vault needs of a database: a dialect and write transactions."""

    dialect = "dynamodb"

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    @contextlib.contextmanager
    def transaction(self) -> Iterator[DynamoTransaction]:
        txn = DynamoTransaction(self.table)
        yield txn
        with _reachable():
            _Commit(self.client, txn).run()


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """DynamoDB failures other than a lost condition become UNAVAILABLE (fail closed, nothing said of data)."""
    try:
        yield
    except (ClientError, BotoCoreError):
        raise StoreUnavailable from None


class _Commit:
    def __init__(self, client: Any, txn: DynamoTransaction) -> None:
        self.client = client
        self.txn = txn
        self.done: list[list[dict[str, Any]]] = []  # undo operations of the claims committed so far

    def run(self) -> None:
        txn = self.txn
        for start in range(0, len(txn.entries), MAX_BATCH_WRITE):
            self._batch_write([{"PutRequest": {"Item": item}} for item in txn.entries[start:start + MAX_BATCH_WRITE]])
        units = self._claim_units()
        chunk: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        for unit in units:
            if sum(len(ops) for ops, _ in chunk) + len(unit[0]) > MAX_TRANSACTION_ITEMS:
                self._claim(chunk)
                chunk = []
            chunk.append(unit)
        if chunk:
            self._claim(chunk)
        for write in txn.writes:
            try:
                self._write(write)
            except ClientError as exc:  # an index item another writer changed first: its own write settles it
                lost = exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
                if not lost or "Put" in write:
                    raise

    def _claim_units(self) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """(operations, their undo) per value, with the token items it names; then each other token item."""
        txn, units = self.txn, []
        claimed: set[tuple[str, str]] = set()
        for (pk, value_hash), value in txn.values.items():
            if not value.dirty:
                continue
            ops, undo = [self._put_value(pk, value_hash, value)], [self._undo_value(pk, value_hash, value)]
            for (token_pk, token), (ids, _, owner) in txn.token_adds.items():
                if token_pk == pk and owner == value_hash:
                    ops.append(self._add_ids(pk, token, ids, False))
                    undo.append(self._remove_ids(pk, token, ids))
                    claimed.add((token_pk, token))
            units.append((ops, undo))
        for (pk, token), (ids, exclusive, _) in txn.token_adds.items():
            if (pk, token) not in claimed:
                units.append(([self._add_ids(pk, token, ids, exclusive)], [self._remove_ids(pk, token, ids)]))
        return units

    def _put_value(self, pk: str, value_hash: bytes, value: _Value) -> dict[str, Any]:
        expiries = [s["exp"] for s in value.subjects.values()]
        expires_at = None if None in expiries or not expiries else _epoch_s(max(expiries))
        put: dict[str, Any] = {"TableName": self.txn.table, "Item": _item(
            pk=pk, sk="V#" + value_hash.hex(), token=value.token, subjects=value.subjects, ver=value.version + 1,
            expires_at=expires_at)}
        if value.version:
            put.update(ConditionExpression="ver = :ver", ExpressionAttributeValues={":ver": _SERIALIZE(value.version)})
        else:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        return {"Put": put}

    def _undo_value(self, pk: str, value_hash: bytes, value: _Value) -> dict[str, Any]:
        """Deletes the claim this transaction made (while it is still its version); an older claim is left
        as it was read except for the entries this transaction added, which never became reachable."""
        return {"Delete": {"TableName": self.txn.table, "Key": _item(pk=pk, sk="V#" + value_hash.hex()),
                           "ConditionExpression": "ver = :ver",
                           "ExpressionAttributeValues": {":ver": _SERIALIZE(value.version + 1)}}}

    def _add_ids(self, pk: str, token: str, ids: list[str], exclusive: bool) -> dict[str, Any]:
        update: dict[str, Any] = {"TableName": self.txn.table, "Key": _item(pk=pk, sk="T#" + token),
                                  "UpdateExpression": "ADD ids :ids",
                                  "ExpressionAttributeValues": {":ids": _SERIALIZE(set(ids))}}
        if exclusive:  # a drawn token: nobody else may hold it
            update["ConditionExpression"] = "attribute_not_exists(pk)"
        return {"Update": update}

    def _remove_ids(self, pk: str, token: str, ids: list[str]) -> dict[str, Any]:
        return {"Update": {"TableName": self.txn.table, "Key": _item(pk=pk, sk="T#" + token),
                           "UpdateExpression": "DELETE ids :ids",
                           "ExpressionAttributeValues": {":ids": _SERIALIZE(set(ids))}}}

    def _claim(self, chunk: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
        try:
            self.client.transact_write_items(TransactItems=[op for ops, _ in chunk for op in ops])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("TransactionCanceledException",
                                                                 "ConditionalCheckFailedException"):
                raise
            self._undo()
            raise WriteConflict from None
        self.done.append([op for _, undo in chunk for op in undo])

    def _undo(self) -> None:
        """Takes back the claims made before a lost one, and the entries they would have made reachable."""
        for undo in reversed(self.done):
            for op in undo:
                with contextlib.suppress(ClientError):
                    self._write(op)
        keys = [{"DeleteRequest": {"Key": {"pk": i["pk"], "sk": i["sk"]}}} for i in self.txn.entries]
        for start in range(0, len(keys), MAX_BATCH_WRITE):
            self._batch_write(keys[start:start + MAX_BATCH_WRITE])

    def _write(self, op: dict[str, Any]) -> None:
        (kind, params), = op.items()
        call = {"Put": self.client.put_item, "Update": self.client.update_item, "Delete": self.client.delete_item}
        call[kind](**params)

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        pending: dict[str, Any] = {self.txn.table: requests}
        for attempt in range(8):
            if not pending:
                return
            pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            time.sleep(0.01 * 2 ** attempt if pending else 0)
        raise StoreUnavailable


class DynamoStore:
    """The vault's Store over one DynamoDB table (see the module docstring for its items)."""

    def __init__(self, table: str, region: str, endpoint_url: str | None = None, timeout: float = 5.0) -> None:
        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 3, "mode": "standard"})
        self.client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)
        self.table = table
        self.db = DynamoDatabase(self.client, table)

    # --- reads ----------------------------------------------------------------------------------------

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        with _reachable():
            found = self.client.get_item(TableName=self.table, Key=_item(pk=pk, sk=sk), ConsistentRead=True)
        return _plain(found["Item"]) if "Item" in found else None

    def _get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """Strongly consistent BatchGetItem of any number of keys, by (pk, sk)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(wanted), MAX_BATCH_GET):
            request: dict[str, Any] = {self.table: {"Keys": [_item(pk=pk, sk=sk) for pk, sk in
                                                             wanted[start:start + MAX_BATCH_GET]],
                                                    "ConsistentRead": True}}
            for attempt in range(8):
                with _reachable():
                    reply = self.client.batch_get_item(RequestItems=request)
                for raw in reply.get("Responses", {}).get(self.table, []):
                    item = _plain(raw)
                    found[(item["pk"], item["sk"])] = item
                request = reply.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.01 * 2 ** attempt)
            else:
                raise StoreUnavailable
        return found

    def _query(self, pk: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        condition = "pk = :pk AND begins_with(sk, :prefix)" if prefix else "pk = :pk"
        params: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                  "KeyConditionExpression": condition,
                                  "ExpressionAttributeValues": _item(**{":pk": pk, ":prefix": prefix or None})}
        while True:
            with _reachable():
                page = self.client.query(**params)
            items += map(_plain, page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- fields ---------------------------------------------------------------------------------------

    @staticmethod
    def _field(item: dict[str, Any]) -> StoredField:
        return StoredField(item["pk"][2:], item["sk"], _bytes(item["config"]), item["etag"], int(item["create_us"]),
                           int(item["update_us"]), _bytes(item["secret_wrapped"]), item["secret_key"],
                           int(item["secret_version"]))

    def insert_field(self, stored: StoredField, cur: DynamoTransaction) -> bool:
        """Whether it will be inserted (False: the field exists); the insert is conditional, so that of two
        concurrent creators one fails the transaction."""
        if self.get_field(stored.tenant, stored.field) is not None:
            return False
        cur.writes.append({"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                                   "Item": self._field_item(stored)}})
        return True

    @staticmethod
    def _field_item(stored: StoredField) -> dict[str, Any]:
        return _item(pk="F#" + stored.tenant, sk=stored.field, config=stored.config, etag=stored.etag,
                     create_us=stored.create_us, update_us=stored.update_us, secret_wrapped=stored.secret_wrapped,
                     secret_key=stored.secret_key, secret_version=stored.secret_version)

    def get_field(self, tenant: str, field: str) -> StoredField | None:
        item = self._get("F#" + tenant, field)
        return None if item is None else self._field(item)

    def get_fields(self, tenant: str, fields: Iterable[str]) -> dict[str, StoredField]:
        found = self._get_many(("F#" + tenant, name) for name in sorted(set(fields)))
        return {sk: self._field(item) for (_, sk), item in found.items()}

    def tenant_fields(self, tenant: str) -> list[StoredField]:
        return [self._field(item) for item in self._query("F#" + tenant, "")]

    def list_fields(self, tenant: str | None, after: str, limit: int) -> list[StoredField]:
        """Ordered by resource name; `after` is the last name of the previous page (all tenants: a scan)."""
        if tenant is not None:
            items = self._query("F#" + tenant, "")
        else:
            items, params = [], {"TableName": self.table, "FilterExpression": "begins_with(pk, :f)",
                                 "ExpressionAttributeValues": _item(**{":f": "F#"})}
            while True:
                with _reachable():
                    page = self.client.scan(**params)
                items += map(_plain, page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        fields = sorted((self._field(i) for i in items), key=lambda f: f"tenants/{f.tenant}/fields/{f.field}")
        return [f for f in fields if f"tenants/{f.tenant}/fields/{f.field}" > after][:limit]

    def update_field(self, tenant: str, field: str, config: bytes, expected_etag: str,
                     wrapped: tuple[bytes, str, int] | None = None) -> StoredField | None:
        """None when the field does not exist; EtagMismatch when `expected_etag` is set and differs (or the field
        changed meanwhile: the write is conditional on the etag read)."""
        current = self.get_field(tenant, field)
        if current is None:
            return None
        if expected_etag and not secrets.compare_digest(current.etag, expected_etag):
            raise EtagMismatch
        secret = wrapped or (current.secret_wrapped, current.secret_key, current.secret_version)
        updated = StoredField(tenant, field, config, secrets.token_hex(8), current.create_us, now_us(), *secret)
        try:
            with _reachable_unless_conditional():
                self.client.put_item(TableName=self.table, Item=self._field_item(updated),
                                     ConditionExpression="etag = :etag",
                                     ExpressionAttributeValues={":etag": _SERIALIZE(current.etag)})
        except ClientError:
            raise EtagMismatch from None
        return updated

    def delete_field(self, tenant: str, field: str, force: bool, expected_etag: str) -> int | None:
        """Entries deleted with the field; None if absent; -1 when it has entries and not `force`."""
        current = self.get_field(tenant, field)
        if current is None:
            return None
        if expected_etag and not secrets.compare_digest(current.etag, expected_etag):
            raise EtagMismatch
        pk = f"E#{tenant}#{field}"
        items = self._query(pk, "")
        count = sum(1 for i in items if i["sk"].startswith("I#"))
        if count and not force:
            return -1
        keys = [{"pk": "F#" + tenant, "sk": field}, *({"pk": pk, "sk": i["sk"]} for i in items)]
        keys += [{"pk": "K#" + str(i["data_key_id"]), "sk": "-"} for i in items if i["sk"].startswith("I#")]
        requests = [{"DeleteRequest": {"Key": _item(**k)}} for k in {(k["pk"], k["sk"]): k for k in keys}.values()]
        for start in range(0, len(requests), MAX_BATCH_WRITE):
            with _reachable():
                _Commit(self.client, DynamoTransaction(self.table))._batch_write(
                    requests[start:start + MAX_BATCH_WRITE])
        return count

    # --- data keys and subject KEKs -------------------------------------------------------------------

    def insert_data_key(self, row: DataKeyRow) -> None:
        with _reachable():
            self.client.put_item(TableName=self.table, Item=_item(
                pk="K#" + row.id, sk="-", tenant=row.tenant, field=row.field, subject_hash=row.subject_hash,
                key_name=row.key_name, key_version=row.key_version, wrapped=row.wrapped, create_us=now_us()))
            if row.subject_hash is not None:
                self.client.put_item(TableName=self.table, Item=_item(
                    pk=f"E#{row.tenant}#{row.field}", sk=f"D#{row.subject_hash.hex()}#{row.id}", id=row.id))

    def retired(self, cur: DynamoTransaction, ids: Sequence[str]) -> set[str]:
        """Which of these data keys no longer take new entries (shredded: gone from the table)."""
        found = self._get_many(("K#" + i, "-") for i in ids)
        return {i for i in ids if ("K#" + i, "-") not in found or "retired_us" in found[("K#" + i, "-")]}

    def subject_kek(self, tenant: str, field: str, subject_hash: bytes, cur: DynamoTransaction | None = None) \
            -> str | None:
        item = self._get(f"S#{tenant}#{field}", subject_hash.hex())
        return None if item is None else str(item["key_name"])

    def record_subject_kek(self, tenant: str, field: str, subject_hash: bytes, key_name: str) -> str:
        """The subject's KEK: `key_name` when this call recorded it, else the one recorded first."""
        with contextlib.suppress(ClientError), _reachable_unless_conditional():
            self.client.put_item(TableName=self.table, ConditionExpression="attribute_not_exists(pk)", Item=_item(
                pk=f"S#{tenant}#{field}", sk=subject_hash.hex(), key_name=key_name, create_us=now_us()))
        return self.subject_kek(tenant, field, subject_hash) or key_name

    def stale_subject_keys(self, cur: DynamoTransaction, tenant: str, field: str, key_ids: Sequence[str]) -> bool:
        """Whether a subject data key among these is wrapped under a KEK that is no longer its subject's."""
        used = {(_bytes(i["subject_hash"]), i["key_name"]) for i in
                self._get_many(("K#" + k, "-") for k in key_ids).values() if "subject_hash" in i}
        return any(self.subject_kek(tenant, field, h) != name for h, name in used)

    def buried_keks(self, limit: int = 1000) -> list[str]:
        """None: fields are not deleted through the serverless entry points."""
        return []

    def unbury_kek(self, key_name: str) -> None:
        """Nothing is buried here (see buried_keks)."""

    # --- entries --------------------------------------------------------------------------------------

    def existing_by_value(self, cur: DynamoTransaction, tenant: str, field: str, hashes: Sequence[bytes],
                          now: int) -> list[tuple[str, str, bytes, bytes, int | None]]:
        """Live deterministic entries (id, token, value_hash, subject_hash, expire_us) of these value hashes;
        each claim read is remembered in `cur`, which writes it back only if it is still as read."""
        pk = f"E#{tenant}#{field}"
        found = self._get_many((pk, "V#" + h.hex()) for h in hashes)
        rows: list[tuple[str, str, bytes, bytes, int | None]] = []
        for value_hash in hashes:
            item = found.get((pk, "V#" + value_hash.hex()))
            if item is None:
                cur.values[(pk, value_hash)] = _Value(0, "", {})
                continue
            live = {s: {"id": e["id"], "exp": None if e.get("exp") is None else int(e["exp"])}
                    for s, e in item.get("subjects", {}).items() if _live(e.get("exp"), now)}
            cur.values[(pk, value_hash)] = _Value(int(item["ver"]), str(item["token"]), live,
                                                  dirty=len(live) != len(item.get("subjects", {})))
            for subject, entry in live.items():
                rows.append((entry["id"], str(item["token"]), value_hash, _subject_hash(subject), entry["exp"]))
                cur.entry_values[entry["id"]] = (pk, value_hash, subject)
        return rows

    def tokens_taken(self, cur: DynamoTransaction, tenant: str, field: str, tokens: Sequence[str]) -> set[str]:
        pk = f"E#{tenant}#{field}"
        found = self._get_many((pk, "T#" + t) for t in tokens if t)
        return {sk[2:] for (_, sk), item in found.items() if item.get("ids")}

    def insert_entries(self, cur: DynamoTransaction, tenant: str, entries: NewEntries, now: int) -> None:
        for entry_id, name, token, value_hash, subject_hash, key_id, nonce, ciphertext, expire_us in zip(
                *entries, strict=True):
            pk = f"E#{tenant}#{name}"
            cur.entries.append(_item(pk=pk, sk="I#" + entry_id, token=token, value_hash=value_hash,
                                     subject_hash=subject_hash, data_key_id=key_id, nonce=nonce,
                                     ciphertext=ciphertext, create_us=now, expire_us=expire_us,
                                     expires_at=_epoch_s(expire_us)))
            if subject_hash:
                cur.entries.append(_item(pk=pk, sk=f"U#{subject_hash.hex()}#{entry_id}", id=entry_id, token=token,
                                         value_hash=value_hash, expires_at=_epoch_s(expire_us)))
            if value_hash is not None:
                value = cur.values.setdefault((pk, value_hash), _Value(0, "", {}))
                value.token = value.token or token
                value.subjects[_subject_key(subject_hash)] = {"id": entry_id, "exp": expire_us}
                value.dirty = True
            if token:
                ids, exclusive, _ = cur.token_adds.get((pk, token), ([], value_hash is None, value_hash))
                cur.token_adds[(pk, token)] = ([*ids, entry_id], exclusive, value_hash)

    def extend_expiry(self, cur: DynamoTransaction, updates: Sequence[tuple[int | None, str]]) -> None:
        for expire_us, entry_id in updates:
            pk, value_hash, subject = cur.entry_values[entry_id]
            value = cur.values[(pk, value_hash)]
            value.subjects[subject]["exp"] = expire_us
            value.dirty = True
            update = "SET expire_us = :e, expires_at = :t" if expire_us is not None else \
                "REMOVE expire_us, expires_at"
            values = {} if expire_us is None else {":e": _SERIALIZE(expire_us),
                                                   ":t": _SERIALIZE(_epoch_s(expire_us))}
            params: dict[str, Any] = {"TableName": self.table, "Key": _item(pk=pk, sk="I#" + entry_id),
                                      "UpdateExpression": update, "ConditionExpression": "attribute_exists(pk)"}
            if values:
                params["ExpressionAttributeValues"] = values
            cur.writes.append({"Update": params})

    def find_tokens(self, tenant: str, field: str, tokens: Sequence[str], now: int,
                    ids: dict[str, str] | None = None) -> dict[str, FoundEntry]:
        """A live entry for each token found: through `ids` (token -> the entry id it names) first, then
        through the stored tokens."""
        pk = f"E#{tenant}#{field}"
        named = dict(ids or {})
        rest = [t for t in tokens if t not in named]
        for (_, sk), item in self._get_many((pk, "T#" + t) for t in rest).items():
            for entry_id in sorted(item.get("ids", ())):
                named.setdefault(sk[2:], entry_id)
        entries = self._get_many((pk, "I#" + i) for i in named.values())
        keys = self._get_many(("K#" + str(e["data_key_id"]), "-") for e in entries.values())
        found: dict[str, FoundEntry] = {}
        for token, entry_id in named.items():
            entry = entries.get((pk, "I#" + entry_id))
            if entry is None or not _live(entry.get("expire_us"), now):
                continue
            key = keys.get(("K#" + str(entry["data_key_id"]), "-"))
            if key is None:
                continue
            found[token] = FoundEntry(entry_id, field, token, str(entry["data_key_id"]), _bytes(entry["nonce"]),
                                      _bytes(entry["ciphertext"]), str(key["key_name"]), _bytes(key["wrapped"]))
        return found

    def _delete_entries(self, cur: DynamoTransaction, pk: str, entries: Iterable[dict[str, Any]]) -> int:
        """Queues the deletion of entries (items as stored) with their index items; how many."""
        count = 0
        for entry in entries:
            entry_id = str(entry["sk"][2:])
            count += 1
            key = {"TableName": self.table}
            cur.writes.append({"Delete": {**key, "Key": _item(pk=pk, sk="I#" + entry_id)}})
            subject = _bytes(entry.get("subject_hash", b"")).hex()
            if subject:
                cur.writes.append({"Delete": {**key, "Key": _item(pk=pk, sk=f"U#{subject}#{entry_id}")}})
            if entry.get("token"):
                cur.writes.append({"Update": {**key, "Key": _item(pk=pk, sk="T#" + str(entry["token"])),
                                              "UpdateExpression": "DELETE ids :ids",
                                              "ExpressionAttributeValues": {":ids": _SERIALIZE({entry_id})}}})
            if entry.get("value_hash") is not None:
                cur.writes.append({"Update": {
                    **key, "Key": _item(pk=pk, sk="V#" + _bytes(entry["value_hash"]).hex()),
                    "UpdateExpression": "REMOVE subjects.#s ADD ver :one",
                    "ConditionExpression": "subjects.#s.id = :id",
                    "ExpressionAttributeNames": {"#s": subject or "-"},
                    "ExpressionAttributeValues": {":one": _SERIALIZE(1), ":id": _SERIALIZE(entry_id)}}})
        return count

    def delete_tokens(self, cur: DynamoTransaction, tenant: str, field: str, tokens: Sequence[str],
                      ids: Sequence[str] = ()) -> int:
        pk = f"E#{tenant}#{field}"
        wanted = set(ids)
        for item in self._get_many((pk, "T#" + t) for t in tokens).values():
            wanted |= set(item.get("ids", ()))
        return self._delete_entries(cur, pk, self._get_many((pk, "I#" + i) for i in sorted(wanted)).values())

    def forget_subject(self, cur: DynamoTransaction, tenant: str, field: str,
                       subject_hash: bytes) -> tuple[int, list[str]]:
        """Queues the deletion of a subject's KEK record, entries and data keys in one field."""
        pk, subject = f"E#{tenant}#{field}", subject_hash.hex()
        cur.writes.append({"Delete": {"TableName": self.table, "Key": _item(pk=f"S#{tenant}#{field}", sk=subject)}})
        ids = [str(i["id"]) for i in self._query(pk, f"U#{subject}#")]
        count = self._delete_entries(cur, pk, self._get_many((pk, "I#" + i) for i in ids).values())
        keys = [str(i["id"]) for i in self._query(pk, f"D#{subject}#")]
        for key_id in keys:
            cur.writes += [{"Delete": {"TableName": self.table, "Key": _item(pk="K#" + key_id, sk="-")}},
                           {"Delete": {"TableName": self.table, "Key": _item(pk=pk, sk=f"D#{subject}#{key_id}")}}]
        return count, keys

    def count_entries(self, tenant: str, field: str) -> int:
        return len(self._query(f"E#{tenant}#{field}", "I#"))

    # --- idempotency ----------------------------------------------------------------------------------

    def replay(self, cur: DynamoTransaction, tenant: str, method: str, request_id: str) -> tuple[bytes, bytes] | None:
        item = self._get(f"R#{tenant}#{method}", request_id)
        if item is None or int(item["create_us"]) <= now_us() - REQUEST_RETENTION_US:
            return None
        return _bytes(item["fingerprint"]), _bytes(item["response"])

    def remember(self, cur: DynamoTransaction, tenant: str, method: str, request_id: str, fingerprint: bytes,
                 response: bytes) -> None:
        now = now_us()
        cur.writes.append({"Put": {"TableName": self.table, "Item": _item(
            pk=f"R#{tenant}#{method}", sk=request_id, fingerprint=fingerprint, response=response, create_us=now,
            expires_at=_epoch_s(now + REQUEST_RETENTION_US))}})


@contextlib.contextmanager
def _reachable_unless_conditional() -> Iterator[None]:
    """A lost condition passes through (the caller expects it); any other failure is UNAVAILABLE."""
    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise
        raise StoreUnavailable from None
    except BotoCoreError:
        raise StoreUnavailable from None
