"""Sources on S3 (boto3) against moto's S3 server on loopback: a Parquet object and a prefix of Parquet parts,
downloaded once per object version into the gateway's cache, then queried like local files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from tests.dpgateway.conftest import count_query, register_patients, rho


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
