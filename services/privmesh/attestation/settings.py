"""The verifier's own configuration (the `service:` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, FilePath


class AttestationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field(description="sqlite:///path or postgresql://... for policies and challenges")
    trust_aws_nitro_root: bool = Field(True, description="pin the AWS Nitro Enclaves root by its SHA-256")
    dev_root_files: tuple[FilePath, ...] = Field(
        (), description="development roots (the enclave simulator's); for laptops and CI only, never production")
    token_signing_key_file: Path = Field(description="EC P-256 key (PEM) that signs result tokens; created if absent")
    issuer: str = Field("privmesh-attestation-verifier", min_length=1, description="`iss` of result tokens")
    token_ttl_seconds: int = Field(300, ge=10, le=3600)
    policy_files: tuple[FilePath, ...] = Field(
        (), description="policies (YAML, see attestation/policy_files.py) put at start, e.g. the PCRs of the "
                        "deployment's enclave image; a stored policy of the same name is replaced")
