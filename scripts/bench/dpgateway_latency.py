"""Latency of count, sum and mean through the dp-gateway (its own process, mTLS, authz, ledger reservation
and commit, audit, OpenDP release) on 1M and 10M synthetic rows, against the same aggregation in plain
Polars in the same run.

Both sides read the same Parquet file on every query (neither caches the data: the gateway's OpenDP context
holds a lazy scan), both on Polars' streaming engine (the gateway's default for OpenDP's releases; plain
Polars is as fast on it as in-memory or faster for these queries, so the baseline is not handicapped). The
synthetic rows are one person each (no privacy-unit column, so nothing to truncate). Every gateway query
asks for a fresh release (force_new_release), so none is served from the ledger's cache; measurements are
compiled once (the first call) and reused. Calls alternate between gateway and plain Polars, and each
figure is a median.

Last line: `ratio: <gateway / plain at 10M>`, the sum of the three medians through the gateway over the sum
of the three plain medians (goal <= 3).

Usage: .venv/bin/python scripts/bench/dpgateway_latency.py [--repeats 15] [--sizes 1000000,10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from benchkit import RunningService, serve_in_process

from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.runtime.client import secure_channel

SERVICE = "privmesh.dpgateway.v1.DPGateway"
PLAIN_ENGINE = "streaming"
QUERIES: dict[str, tuple[pb.Aggregate, Callable[[pl.LazyFrame], pl.LazyFrame]]] = {
    "count": (pb.Aggregate(function=pb.AGGREGATE_FUNCTION_COUNT), lambda f: f.select(pl.len())),
    "sum": (pb.Aggregate(function=pb.AGGREGATE_FUNCTION_SUM, column="age"), lambda f: f.select(pl.col("age").sum())),
    "mean": (pb.Aggregate(function=pb.AGGREGATE_FUNCTION_MEAN, column="bmi"),
             lambda f: f.select(pl.col("bmi").mean())),
}


def synthetic(path: Path, rows: int) -> None:
    """Synthetic data only (numpy draws the rows, never any noise)."""
    rng = np.random.default_rng(rows)
    pl.DataFrame({"age": rng.integers(18, 91, rows), "bmi": rng.uniform(15.0, 45.0, rows)}).write_parquet(path)


Timings = dict[int, dict[str, tuple[float, float]]]  # rows -> query -> (gateway median, plain median)


async def measure(service: RunningService, files: dict[int, Path], repeats: int) -> Timings:
    results: Timings = {}
    async with secure_channel(service.target, service.identity, timeout_seconds=120, peer=service.peer) as channel:
        stub = dpgateway_pb2_grpc.DPGatewayStub(channel)
        me = service.pki.spiffe_id("client")
        for rows, path in files.items():
            dataset = f"bench_{rows}"
            await stub.RegisterDataset(pb.RegisterDatasetRequest(dataset_id=dataset, dataset=pb.Dataset(
                source=pb.DataSource(uri=str(path)), accounting=pb.PRIVACY_ACCOUNTING_ZCDP, max_rows=rows,
                columns=[pb.ColumnSchema(name="age", type=pb.COLUMN_TYPE_INT64, bounds=pb.Bounds(lower=18, upper=90)),
                         pb.ColumnSchema(name="bmi", type=pb.COLUMN_TYPE_FLOAT64,
                                         bounds=pb.Bounds(lower=15, upper=45))])))
            await stub.SetBudget(pb.SetBudgetRequest(dataset=f"datasets/{dataset}", analyst=me,
                                                     cap=pb.PrivacyLoss(rho=1e9)))
            results[rows] = {}
            for name, (aggregate, plain) in QUERIES.items():
                query = pb.StructuredQuery(dataset=f"datasets/{dataset}", aggregates=[aggregate])
                request = pb.QueryRequest(query=query,
                                          privacy=pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(rho=0.5)),
                                          force_new_release=True)
                await stub.Query(request)  # compiles and caches the measurement
                plain(pl.scan_parquet(path)).collect(engine=PLAIN_ENGINE)
                gateway_times, plain_times = [], []
                for _ in range(repeats):
                    began = time.perf_counter()
                    reply = await stub.Query(request)
                    gateway_times.append(time.perf_counter() - began)
                    assert not reply.release.cached and reply.release.charged.rho > 0
                    began = time.perf_counter()
                    plain(pl.scan_parquet(path)).collect(engine=PLAIN_ENGINE)
                    plain_times.append(time.perf_counter() - began)
                results[rows][name] = (statistics.median(gateway_times), statistics.median(plain_times))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", default="1000000,10000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        files = {rows: tmp / f"rows_{rows}.parquet" for rows in sizes}
        for rows, path in files.items():
            synthetic(path, rows)
        settings = {"database": f"sqlite:///{tmp / 'dpgateway.db'}", "cache_dir": str(tmp / "cache")}
        with serve_in_process("privmesh.dpgateway.server:DEFINITION", tmp, [f"{SERVICE}/*"], settings) as running:
            results = asyncio.run(measure(running, files, args.repeats))
    print(f"median latency over {args.repeats} alternating runs (Parquet read on every query by both sides, "
          f"plain Polars on its {PLAIN_ENGINE} engine)")
    print(f"{'rows':>10} {'query':>6} {'gateway ms':>11} {'plain ms':>9} {'ratio':>6}")
    for rows, by_query in results.items():
        for query, (gateway, plain) in by_query.items():
            print(f"{rows:>10} {query:>6} {gateway * 1e3:11.2f} {plain * 1e3:9.2f} {gateway / plain:6.2f}")
        total_gateway = sum(g for g, _ in by_query.values())
        total_plain = sum(p for _, p in by_query.values())
        print(f"{rows:>10} {'all':>6} {total_gateway * 1e3:11.2f} {total_plain * 1e3:9.2f} "
              f"{total_gateway / total_plain:6.2f}")
    largest = results[max(results)]
    ratio = sum(g for g, _ in largest.values()) / sum(p for _, p in largest.values())
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
