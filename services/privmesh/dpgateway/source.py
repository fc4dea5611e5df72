"""Where a dataset's rows come from: local CSV/Parquet files, or S3 objects (boto3) fetched into a local
cache. Registration reads only the source's own schema (Parquet metadata, the CSV header), never values;
queries scan the files lazily, with the declared types, so the gateway holds no copy of the data. A Spark
dataset's Parquet on S3 is never fetched: its schema and row count come from each object's footer, read in
place by pyarrow's S3 filesystem (ranged reads), and Spark reads the rows."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl
import pyarrow.parquet as pq

from privmesh.dpgateway.schema import ColumnType, DataFormat, DatasetSpec, Engine

POLARS_TYPES: dict[ColumnType, Any] = {
    ColumnType.BOOL: pl.Boolean, ColumnType.INT64: pl.Int64, ColumnType.FLOAT64: pl.Float64,
    ColumnType.STRING: pl.String, ColumnType.DATE: pl.Date,
}
_ARROW_KINDS: dict[ColumnType, tuple[str, ...]] = {
    ColumnType.BOOL: ("bool",), ColumnType.INT64: ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"),
    ColumnType.FLOAT64: ("float", "double", "halffloat", "int8", "int16", "int32", "int64"),
    ColumnType.STRING: ("string", "large_string"), ColumnType.DATE: ("date32[day]", "date64[ms]"),
}


class SourceError(Exception):
    """The source cannot be read (missing, not the declared format, unreachable). Never carries values."""


class SchemaMismatch(Exception):
    def __init__(self, column_index: int, message: str) -> None:
        super().__init__(message)
        self.column_index = column_index
        self.message = message


@dataclass(frozen=True)
class OpenedSource:
    files: tuple[Path, ...]  # local files (S3 objects once fetched)
    fingerprint: str  # changes when a file changes: size and mtime of each (an S3 object: its ETag)
    remote: tuple[str, ...] = ()  # "bucket/key" of S3 Parquet objects left in place (files is then empty)
    filesystem: Any = None  # pyarrow's S3FileSystem for `remote`


def left_in_place(spec: DatasetSpec) -> bool:
    """Whether the gateway leaves the source on S3: Spark reads it there, and Parquet footers say the rest."""
    return (spec.engine is Engine.SPARK and spec.source.format is DataFormat.PARQUET
            and spec.source.uri.startswith("s3://"))


class SourceReader:
    """Resolves URIs to local files; S3 objects are downloaded once per ETag into `cache_dir`."""

    def __init__(self, cache_dir: Path, s3_endpoint_url: str | None = None, s3_region: str | None = None) -> None:
        self.cache_dir = cache_dir
        self.s3_endpoint_url = s3_endpoint_url
        self.s3_region = s3_region
        self._lock = threading.Lock()

    def open(self, spec: DatasetSpec) -> OpenedSource:
        uri = spec.source.uri
        try:
            if left_in_place(spec):
                return self._s3_in_place(uri)
            files = self._s3_files(uri) if uri.startswith("s3://") else self._local_files(uri)
        except SourceError:
            raise
        except Exception as exc:  # boto/OS errors: their text may name paths, never values
            raise SourceError(f"cannot read the source ({type(exc).__name__})") from None
        if not files:
            raise SourceError("the source holds no files")
        stamp = hashlib.sha256()
        for path in files:
            stat = path.stat()
            stamp.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return OpenedSource(tuple(files), stamp.hexdigest())

    @staticmethod
    def _local_files(uri: str) -> list[Path]:
        path = Path(uri.removeprefix("file://"))
        if path.is_dir():
            return sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".pq"))
        if not path.is_file():
            raise SourceError("the source file does not exist")
        return [path]

    def _client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint_url, region_name=self.s3_region)

    def _s3_objects(self, client: Any, uri: str) -> tuple[str, list[tuple[str, str]]]:
        """The bucket and the (key, ETag) of each object the URI names (a key, or a prefix of Parquet parts)."""
        bucket, _, key = uri[len("s3://"):].partition("/")
        if key.endswith("/"):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            objects = [(o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", [])
                       if o["Key"].endswith((".parquet", ".pq"))]
        else:
            objects = [(key, client.head_object(Bucket=bucket, Key=key)["ETag"])]
        return bucket, sorted(objects)

    def _s3_in_place(self, uri: str) -> OpenedSource:
        from pyarrow import fs

        bucket, objects = self._s3_objects(self._client(), uri)
        if not objects:
            raise SourceError("the source holds no files")
        endpoint = urlsplit(self.s3_endpoint_url) if self.s3_endpoint_url else None
        filesystem = fs.S3FileSystem(region=self.s3_region, endpoint_override=endpoint.netloc if endpoint else None,
                                     scheme=endpoint.scheme if endpoint else "https")
        stamp = hashlib.sha256("".join(f"{bucket}/{key}:{etag};" for key, etag in objects).encode())
        return OpenedSource((), stamp.hexdigest(), tuple(f"{bucket}/{key}" for key, _ in objects), filesystem)

    def _s3_files(self, uri: str) -> list[Path]:
        client = self._client()
        bucket, objects = self._s3_objects(client, uri)
        files = []
        for name, etag in objects:
            digest = hashlib.sha256(f"{bucket}/{name}:{etag}".encode()).hexdigest()[:32]
            target = self.cache_dir / digest / Path(name).name
            with self._lock:
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_suffix(target.suffix + ".part")
                    client.download_file(bucket, name, str(partial))
                    os.replace(partial, target)
            files.append(target)
        return files


def check_declared_columns(spec: DatasetSpec, opened: OpenedSource) -> None:
    """Compares the declaration with the source's own schema (never its values)."""
    if spec.source.format is DataFormat.PARQUET:
        try:
            schema = (pq.read_schema(opened.remote[0], filesystem=opened.filesystem) if opened.remote
                      else pq.read_schema(opened.files[0]))
        except Exception:
            raise SourceError("not a Parquet file") from None
        found = {f.name: str(f.type) for f in schema}
        for i, column in enumerate(spec.columns):
            if column.name not in found:
                raise SchemaMismatch(i, f"the source has no column {column.name!r}")
            if found[column.name] not in _ARROW_KINDS[column.type]:
                raise SchemaMismatch(i, f"the source's column {column.name!r} is not {column.type.value}")
        return
    header = _csv_header(opened.files[0], spec.source.delimiter)
    if spec.source.headerless:
        if len(header) < len(spec.columns):
            raise SchemaMismatch(len(header), "the source has fewer columns than declared")
        return
    for i, column in enumerate(spec.columns):
        if column.name not in header:
            raise SchemaMismatch(i, f"the source has no column {column.name!r}")


def _csv_header(path: Path, delimiter: str) -> list[str]:
    try:
        with path.open("r", encoding="utf-8", newline="") as handle:
            line = handle.readline(1 << 20)
    except (OSError, UnicodeDecodeError):
        raise SourceError("not a UTF-8 CSV file") from None
    return [name.strip().strip('"') for name in line.rstrip("\r\n").split(delimiter)]


def row_count(spec: DatasetSpec, opened: OpenedSource) -> int:
    """Rows in the source, from Parquet metadata or by counting CSV lines (no value is parsed)."""
    if spec.source.format is DataFormat.PARQUET:
        try:
            if opened.remote:  # each object's footer only (ranged reads), never its row groups
                return sum(pq.read_metadata(key, filesystem=opened.filesystem).num_rows for key in opened.remote)
            return sum(pq.read_metadata(path).num_rows for path in opened.files)
        except Exception:
            raise SourceError("not a Parquet file") from None
    lines, last = 0, b"\n"
    with opened.files[0].open("rb") as handle:
        while chunk := handle.read(1 << 22):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += 0 if last == b"\n" else 1
    return lines - (0 if spec.source.headerless else 1)


def scan(spec: DatasetSpec, opened: OpenedSource) -> pl.LazyFrame:
    """A lazy scan with the declared columns and types; DATE becomes days since 1970 (Int32) because OpenDP's
    plans compare with numeric literals, and NaN becomes null in nullable FLOAT64 columns (non-nullable ones
    are declared free of NaN, like of nulls, and are not rewritten: that would cost a pass per query)."""
    if spec.source.format is DataFormat.PARQUET:
        frame = pl.scan_parquet([str(p) for p in opened.files])
        frame = frame.select([pl.col(c.name).cast(POLARS_TYPES[c.type]) for c in spec.columns])
    else:
        names = [c.name for c in spec.columns]
        schema = {c.name: POLARS_TYPES[c.type] for c in spec.columns}
        if spec.source.headerless:
            frame = pl.scan_csv(str(opened.files[0]), has_header=False, separator=spec.source.delimiter,
                                new_columns=names, schema_overrides=schema)
        else:
            frame = pl.scan_csv(str(opened.files[0]), separator=spec.source.delimiter, schema_overrides=schema)
        frame = frame.select(names)
    converted = []
    for column in spec.columns:
        expr = pl.col(column.name)
        if column.type is ColumnType.DATE:
            expr = expr.cast(pl.Int32)
        elif column.type is ColumnType.FLOAT64 and column.nullable:
            expr = expr.fill_nan(None)
        converted.append(expr)
    return frame.with_columns(converted)
