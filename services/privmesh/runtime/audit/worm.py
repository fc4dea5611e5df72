"""WORM retention of evidence: an exported bundle's tree checkpoints and log segments written to S3 with
Object Lock in compliance mode, so that nobody (root included) can delete or overwrite them before the
configured retention ends.

Objects are immutable by name: a segment holds entries first..last of one log and a checkpoint one size, so
re-archiving a later bundle adds objects and never replaces one. The bucket must have Object Lock enabled
(it can only be turned on when the bucket is created); archiving refuses a bucket without it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from privmesh.runtime.audit import checkpoint as notes

SEGMENT = 10_000


class WormConfig(BaseModel):
    """Where and how long: `privmesh evidence archive --config worm.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field("privmesh-evidence/", max_length=512)
    retention_days: int = Field(ge=1, le=36_500, description="compliance-mode retention of every object")
    endpoint_url: str | None = Field(None, description="an S3-compatible endpoint; default: AWS")
    region: str = "us-east-1"

    @classmethod
    def from_file(cls, path: Path) -> WormConfig:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})


class NoObjectLock(RuntimeError):
    """The bucket does not have Object Lock enabled: objects written there could be deleted."""


def _objects(bundle: Mapping[str, Any]) -> dict[str, bytes]:
    """Object name -> content for every segment and checkpoint of the bundle, plus the witnesses' state."""
    objects = {}
    for section in bundle["services"]:
        service, entries = section["service"], section["entries"]
        for start in range(0, len(entries), SEGMENT):
            chunk = entries[start:start + SEGMENT]
            name = f"{service}/entries/{start + 1:012d}-{start + len(chunk):012d}.json"
            objects[name] = json.dumps(chunk, sort_keys=True).encode()
        for note in section.get("tree", {}).get("checkpoints", []):
            size = notes.parse_checkpoint(notes.parse_note(note).text).size
            digest = hashlib.sha256(note.encode()).hexdigest()[:16]  # cosignatures gathered later make a new object
            objects[f"{service}/checkpoints/{size:012d}-{digest}.note"] = note.encode()
    witnessed = json.dumps(bundle.get("witnessed", {}), sort_keys=True).encode()
    objects[f"witnessed/{hashlib.sha256(witnessed).hexdigest()}.json"] = witnessed
    return objects


def archive(bundle: Mapping[str, Any], config: WormConfig, client: Any,
            now: dt.datetime | None = None) -> list[str]:
    """Writes what the bucket lacks, each object locked in COMPLIANCE mode; returns the keys written."""
    try:
        lock = client.get_object_lock_configuration(Bucket=config.bucket)["ObjectLockConfiguration"]
    except client.exceptions.ClientError as exc:
        raise NoObjectLock(f"bucket {config.bucket} has no Object Lock configuration") from exc
    if lock.get("ObjectLockEnabled") != "Enabled":
        raise NoObjectLock(f"bucket {config.bucket} does not have Object Lock enabled")
    until = (now or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(days=config.retention_days)
    existing = set()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=config.bucket, Prefix=config.prefix):
        existing |= {item["Key"] for item in page.get("Contents", [])}
    written = []
    for name, body in sorted(_objects(bundle).items()):
        key = config.prefix + name
        if key in existing:
            continue
        client.put_object(Bucket=config.bucket, Key=key, Body=body, ObjectLockMode="COMPLIANCE",
                          ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256")
        written.append(key)
    return written


def s3_client(config: WormConfig) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=config.endpoint_url, region_name=config.region)
