"""The serverless vault's configuration, from the function's environment (PRIVMESH_*), validated once per
cold start; the caching bounds are key-broker's."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from privmesh.keybroker.servicer import MAX_CACHE_AGE


class EntrySettings(BaseSettings):
    """What every function needs: the mesh's policy and principal form, and its service's audit chain."""

    model_config = SettingsConfigDict(env_prefix="PRIVMESH_", extra="ignore", frozen=True)

    authz_policy: str = Field(description="the mesh's authorization policy file (YAML), packaged with the function")
    trust_domain: str = Field("privmesh.local", min_length=1, description="of the principals IAM callers map to")
    direct_principal: str = Field("", description="mesh principal of direct invocations (empty: refused)")
    s3_principal: str = Field("", description="mesh principal of S3 batch files (empty: refused)")
    audit_database: str = Field(description="the token-vault audit chain's database (postgresql://...)")
    audit_signing_key: str = Field(repr=False, description="token-vault's audit signing key (Ed25519, PEM)")
    audit_checkpoint_every: int = Field(100, ge=1, le=100_000)
    max_body_bytes: int = Field(1_048_576, ge=1024, le=6_291_456, description="largest request (Lambda: 6 MiB)")


class ServerlessSettings(EntrySettings):
    """The vault functions'."""

    table: str = Field(min_length=3, description="the vault's DynamoDB table")
    region: str = Field("us-east-1", min_length=1)
    dynamodb_endpoint: str | None = Field(None, description="a DynamoDB-compatible endpoint (tests: moto)")
    kms_endpoint: str | None = Field(None, description="a KMS-compatible endpoint (tests: moto)")
    s3_endpoint: str | None = Field(None, description="an S3-compatible endpoint (tests: moto)")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_batch_items: int = Field(1000, ge=1, le=1000)
    max_file_bytes: int = Field(16 * 1_048_576, ge=1024, le=1 << 30, description="largest S3 batch file")
    cache_max_age_seconds: float = Field(300.0, ge=0, le=MAX_CACHE_AGE.total_seconds(),
                                         description="reuse of a plaintext data key across warm invocations")
    cache_max_messages: int = Field(100_000, ge=1, le=2 ** 32)


class FheEntrySettings(EntrySettings):
    """The scoring function's: fhe-inference's own `service:` section (FheSettings), whose database and key_dir
    are the mesh's (PostgreSQL, and an EFS access point mounted on the function), so that sessions registered
    with the service score here."""

    fhe_config: str = Field(description="a YAML file with fhe-inference's service settings")


class FheJobSettings(FheEntrySettings):
    """The job function's: the scoring function's, and the bucket of job inputs and results."""

    bucket: str = Field(min_length=3, description="the bucket of job inputs (fhe-jobs/...) and results")
    region: str = Field("us-east-1", min_length=1)
    s3_endpoint: str | None = Field(None, description="an S3-compatible endpoint (tests: moto)")
    timeout_seconds: float = Field(10.0, gt=0, le=60)
    max_object_bytes: int = Field(256 * 1_048_576, ge=1024, le=1 << 34,
                                  description="largest input object, checked before it is read")
