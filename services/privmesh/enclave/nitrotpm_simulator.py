"""A software NitroTPM: attestation documents of an EC2 instance booted from an attestable AMI, in the real
format (untagged COSE_Sign1, ES384, an indefinite-length payload map carrying `nitrotpm_pcrs`, 24 SHA-384
PCRs), signed by the same development CA as the enclave simulator, so production verifiers refuse them.

The payload's top-level map is written by hand because cbor2 only emits definite-length maps; every item
inside it is cbor2's.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime

import cbor2
from cryptography.hazmat.primitives import serialization

from privmesh.enclave.simulator import DevCa, aware, check_attestation_fields, cose_sign1, utcnow

TPM_PCR_COUNT = 24
DEFAULT_AMI = "privmesh-attestable-ami-simulated"
#: The PCRs AWS documents for attestable AMIs: PCR4 (boot manager code) with PCR12 (the boot command line)
#: for standard boot, PCR7 (the UEFI Secure Boot policy) for Secure Boot.
ATTESTABLE_AMI_PCRS = (4, 7, 12)


def ami_pcrs(ami: str | bytes) -> dict[int, bytes]:
    """PCR4, PCR7 and PCR12 of a simulated attestable AMI: the values its build would publish."""
    name = ami.encode() if isinstance(ami, str) else ami
    return {index: hashlib.sha384(b"privmesh-simulated-pcr%d:" % index + name).digest()
            for index in ATTESTABLE_AMI_PCRS}


def indefinite_map(items: Mapping[str, object]) -> bytes:
    """A CBOR indefinite-length map (0xBF, key/value items, 0xFF break), as the NitroTPM encodes its payload."""
    return b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in items.items()) + b"\xff"


class SimulatedNitroTpm:
    """A NitroTPM in software: `attest` returns what `nitro-tpm-attest` returns on a real instance."""

    def __init__(self, ca: DevCa | None = None, *, ami: str | bytes = DEFAULT_AMI,
                 pcrs: Mapping[int, bytes] | None = None, module_id: str | None = None,
                 now: Callable[[], datetime] = utcnow) -> None:
        self._now = now
        self.ca = ca or DevCa.generate(utcnow())
        self.module_id = module_id or f"{self.ca.instance_id}-tpm{secrets.token_hex(8)}"
        values = {index: bytes(48) for index in range(TPM_PCR_COUNT)}
        values[0] = hashlib.sha384(b"privmesh-simulated-firmware-code").digest()  # constant, as AWS documents
        values[1] = hashlib.sha384(b"privmesh-simulated-firmware-data").digest()
        values.update(ami_pcrs(ami))
        for index, value in (pcrs or {}).items():
            if not 0 <= index < TPM_PCR_COUNT or len(value) != 48:
                raise ValueError(f"PCR{index} must be 48 bytes with an index in 0..{TPM_PCR_COUNT - 1}")
            values[index] = bytes(value)
        self._pcrs = dict(sorted(values.items()))

    def describe_pcrs(self) -> dict[int, bytes]:
        """The PCRs this simulated instance reports."""
        return dict(self._pcrs)

    def attest(self, public_key: bytes | None = None, user_data: bytes | None = None,
               nonce: bytes | None = None) -> bytes:
        """A signed NitroTPM document binding the given fields (each at most 1024 bytes)."""
        check_attestation_fields(public_key, user_data, nonce)
        moment = aware(self._now())
        leaf = self.ca.issue_leaf(self.module_id, moment)
        payload = indefinite_map({  # the key order of real documents
            "module_id": self.module_id,
            "digest": "SHA384",
            "timestamp": int(moment.timestamp() * 1000),
            "nitrotpm_pcrs": dict(self._pcrs),
            "certificate": leaf.cert.public_bytes(serialization.Encoding.DER),
            "cabundle": self.ca.cabundle,
            "public_key": None if public_key is None else bytes(public_key),
            "user_data": None if user_data is None else bytes(user_data),
            "nonce": None if nonce is None else bytes(nonce),
        })
        return cose_sign1(leaf, payload)
