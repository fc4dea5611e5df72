"""The Spark engine process: reads requests (protocol.py) on stdin, answers each with Tumult Analytics on
Spark, one JSON line on stdout. Runs with the Tumult venv only (scripts/dev/spark-env.sh), so Tumult's pins
never meet the gateway's; the gateway starts it (`python -m privmesh.dpgateway.spark.worker`) and never
trusts it with the ledger: budgets arrive already reserved, the worker only spends them.

Row filters, null fills, BOOL-to-string keys (Tumult has no boolean columns) and VARIANCE's clamped squares
run on the Spark DataFrame before Tumult's Session is built: all are row-wise, so neighbouring tables stay
neighbours and the guarantee Tumult proves for the Session holds for the source. One Session per request holds
the exact sum of the components' shares and each component is evaluated with exactly its share (sequential
composition, the ledger's rule). Error replies name a class, never an exception text (it may quote data)."""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from typing import IO, Any

from privmesh.dpgateway.spark import protocol as p

GAUSSIAN = ("GAUSSIAN", "DISCRETE_GAUSSIAN")  # Tumult reports sigma^2 for these, the scale b otherwise


def _exact(value: Fraction) -> Any:
    import sympy  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from tmlt.core.utils.exact_number import ExactNumber  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return ExactNumber(sympy.Rational(value.numerator, value.denominator))


def _budget(accounting: str, components: list[p.ComponentSpec]) -> Any:
    """Tumult's budget for the exact sum of the components' shares (one of them: its own share)."""
    from tmlt.analytics import ApproxDPBudget, PureDPBudget, RhoZCDPBudget  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def total(name: str) -> Any:
        return _exact(sum((Fraction(getattr(c, name)) for c in components), Fraction(0)))

    if accounting == "ZCDP":
        return RhoZCDPBudget(total("rho"))
    if accounting == "PURE_DP":
        return PureDPBudget(total("epsilon"))
    return ApproxDPBudget(total("epsilon"), total("delta"))


def _value(value: Any, kind: str) -> Any:
    """A protocol value as the source holds it."""
    return datetime.date.fromisoformat(value) if kind == "DATE" and isinstance(value, str) else value


def _key(value: Any, kind: str) -> Any:
    """A group key as the Session's frame holds it (BOOL as "true"/"false": Tumult has no boolean columns)."""
    return ("true" if value else "false") if kind == "BOOL" and isinstance(value, bool) else _value(value, kind)


def _out(value: Any, kind: str = "") -> Any:
    if kind == "BOOL" and isinstance(value, str):
        return value == "true"
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


SPARK_TYPES = {"BOOL": "boolean", "INT64": "bigint", "FLOAT64": "double", "STRING": "string", "DATE": "date"}


def squared_column(c: p.ComponentSpec) -> str:
    """The derived column a sum_of_squares component sums (never a declared name: those have no '^')."""
    return f"{c.column}^2"


def _frame(spark: Any, req: p.ReleaseRequest) -> Any:
    """The source, filtered, with only the columns the Session needs; nulls filled where the owner declared a
    fill, BOOL columns as strings, and a clamped square per sum_of_squares component. All are row-wise maps."""
    from pyspark.sql import functions as F  # type: ignore[import-untyped,import-not-found,unused-ignore]

    kinds = {c.name: c for c in req.columns}
    uri = req.uri.removeprefix("file://")
    uri = "s3a://" + uri[5:] if uri.startswith("s3://") else uri
    if req.format == "CSV":
        schema = ", ".join(f"`{c.name}` {SPARK_TYPES[c.type]}" for c in req.columns)
        df = spark.read.csv(uri, schema=schema, header=True, sep=req.delimiter)
    else:
        df = spark.read.parquet(uri)
    kept = {req.unit_column} | set(req.group_by) | {c.column for c in req.components}
    kept.discard("")
    needed = kept | {f.column for f in req.filters}
    df = df.select(*[F.col(n).cast(SPARK_TYPES[kinds[n].type]).alias(n) for n in sorted(needed)])
    for f in req.filters:
        df = df.filter(_condition(F.col(f.column), f, kinds[f.column].type))
    columns = []
    for name in sorted(kept):
        column, col = kinds[name], F.col(name)
        if column.nullable and column.fill is not None and name != req.unit_column:
            col = F.coalesce(col, F.lit(_value(column.fill, column.type)))
        if column.type == "BOOL":
            col = F.when(col, F.lit("true")).when(~col, F.lit("false"))
        columns.append(col.alias(name))
    for c in req.components:
        if c.role == "sum_of_squares":
            low, high = c.square_of
            clamped = F.least(F.greatest(F.col(c.column).cast("double"), F.lit(low)), F.lit(high))
            columns.append((clamped * clamped).alias(squared_column(c)))
    return df.select(*columns)


def _condition(col: Any, f: p.FilterSpec, kind: str) -> Any:
    values = [_value(v, kind) for v in f.values]
    op = f.operator
    if op == "IS_NULL":
        return col.isNull()
    if op == "IS_NOT_NULL":
        return col.isNotNull()
    if op in ("IN", "NOT_IN"):
        found = col.isin(values)
        return found if op == "IN" else ~found
    comparisons = {"EQUAL": col.__eq__, "NOT_EQUAL": col.__ne__, "LESS": col.__lt__, "LESS_OR_EQUAL": col.__le__,
                   "GREATER": col.__gt__, "GREATER_OR_EQUAL": col.__ge__}
    return comparisons[op](values[0])


def _session(df: Any, req: p.ReleaseRequest, budget: Any) -> Any:
    from tmlt.analytics import AddOneRow, AddRowsWithID, Session  # type: ignore[import-untyped,import-not-found,unused-ignore]

    change = AddRowsWithID(id_column=req.unit_column) if req.unit_column else AddOneRow()
    return Session.from_dataframe(privacy_budget=budget, source_id="rows", dataframe=df, protected_change=change)


def _query(req: p.ReleaseRequest, c: p.ComponentSpec, keyset: Any) -> Any:
    from tmlt.analytics import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        MaxGroupsPerID,
        MaxRowsPerGroupPerID,
        MaxRowsPerID,
        QueryBuilder,
    )

    builder = QueryBuilder("rows")
    if req.unit_column:
        builder = builder.enforce(MaxRowsPerID(req.max_contributions))
        if len(req.group_by) == 1 and 0 < req.max_groups < req.max_contributions:  # Tumult picks the tighter
            builder = builder.enforce(MaxGroupsPerID(req.group_by[0], req.max_groups)).enforce(
                MaxRowsPerGroupPerID(req.group_by[0], req.max_contributions))
    if c.role == "keys":
        return builder.get_groups(list(req.group_by))
    if c.role == "count" and c.column:  # COUNT(column) counts non-null values
        builder = builder.filter(f"`{c.column}` IS NOT NULL")
    grouped = builder.groupby(keyset) if req.group_by else builder
    if c.role == "count":
        return grouped.count(name=c.name)
    if c.role == "quantile":
        return grouped.quantile(c.column, c.quantile, c.lower, c.upper, name=c.name)
    low, high = (int(c.lower), int(c.upper)) if c.integer else (c.lower, c.upper)
    column = squared_column(c) if c.role == "sum_of_squares" else c.column
    return grouped.sum(column, low, high, name=c.name)


def _noise(info: list[dict[str, Any]]) -> tuple[str, float]:
    if not info:
        return "NONE", 0.0
    mechanism = info[0]["noise_mechanism"].name
    parameter = float(info[0]["noise_parameter"])
    return mechanism, math.sqrt(parameter) if mechanism in GAUSSIAN else parameter


def release(spark: Any, req: p.ReleaseRequest) -> p.ReleaseResponse:
    from tmlt.analytics import KeySet  # type: ignore[import-untyped,import-not-found,unused-ignore]

    kinds = {c.name: c.type for c in req.columns}
    key_kinds = [kinds[n] for n in req.group_by]
    try:
        df = _frame(spark, req)
    except Exception:
        return p.ReleaseResponse(False, error="SOURCE_UNAVAILABLE")
    keyset = (KeySet.from_tuples([tuple(_key(v, kinds[n]) for v, n in zip(key, req.group_by, strict=True))
                                  for key in req.keys], list(req.group_by)) if req.group_by and req.keys else None)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    results: list[p.ComponentResult] = []
    session = _session(df, req, _budget(req.accounting, req.components))
    for c in req.components:
        budget = _budget(req.accounting, [c])
        if not req.evaluate and c.role != "keys" and req.group_by and keyset is None:
            results.append(p.ComponentResult(c.name, "UNKNOWN", 0.0))  # private keys: none known before a release
            continue
        query = _query(req, c, keyset)
        mechanism, scale = _noise(session._noise_info(query, budget))
        results.append(p.ComponentResult(c.name, mechanism, scale))
        if not req.evaluate:
            continue
        frame = session.evaluate(query, budget)
        if c.role == "keys":
            keyset = KeySet.from_dataframe(frame)
            for r in frame.collect():
                rows.setdefault(tuple(_out(r[n], k) for n, k in zip(req.group_by, key_kinds, strict=True)), {})
            continue
        for r in frame.collect():
            key = tuple(_out(r[n], k) for n, k in zip(req.group_by, key_kinds, strict=True))
            rows.setdefault(key, {})[c.name] = _out(r[c.name])
    out = [{**dict(zip(req.group_by, key, strict=True)), **values} for key, values in rows.items()]
    return p.ReleaseResponse(True, out, results, data_read=req.evaluate)


def serve(spark: Any, requests: Iterator[bytes], out: IO[bytes]) -> None:
    for line in requests:
        if len(line) > p.MAX_LINE:
            reply = p.ReleaseResponse(False, error="INVALID")
        else:
            try:
                req = p.decode_request(line)
            except (ValueError, TypeError, KeyError):
                reply = p.ReleaseResponse(False, error="INVALID")
            else:
                try:
                    reply = release(spark, req)
                except Exception:  # never the text: Spark's messages may quote values
                    reply = p.ReleaseResponse(False, error="RELEASE_FAILED", data_read=True)
        out.write(p.encode(reply))
        out.flush()


def main() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # only protocol lines on the pipe, whatever a library prints
    warehouse = tempfile.mkdtemp(prefix="privmesh-spark-")
    from pyspark.sql import SparkSession  # type: ignore[import-untyped,import-not-found,unused-ignore]

    conf = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
            **json.loads(os.environ.get("PRIVMESH_SPARK_CONF") or "{}"),
            "spark.sql.warehouse.dir": warehouse}  # Tumult's temp tables
    builder = SparkSession.builder.master(os.environ.get("PRIVMESH_SPARK_MASTER", "local[2]")).appName(
        "privmesh-dp-engine")
    for name, value in conf.items():
        builder = builder.config(name, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    out.write(b'{"ready":true}\n')
    out.flush()
    serve(spark, iter(sys.stdin.buffer.readline, b""), out)
    spark.stop()
    shutil.rmtree(warehouse, ignore_errors=True)


if __name__ == "__main__":
    main()
