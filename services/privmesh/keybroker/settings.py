"""The key broker's own configuration (the `service:` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsKmsSettings(_Strict):
    region: str = Field("us-east-1", min_length=1)
    endpoint_url: str | None = Field(None, description="a KMS-compatible endpoint (tests: moto); default AWS's")
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class AttestationSettings(_Strict):
    verifier_target: str | None = Field(None, description="host:port of the attestation-verifier (mTLS with this "
                                        "service's identity); judges attestation documents, serves its JWKS")
    verifier_identity: str | None = Field(None, description="SPIFFE ID the verifier must present (pinned); "
                                          "default: attestation-verifier in this service's trust domain and namespace")
    jwks_file: FilePath | None = Field(None, description="the verifier's result-token keys (JWKS JSON), for "
                                       "offline token verification; default: fetched from verifier_target")
    issuer: str = Field("privmesh-attestation-verifier", min_length=1, description="`iss` of result tokens")
    audience: str | None = Field(None, description="`aud` result tokens must carry; default: this service's "
                                 "SPIFFE ID from its certificate")
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class KeyBrokerSettings(_Strict):
    database: str = Field(description="sqlite:///path or postgresql://... for key metadata and policies")
    default_backend: Literal["local", "aws-kms"] = "local"
    keystore_file: Path | None = Field(None, description="the local backend's sealed keystore (created if absent)")
    root_key_file: Path | None = Field(None, description="32 raw bytes sealing the keystore; created (0600) if "
                                       "absent")
    root_key_env: str | None = Field(None, description="name of an environment variable holding the root key as "
                                     "base64 (wins over root_key_file)")
    aws_kms: AwsKmsSettings | None = Field(None, description="enables the aws-kms backend")
    attestation: AttestationSettings = Field(default_factory=AttestationSettings)
    min_deletion_waiting_seconds: int = Field(7 * 86400, ge=0, le=30 * 86400,
                                              description="shortest ScheduleKeyDeletion waiting period (KMS: 7 days)")
    sweep_seconds: float = Field(60.0, gt=0, le=3600,
                                 description="how often due deletions, expiries and rotations are applied")

    @model_validator(mode="after")
    def _backends(self) -> KeyBrokerSettings:
        if self.keystore_file is None and self.default_backend == "local":
            raise ValueError("keystore_file is required for the local backend")
        if self.keystore_file is not None and self.root_key_file is None and not self.root_key_env:
            raise ValueError("the local backend needs root_key_file or root_key_env")
        if self.default_backend == "aws-kms" and self.aws_kms is None:
            raise ValueError("default_backend aws-kms needs the aws_kms section")
        return self
