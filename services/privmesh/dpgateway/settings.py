"""The gateway's own configuration (the `service:` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DPGatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field(description="sqlite:///path or postgresql://... for datasets, the ledger and releases")
    cache_dir: Path = Field(description="where S3 sources are downloaded (per object version)")
    s3_endpoint_url: str | None = Field(None, description="an S3-compatible endpoint; None: AWS from the environment")
    s3_region: str | None = Field(None, description="the S3 region; None: from the environment")
    max_epsilon_per_query: float = Field(10.0, gt=0, le=1000)
    max_rho_per_query: float = Field(5.0, gt=0, le=1000)
    max_delta_per_query: float = Field(1e-5, ge=0, lt=1)
    retain_freed_memory_mb: int = Field(
        256, ge=0, le=1024, description="freed memory each malloc arena keeps for the next release (glibc); "
        "0: the C library's defaults (releases then fault their buffers in afresh, ~1.5x slower)")
    spark_python: str | None = Field(
        None, description="the Spark engine's Python (Tumult's venv, scripts/dev/spark-env.sh); None: no Spark engine")
    spark_master: str = Field("local[2]", description="the Spark master the engine's driver uses (k8s://... in a "
                              "cluster)")
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Spark settings of the engine's driver, over its defaults and "
        "spark-defaults.conf (e.g. spark.sql.shuffle.partitions: 1 for small tables)")
    stale_reservation_seconds: int = Field(
        900, ge=0, description="a reservation older than this at start-up belongs to a crashed process: charged")
