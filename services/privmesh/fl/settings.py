"""The coordinator's own configuration (the `service:` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, FilePath, model_validator


class SuperLinkTls(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: FilePath = Field(description="CA bundle participants use to verify the SuperLink")
    cert_file: FilePath = Field(description="the SuperLink's TLS certificate (SANs: the advertised host)")
    key_file: FilePath = Field(description="its private key; never logged")


class FlareSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field("127.0.0.1:0", pattern=r"^[^:]+:\d{1,5}$",
                         description="host:port the FLARE server binds (that host only) and sites dial; the host is "
                         "the server's certificate name; port 0 picks one at first start (kept in its kit)")
    directory: Path | None = Field(None, description="the FLARE CA state (mode 0700), the server's and the "
                                   "coordinator's admin kits, the server workspace; default <server.state_dir>/flare")
    cc_policy: str | None = Field(None, min_length=1, description="attestation-verifier policy every FLARE site's "
                                  "fresh Nitro evidence must meet, at registration and before each job (FLARE's CC "
                                  "manager with privmesh's Nitro authorizer); needs attestation_verifier_target; "
                                  "absent: sites present no evidence to FLARE")
    bind_host: str | None = Field(None, pattern=r"^[^:\s]+$",
                                  description="the interface the FLARE server listens on when `address` names "
                                  "another host that forwards to it (a load balancer): e.g. 0.0.0.0 in a pod; "
                                  "default: the host of `address`")
    admin_port: int | None = Field(None, ge=1, le=65535,
                                   description="FLARE's admin API on a port of its own, bound to 127.0.0.1 (only "
                                   "this coordinator administers the server); default: the FL port (one listener)")

    @model_validator(mode="after")
    def _admin_port_is_its_own(self) -> FlareSettings:
        if self.admin_port is not None and self.address.endswith(f":{self.admin_port}"):
            raise ValueError("flare.admin_port must differ from the port of flare.address")
        return self


class FlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field(description="sqlite:///path or postgresql://... for federations, participants, runs, "
                          "events and encrypted models")
    superlink_dir: Path | None = Field(None, description="the SuperLink's state database, app cache and log; "
                                       "default: <server.state_dir>/superlink")
    fleet_address: str = Field("127.0.0.1:0", pattern=r"^[^:]+:\d{1,5}$",
                               description="where the SuperLink's Fleet API listens; port 0 picks one at start")
    advertised_fleet_address: str | None = Field(None, description="what participants dial; default fleet_address")
    superlink_tls: SuperLinkTls | None = Field(None, description="the SuperLink's TLS; default: the mesh "
                                               "certificate of this service")
    key_broker_target: str = Field(description="host:port of key-broker (mTLS with this service's identity)")
    key_broker_identity: str | None = Field(None, description="SPIFFE ID key-broker must present (pinned); default: "
                                            "key-broker in this service's trust domain and namespace")
    default_model_key: str = Field("aliases/fl-models", min_length=1, description="key-broker key for trained "
                                   "models when a federation names none; an alias is created on first use")
    attestation_verifier_target: str | None = Field(None, description="host:port of attestation-verifier; "
                                                    "required for federations that ask for attestation")
    attestation_verifier_identity: str | None = Field(None, description="SPIFFE ID attestation-verifier must "
                                                      "present (pinned); default: in this service's mesh")
    report_address: str | None = Field(None, description="where the ServerApp reaches this service; default: "
                                       "server.listen (which then needs a fixed port)")
    flare: FlareSettings | None = Field(None, description="run a FLARE server for federations with engine FLARE; "
                                        "absent: only Flower federations")
    call_timeout_seconds: float = Field(10.0, gt=0, le=120, description="deadline of calls to peers")
