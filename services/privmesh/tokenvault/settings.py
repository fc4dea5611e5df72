"""The vault's own configuration (the `service:` section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TokenVaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field(description="sqlite:///path or postgresql://... for fields, entries and rotations")
    max_batch_items: int = Field(1000, ge=1, le=1000, description="largest Tokenize/Detokenize/DeleteTokens batch")
    key_broker_target: str = Field("", description="host:port of key-broker (mTLS with this service's identity)")
    key_broker_identity: str | None = Field(None, description="SPIFFE ID key-broker must present (pinned); default: "
                                            "key-broker in this service's trust domain and namespace")
    key_broker_timeout_seconds: float = Field(10.0, gt=0, le=120)
    purge_interval_seconds: float = Field(60.0, gt=0, le=86400, description="how often expired entries are deleted")
    subject_key_deletion_waiting_seconds: int = Field(
        7 * 86400, ge=0, le=30 * 86400,
        description="waiting period of a shredded subject KEK's deletion: key-broker's minimum (local mesh: 0)")
    rotation_batch_size: int = Field(200, ge=1, le=10_000, description="entries re-encrypted per transaction")
    rotation_lease_seconds: float = Field(
        30.0, gt=0, le=3600, description="a running rotation whose process renewed no lease for this long is resumed "
                                         "by another process")
