"""Batch files from S3: an object created under `incoming/{tenant}/{field}/{column}/{name}.csv` has that CSV
column tokenized into `tokenized/{tenant}/{field}/{column}/{name}.csv` (other columns and empty cells as they
were), as the configured S3 principal, through the vault's Tokenize in batches of its limit.

The output is written once every batch succeeded, so it appears whole or not at all; a refused or malformed
file gets `failed/.../{name}.csv.json` with the error model instead (S3 would only retry a raised error).
"""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from privmesh.runtime.errors import InvalidArgument, ServiceError, Unavailable
from privmesh.serverless.errors import error_body
from privmesh.serverless.vault import DOMAIN, ServerlessVault, run
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

INCOMING, TOKENIZED, FAILED = "incoming/", "tokenized/", "failed/"


class BatchFiles:
    def __init__(self, served: ServerlessVault) -> None:
        settings = served.settings
        self.served = served
        self.s3 = boto3.client("s3", region_name=settings.region, endpoint_url=settings.s3_endpoint,
                               config=Config(connect_timeout=settings.timeout_seconds,
                                             read_timeout=settings.timeout_seconds))

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Each record's outcome: the output key, or the error report's."""
        records = event.get("Records") if isinstance(event, Mapping) else None
        outcomes = []
        for record in records if isinstance(records, list) else []:
            try:
                bucket = str(record["s3"]["bucket"]["name"])
                key = urllib.parse.unquote_plus(str(record["s3"]["object"]["key"]))
            except (KeyError, TypeError):
                outcomes.append({"error": "EVENT_INVALID"})
                continue
            outcomes.append(self._one(bucket, key, int(record["s3"]["object"].get("size", 0) or 0)))
        return {"files": outcomes}

    def _one(self, bucket: str, key: str, size: int) -> dict[str, Any]:
        rest = key.removeprefix(INCOMING)
        try:
            parts = rest.split("/")
            if not key.startswith(INCOMING) or len(parts) != 4 or not parts[3]:
                raise InvalidArgument.single("key", "must be incoming/{tenant}/{field}/{column}/{name}",
                                             "KEY_INVALID")
            tenant, field, column, _ = parts
            limit = self.served.settings.max_file_bytes
            if size > limit:
                raise InvalidArgument.single("object", f"at most {limit} bytes", "FILE_TOO_LARGE")
            text = self._get(bucket, key, limit)
            output = self._tokenized(tenant, field, column, text)
            self._put(bucket, TOKENIZED + rest, output.encode(), "text/csv")
            return {"output": TOKENIZED + rest}
        except ServiceError as error:
            report = json.dumps({"source": key, **error_body(error, DOMAIN)}).encode()
            self._put(bucket, FAILED + rest + ".json", report, "application/json")
            return {"error": error.reason, "report": FAILED + rest + ".json"}

    def _get(self, bucket: str, key: str, limit: int) -> str:
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read(limit + 1)
        except (ClientError, BotoCoreError):
            raise Unavailable("S3_UNAVAILABLE", "the batch file could not be read") from None
        if len(body) > limit:
            raise InvalidArgument.single("object", f"at most {limit} bytes", "FILE_TOO_LARGE")
        try:
            return str(body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise InvalidArgument.single("object", "not UTF-8 text", "FILE_INVALID") from None

    def _put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError):
            raise Unavailable("S3_UNAVAILABLE", "the result could not be written") from None

    def _tokenized(self, tenant: str, field: str, column: str, text: str) -> str:
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or column not in rows[0]:
            raise InvalidArgument.single("object", f"has no header column {column!r}", "COLUMN_NOT_FOUND")
        at = rows[0].index(column)
        cells = [(n, row[at]) for n, row in enumerate(rows[1:], start=1) if at < len(row) and row[at]]
        step = self.served.settings.max_batch_items
        principal = self.served.settings.s3_principal or None
        for start in range(0, len(cells), step):
            part = cells[start:start + step]
            request = pb.TokenizeRequest(parent=f"tenants/{tenant}",
                                         items=[pb.TokenizeItem(field=field, value=v) for _, v in part])
            reply = run(self.served.call(principal, "Tokenize", request))
            for (n, _), result in zip(part, reply.results, strict=True):
                rows[n][at] = result.token
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        return out.getvalue()
