"""Policies from files, put at start: how a deployment pins its enclave image (the Helm chart renders PCR0..2 from
its values into such a file). A stored policy of the same name is replaced only when it differs, so restarts
and replicas do not add audit entries for nothing.

    name: prod-enclave
    allowed_pcr_sets:
      - description: enclave image v42
        pcrs: {0: "<96 hex digits>", 1: "...", 2: "..."}
    require_public_key: true        # also: allow_debug, require_nonce, max_document_age_seconds, description

An attestable AMI is pinned the same way, with `kind: NITRO_TPM` and the PCR4/PCR12 (standard boot) or PCR7
(Secure Boot) values its build published; list one set per AMI version still allowed to run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privmesh.attestation.policy import DEFAULT_MAX_DOCUMENT_AGE, InvalidPolicy, PcrSet, Policy
from privmesh.attestation.verifier_service import AttestationService


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PcrSetFile(_Strict):
    pcrs: dict[int, str]
    description: str = ""


class _PolicyFile(_Strict):
    name: str
    kind: Literal["NITRO_ENCLAVE", "NITRO_TPM"] = "NITRO_ENCLAVE"
    allowed_pcr_sets: tuple[_PcrSetFile, ...]
    allow_debug: bool = False
    require_nonce: bool = True
    require_public_key: bool = False
    max_document_age_seconds: float = Field(DEFAULT_MAX_DOCUMENT_AGE.total_seconds(), gt=0)
    description: str = ""


def load_policy_file(path: Path) -> Policy:
    """The policy in `path`, validated; raises InvalidPolicy naming the field (and the file)."""
    try:
        data = _PolicyFile.model_validate(yaml.safe_load(Path(path).read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise InvalidPolicy(str(path), f"not a policy file: {exc}") from None
    sets = []
    for i, pcr_set in enumerate(data.allowed_pcr_sets):
        pcrs = {}
        for index, value in pcr_set.pcrs.items():
            try:
                pcrs[index] = bytes.fromhex(value)
            except ValueError:
                raise InvalidPolicy(f"{path}: allowed_pcr_sets[{i}].pcrs[{index}]", "must be hex") from None
        sets.append(PcrSet(pcrs, pcr_set.description))
    policy = Policy(name=data.name, allowed_pcr_sets=sets, allow_debug=data.allow_debug,
                    max_document_age=timedelta(seconds=data.max_document_age_seconds),
                    require_nonce=data.require_nonce, require_public_key=data.require_public_key,
                    description=data.description, kind=data.kind)
    try:
        policy.validate()
    except InvalidPolicy as exc:
        raise InvalidPolicy(f"{path}: {exc.field}", exc.message) from None
    return policy


async def put_policy_files(service: AttestationService, paths: tuple[Path, ...]) -> None:
    """Puts each file's policy unless the stored one is already the same."""
    for path in paths:
        policy = load_policy_file(path)
        stored = await asyncio.to_thread(service.policies.get, policy.name)
        if stored is None or stored.policy != policy:
            await service.put_policy(policy, "")
