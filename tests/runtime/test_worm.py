"""WORM archiving against moto's S3 server on loopback: every object is locked in COMPLIANCE mode until the
configured retention, a locked version cannot be deleted, re-archiving adds only what is new, and a bucket
without Object Lock is refused with nothing written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from privmesh.runtime.audit import worm
from privmesh.runtime.audit.chain import Event
from privmesh.runtime.audit.servicer import entry_to_proto
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.db import Database


@pytest.fixture
def s3(moto_s3: tuple[str, Any]) -> tuple[str, Any]:
    return moto_s3


def _bundle(store: AuditStore) -> dict[str, Any]:
    store.checkpoint_head()
    entries = [json_format.MessageToDict(entry_to_proto(e)) for e in store.entries(0, 10_000)]
    return {"services": [{"service": "svc", "entries": entries,
                          "tree": {"checkpoints": [note for _, note in store.tlog.checkpoints(0, 1000)]}}],
            "witnessed": {}}


def test_archive_locks_every_object_in_compliance_mode(s3: tuple[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, client = s3
    client.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    config_file = tmp_path / "worm.yaml"
    config_file.write_text(f"bucket: evidence\nretention_days: 30\nendpoint_url: {endpoint}\n")
    config = worm.WormConfig.from_file(config_file)
    monkeypatch.setattr(worm, "SEGMENT", 4)
    db = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    store = AuditStore(db, "svc", Ed25519PrivateKey.generate(), checkpoint_every=5)
    store.append_batch([Event("svc", "p", "Op", f"r/{i}") for i in range(6)])
    now = dt.datetime.now(dt.timezone.utc)
    written = worm.archive(_bundle(store), config, worm.s3_client(config), now)
    assert sorted(k.split("/", 2)[2] for k in written if "/entries/" in k) == [
        "entries/000000000001-000000000004.json", "entries/000000000005-000000000006.json"]
    assert sum("/checkpoints/" in k for k in written) == 2  # sizes 5 and 6
    for key in written:
        head = client.head_object(Bucket="evidence", Key=key)  # (moto's GetObjectRetention answers 500)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs((head["ObjectLockRetainUntilDate"] - (now + dt.timedelta(days=30))).total_seconds()) < 2
    version = client.head_object(Bucket="evidence", Key=written[0])["VersionId"]
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket="evidence", Key=written[0], VersionId=version)
    store.append_batch([Event("svc", "p", "Op", f"r/{i}") for i in range(3)])
    again = worm.archive(_bundle(store), config, worm.s3_client(config), now)
    assert not set(again) & set(written)
    assert any(k.endswith("entries/000000000005-000000000008.json") for k in again)
    db.close()


def test_a_bucket_without_object_lock_is_refused(s3: tuple[str, Any], tmp_path: Path) -> None:
    endpoint, client = s3
    client.create_bucket(Bucket="plain")
    config = worm.WormConfig(bucket="plain", retention_days=1, endpoint_url=endpoint)
    with pytest.raises(worm.NoObjectLock):
        worm.archive({"services": [], "witnessed": {}}, config, worm.s3_client(config))
    assert client.list_objects_v2(Bucket="plain").get("KeyCount", 0) == 0
