"""Sources on S3 (boto3) against moto's S3 server on loopback: a Parquet object and a prefix of Parquet parts,
downloaded once per object version into the gateway's cache, then queried like local files; a Spark dataset's
Parquet stays on S3 (its footers give the schema and max_rows check)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
import polars as pl
import pytest

from privmesh.dpgateway.schema import Column, ColumnType, DataFormat, DatasetSpec, Engine, Source
from privmesh.dpgateway.source import SourceReader, row_count
from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.runtime.errors import read_error
from tests.conftest import spiffe
from tests.dpgateway.conftest import ANALYST, count_query, register_patients, rho


@pytest.fixture
def s3(moto_s3: tuple[str, Any]) -> tuple[str, Any]:
    moto_s3[1].create_bucket(Bucket="hospital-data")
    return moto_s3


async def test_parquet_on_s3_object_and_prefix(open_gateway, s3: tuple[str, Any], patients_frame: pl.DataFrame,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    endpoint, client = s3
    whole, half = tmp_path / "all.parquet", len(patients_frame) // 2
    patients_frame.write_parquet(whole)
    client.upload_file(str(whole), "hospital-data", "patients/all.parquet")
    for i, part in enumerate((patients_frame[:half], patients_frame[half:])):
        part.write_parquet(tmp_path / f"part{i}.parquet")
        client.upload_file(str(tmp_path / f"part{i}.parquet"), "hospital-data", f"parts/part{i}.parquet")
    gw = await open_gateway(s3_endpoint_url=endpoint, s3_region="us-east-1", max_rho_per_query=50)
    one = await register_patients(gw, "s3://hospital-data/patients/all.parquet", dataset_id="whole", cap=50.0)
    assert one.source.format == pb.DATA_FORMAT_PARQUET
    await register_patients(gw, "s3://hospital-data/parts/", dataset_id="split", cap=50.0)
    values = []
    for dataset in ("whole", "split"):
        release = (await gw.analyst.Query(pb.QueryRequest(query=count_query(f"datasets/{dataset}"),
                                                          privacy=rho(40.0)))).release
        values.append(release.rows[0].estimates[0].value)
    assert all(abs(v - len(patients_frame)) <= 3 for v in values)  # sigma ~0.1 at rho 40
    assert len(list((tmp_path / "cache").rglob("*.parquet"))) == 3  # downloaded once each


async def test_spark_parquet_on_s3_is_never_downloaded_and_max_rows_comes_from_the_footers(  # type: ignore[no-untyped-def]
        open_gateway, s3: tuple[str, Any], patients_frame: pl.DataFrame, tmp_path: Path) -> None:
    endpoint, client = s3
    half = len(patients_frame) // 2
    for i, part in enumerate((patients_frame[:half], patients_frame[half:])):
        part.write_parquet(tmp_path / f"part{i}.parquet")
        client.upload_file(str(tmp_path / f"part{i}.parquet"), "hospital-data", f"parts/part{i}.parquet")
    uri = "s3://hospital-data/parts/"
    spec = DatasetSpec("parts", Source(uri, DataFormat.PARQUET), (Column("age", ColumnType.INT64),),
                       engine=Engine.SPARK)
    opened = SourceReader(tmp_path / "reader", endpoint, "us-east-1").open(spec)
    assert opened.files == () and row_count(spec, opened) == len(patients_frame)  # both footers, read in place
    # The engine's Python is never started here: registration reads footers, and the query is refused first.
    gw = await open_gateway(s3_endpoint_url=endpoint, s3_region="us-east-1", spark_python=sys.executable)
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:  # the declared schema is checked against a footer
        await register_patients(gw, uri, dataset_id="wrong", engine=pb.DATASET_ENGINE_SPARK, columns=[
            pb.ColumnSchema(name="patient_id", type=pb.COLUMN_TYPE_STRING),
            pb.ColumnSchema(name="age", type=pb.COLUMN_TYPE_STRING)])
    assert [v.field for v in read_error(mismatch.value).violations] == ["dataset.columns[1]"]
    await register_patients(gw, uri, dataset_id="capped", engine=pb.DATASET_ENGINE_SPARK, max_rows=half)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.analyst.Query(pb.QueryRequest(query=count_query("datasets/capped"), privacy=rho(1.0)))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert read_error(refused.value).reason == "SOURCE_UNAVAILABLE"
    budget = (await gw.analyst.GetBudget(pb.GetBudgetRequest(dataset="datasets/capped",
                                                              analyst=spiffe(ANALYST)))).budget
    assert budget.spent.rho == budget.reserved.rho == 0  # refused before anything was reserved
    assert not list((tmp_path / "cache").rglob("*.parquet*"))  # nothing downloaded, not even in part
