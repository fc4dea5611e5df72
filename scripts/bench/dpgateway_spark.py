"""dp-gateway's two engines on one machine: the same DP group-by (count, sum, mean per region, zCDP rho=1,
declared keys) over a generated Parquet table, on OpenDP/Polars (streaming engine, in process) and on Tumult
Analytics/Spark local[2] (the engine process the gateway drives). Each engine runs in its own child process
so that peak memory (the resident set of the child's whole process tree, JVM included, sampled every 0.2 s)
is its own; a query's seconds are the median of --repeats releases after one warm-up.

    .venv/bin/python scripts/bench/dpgateway_spark.py [--rows 10000000,50000000] [--dir /tmp/dpbench]

The last line is `ratio: <Spark s / Polars s at the largest size>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REGIONS = ["north", "south", "east", "west", "central", "coast", "hills", "plains"]
SQL = "SELECT region, COUNT(*), SUM(amount), AVG(amount) FROM sales GROUP BY region"
CHUNK = 2_000_000
ROOT = Path(__file__).resolve().parents[2]


def generate(folder: Path, rows: int) -> Path:
    """A directory of Parquet files (one per 2M rows), generated once per size."""
    import numpy as np
    import polars as pl

    target = folder / f"sales-{rows}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        frame = pl.DataFrame({"region": np.array(REGIONS)[rng.integers(0, len(REGIONS), n)],
                              "amount": rng.gamma(2.0, 60.0, n).clip(0, 1000)})
        frame.write_parquet(target / f"part-{start:012d}.parquet")
    (target / ".complete").touch()
    return target


def measure(engine: str, data: Path, rows: int, repeats: int, spark_python: str) -> dict[str, float]:
    """In the child: compile once, one warm-up release, then `repeats` timed releases."""
    from privmesh.dpgateway.engine import Budgeting, DatasetEngine
    from privmesh.dpgateway.loss import Loss
    from privmesh.dpgateway.plan import KeysMode, digest, validate_plan
    from privmesh.dpgateway.schema import Column, ColumnType, DataFormat, DatasetSpec, Engine, Source
    from privmesh.dpgateway.source import SourceReader
    from privmesh.dpgateway.spark_engine import EngineProcess, SparkDatasetEngine
    from privmesh.dpgateway.sql import parse_sql

    spec = DatasetSpec("sales", Source(f"{data}/", DataFormat.PARQUET), (
        Column("region", ColumnType.STRING, categories=tuple(REGIONS)),
        Column("amount", ColumnType.FLOAT64, bounds=(0.0, 1000.0))), max_rows=rows,
        engine=Engine.SPARK if engine == "spark" else Engine.POLARS)
    opened = SourceReader(Path(tempfile.mkdtemp())).open(spec)
    plan = validate_plan(spec, parse_sql(SQL).plan(spec, KeysMode.DECLARED, ()))
    budgeting = Budgeting(Loss(rho=1.0))
    runner: DatasetEngine | SparkDatasetEngine
    if engine == "spark":
        process = EngineProcess(spark_python, "local[2]")
        process.start()
        runner = SparkDatasetEngine(spec, opened, process)
    else:
        runner = DatasetEngine(spec, opened)
    key = digest(plan, {"rho": 1.0})
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        runner.release(runner.compile(key, plan, budgeting))
        if i:
            times.append(time.perf_counter() - started)
    return {"seconds": statistics.median(times)}


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_child(engine: str, data: Path, rows: int, repeats: int, spark_python: str) -> dict[str, float]:
    child = subprocess.Popen([sys.executable, __file__, "--child", engine, "--data", str(data), "--rows", str(rows),
                              "--repeats", str(repeats), "--spark-python", spark_python],
                             stdout=subprocess.PIPE, env={**os.environ, "POLARS_AUTO_NEW_STREAMING": "1"})
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(child.pid))
        time.sleep(0.2)
    assert child.stdout is not None
    out = child.stdout.read().decode().strip().splitlines()
    if child.returncode != 0 or not out:
        raise SystemExit(f"{engine} at {rows} rows failed ({child.returncode})")
    return {**json.loads(out[-1]), "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000000,50000000", help="comma-separated table sizes")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "dpbench-spark")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the generated tables")
    parser.add_argument("--child", choices=["polars", "spark"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--spark-python", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.data, int(args.rows), args.repeats, args.spark_python)))
        return
    spark_python = subprocess.run([str(ROOT / "scripts/dev/spark-env.sh")], check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1]
    sizes = [int(r) for r in args.rows.split(",")]
    results: dict[tuple[str, int], dict[str, float]] = {}
    print(f"query: {SQL} (zCDP rho=1, declared keys); Spark local[2]; median of {args.repeats} after a warm-up")
    try:
        for rows in sizes:
            data = generate(args.dir, rows)
            for engine in ("polars", "spark"):
                r = results[(engine, rows)] = run_child(engine, data, rows, args.repeats, spark_python)
                print(f"{engine:6s} {rows:>12,d} rows: {r['seconds']:8.2f} s/query  peak {r['peak_mb']:8.0f} MB",
                      flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    if len(sizes) > 1:
        for engine in ("polars", "spark"):
            first, last = results[(engine, sizes[0])], results[(engine, sizes[-1])]
            print(f"growth {engine} {sizes[0]:,d} -> {sizes[-1]:,d} rows: "
                  f"time x{last['seconds'] / first['seconds']:.2f}, memory x{last['peak_mb'] / first['peak_mb']:.2f}")
    largest = sizes[-1]
    print(f"ratio: {results[('spark', largest)]['seconds'] / results[('polars', largest)]['seconds']:.2f}")


if __name__ == "__main__":
    main()
