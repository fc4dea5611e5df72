"""A software NSM: real-format attestation documents signed by a development CA, for laptops and CI.

The documents mirror what a real NSM emits (untagged COSE_Sign1, ES384 with raw r||s, the payload's
key order and types, a root-first cabundle of root -> regional -> zonal -> instance, a fresh three-hour
P-384 leaf per document, and the same certificate extensions). The chain ends at a development root,
CN=privmesh-dev-nitro-root, which a verifier must be explicitly configured to trust; it is never the
AWS root, so a production verifier refuses these documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from privmesh.enclave.nsm import (
    MAX_ATTESTATION_FIELD,
    NSM_REQUEST_MAX_SIZE,
    PCR_COUNT,
    NsmError,
)

DEV_ROOT_COMMON_NAME = "privmesh-dev-nitro-root"
DEFAULT_IMAGE = "privmesh-enclave-simulated"
REGION = "dev-sim-1"
CA_FILE = "dev-ca.json"
ROOT_FILE = "root.pem"
_CA_FORMAT = "privmesh-dev-nitro-ca/1"
_LEVELS = ("root", "regional", "zonal", "instance")
_CURVE = ec.SECP384R1()
_HASH = hashes.SHA384()
PROTECTED_HEADER = cbor2.dumps({1: -35})  # {alg: ES384}, the bytes real documents carry (a1 01 38 22)
LEAF_LIFETIME = timedelta(hours=3)


def utcnow() -> datetime:
    """The default clock."""
    return datetime.now(timezone.utc)


def pcr_for_image(image: str | bytes) -> bytes:
    """PCR0 of a simulated enclave image: SHA-384 of the image name (a real PCR0 is the EIF's measurement)."""
    return hashlib.sha384(image.encode() if isinstance(image, str) else image).digest()


def image_pcrs(image: str | bytes) -> dict[int, bytes]:
    """PCR0..2 (image, kernel, application) of a simulated image, the set a policy pins."""
    name = image.encode() if isinstance(image, str) else image
    return {
        0: pcr_for_image(name),
        1: hashlib.sha384(b"privmesh-simulated-kernel").digest(),
        2: hashlib.sha384(b"privmesh-simulated-application:" + name).digest(),
    }


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privmesh development (untrusted)"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "privmesh-dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_INSTANCE_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class CaLevel:
    """One certificate of the chain with its private key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _crl_points() -> x509.CRLDistributionPoints:
    url = f"http://privmesh-dev-crl.invalid/crl/{uuid.uuid4()}.crl"
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    return x509.CRLDistributionPoints([point])


def _issue(
    level: str,
    subject: x509.Name,
    issuer: CaLevel | None,
    not_before: datetime,
    not_after: datetime,
) -> CaLevel:
    """Issue one certificate with the extensions, criticality and order the real chain's level carries."""
    key = ec.generate_private_key(_CURVE)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    extensions: list[tuple[x509.ExtensionType, bool]]  # (extension, critical) in the real order
    if issuer is None:  # root
        extensions = [(x509.BasicConstraints(ca=True, path_length=None), True), (ski, False), (_CA_USAGE, True)]
    else:
        issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
        if level in ("regional", "zonal"):
            extensions = [
                (x509.BasicConstraints(ca=True, path_length=2 if level == "regional" else 1), True),
                (aki, False),
                (ski, False),
                (_CA_USAGE, True),
                (_crl_points(), False),
            ]
        elif level == "instance":
            extensions = [
                (x509.BasicConstraints(ca=True, path_length=0), True),
                (_INSTANCE_USAGE, True),
                (ski, False),
                (aki, False),
            ]
        else:  # the document-signing leaf: no key identifiers, like the real one
            extensions = [(x509.BasicConstraints(ca=False, path_length=None), True), (_LEAF_USAGE, False)]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    signer = issuer.key if issuer else key
    return CaLevel(key, builder.sign(signer, _HASH))


class DevCa:
    """The development CA chain: root -> regional -> zonal -> instance, all ECDSA P-384."""

    def __init__(self, root: CaLevel, regional: CaLevel, zonal: CaLevel, instance: CaLevel) -> None:
        self.root, self.regional, self.zonal, self.instance = root, regional, zonal, instance

    @classmethod
    def generate(cls, now: datetime | None = None, *, lifetime: timedelta = timedelta(days=365)) -> DevCa:
        """Make a fresh chain valid from a day before `now`; the root lives ten years."""
        start = aware(now or utcnow()).replace(microsecond=0) - timedelta(days=1)
        root = _issue("root", _name(DEV_ROOT_COMMON_NAME), None, start, start + timedelta(days=3650))
        regional = _issue(
            "regional",
            _name(f"{secrets.token_hex(8)}.{REGION}.privmesh-dev.nitro-enclaves"),
            root,
            start,
            start + lifetime,
        )
        zonal = _issue(
            "zonal",
            _name(f"{secrets.token_hex(8)}.zonal.{REGION}.privmesh-dev.nitro-enclaves"),
            regional,
            start,
            start + lifetime,
        )
        instance_id = "i-0" + secrets.token_hex(8)
        instance = _issue(
            "instance",
            _name(f"{instance_id}.{REGION}.privmesh-dev.nitro-enclaves"),
            zonal,
            start,
            start + lifetime,
        )
        return cls(root, regional, zonal, instance)

    @property
    def instance_id(self) -> str:
        """The simulated parent instance's id (the first label of the instance certificate's CN)."""
        cn = self.instance.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return str(cn).split(".", 1)[0]

    @property
    def root_pem(self) -> bytes:
        """The development root certificate, PEM: what a verifier is explicitly configured with."""
        return self.root.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def root_sha256(self) -> str:
        """SHA-256 of the root's DER (lower-case hex): the fingerprint a verifier pins."""
        return hashlib.sha256(self.root.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def cabundle(self) -> list[bytes]:
        """DER certificates root-first, as real documents order them."""
        return [
            level.cert.public_bytes(serialization.Encoding.DER)
            for level in (self.root, self.regional, self.zonal, self.instance)
        ]

    def issue_leaf(self, module_id: str, now: datetime) -> CaLevel:
        """A fresh document-signing certificate valid for three hours, as the real NSM's."""
        now = aware(now).replace(microsecond=0)
        return _issue(
            "leaf",
            _name(f"{module_id}.{REGION}.privmesh"),
            self.instance,
            now - timedelta(seconds=3),
            now + LEAF_LIFETIME,
        )

    # --- persistence: a running mesh and a simulator process must agree on one root ---

    def to_json(self) -> bytes:
        """Serialise certificates and (unencrypted, development-only) keys."""
        levels = {}
        for name in _LEVELS:
            level: CaLevel = getattr(self, name)
            levels[name] = {
                "certificate": level.cert.public_bytes(serialization.Encoding.PEM).decode(),
                "private_key": level.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
            }
        return json.dumps({"format": _CA_FORMAT, "levels": levels}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DevCa:
        """Inverse of to_json."""
        doc = json.loads(data)
        if doc.get("format") != _CA_FORMAT:
            raise ValueError(f"not a {_CA_FORMAT} file")
        levels = []
        for name in _LEVELS:
            entry = doc["levels"][name]
            key = serialization.load_pem_private_key(entry["private_key"].encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{name} key is not an EC key")
            levels.append(CaLevel(key, x509.load_pem_x509_certificate(entry["certificate"].encode())))
        return cls(*levels)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DevCa:
        """Load a CA saved by load_or_create."""
        return cls.from_json((Path(directory) / CA_FILE).read_bytes())

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str], now: datetime | None = None) -> DevCa:
        """Load the CA in `directory`, or create it there; safe when several processes race."""
        path = Path(directory)
        target = path / CA_FILE
        if target.exists():
            ca = cls.load(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
            ca = cls.generate(now)
            tmp = path / f".{CA_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(ca.to_json())
            try:
                os.link(tmp, target)  # atomic create-if-absent: the first process to link wins
            except FileExistsError:
                ca = cls.load(path)
            finally:
                tmp.unlink()
        root = path / ROOT_FILE
        if not root.exists() or root.read_bytes() != ca.root_pem:
            tmp_root = path / f".{ROOT_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            tmp_root.write_bytes(ca.root_pem)
            os.replace(tmp_root, root)
        return ca


def check_attestation_fields(public_key: bytes | None, user_data: bytes | None, nonce: bytes | None) -> None:
    """The NSM's limits on what a caller may bind into a document."""
    for name, value in (("public_key", public_key), ("user_data", user_data), ("nonce", nonce)):
        if value is not None and not isinstance(value, bytes | bytearray):
            raise NsmError("InvalidArgument", f"{name} must be bytes")
        if value is not None and len(value) > MAX_ATTESTATION_FIELD:
            raise NsmError("InputTooLarge", f"{name} is longer than {MAX_ATTESTATION_FIELD} bytes")


def cose_sign1(leaf: CaLevel, payload: bytes) -> bytes:
    """An untagged COSE_Sign1 over `payload`, ES384 by the leaf key with a raw r||s signature."""
    to_sign = cbor2.dumps(["Signature1", PROTECTED_HEADER, b"", payload])
    r, s = decode_dss_signature(leaf.key.sign(to_sign, ec.ECDSA(_HASH)))
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return cbor2.dumps([PROTECTED_HEADER, {}, payload, signature])


class SimulatedNsm:
    """An NSM in software: same interface and document format as DeviceNsm, signed by a DevCa."""

    def __init__(
        self,
        ca: DevCa | None = None,
        *,
        image: str | bytes = DEFAULT_IMAGE,
        pcrs: Mapping[int, bytes] | None = None,
        debug: bool = False,
        module_id: str | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._now = now
        self.ca = ca or DevCa.generate(now())
        self.module_id = module_id or f"{self.ca.instance_id}-enc{secrets.token_hex(8)}"
        values = {index: bytes(48) for index in range(PCR_COUNT)}
        values[4] = hashlib.sha384(self.ca.instance_id.encode()).digest()  # real PCR4: parent instance id
        values.update(image_pcrs(image))
        for index, value in (pcrs or {}).items():
            if not 0 <= index < 32 or len(value) != 48:
                raise ValueError(f"PCR{index} must be 48 bytes with an index in 0..31")
            values[index] = bytes(value)
        if debug:  # a debug-mode enclave reports PCR0..2 as zero
            values.update({0: bytes(48), 1: bytes(48), 2: bytes(48)})
        self._pcrs = dict(sorted(values.items()))

    @classmethod
    def from_ca_dir(
        cls,
        directory: str | os.PathLike[str],
        *,
        image: str | bytes = DEFAULT_IMAGE,
        pcrs: Mapping[int, bytes] | None = None,
        debug: bool = False,
        module_id: str | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> SimulatedNsm:
        """A simulator whose CA lives in `directory` (created on first use), shared with the mesh."""
        ca = DevCa.load_or_create(directory, now())
        return cls(ca, image=image, pcrs=pcrs, debug=debug, module_id=module_id, now=now)

    @property
    def root_pem(self) -> bytes:
        """The development root (PEM) a verifier must be explicitly configured with."""
        return self.ca.root_pem

    @property
    def root_sha256(self) -> str:
        """The development root's SHA-256 fingerprint (lower-case hex)."""
        return self.ca.root_sha256

    @property
    def root_certificate(self) -> x509.Certificate:
        """The development root certificate."""
        return self.ca.root.cert

    def describe_pcrs(self) -> dict[int, bytes]:
        """The PCRs this simulated enclave reports."""
        return dict(self._pcrs)

    def attest(
        self, public_key: bytes | None = None, user_data: bytes | None = None, nonce: bytes | None = None
    ) -> bytes:
        """Produce a signed document in exactly the real NSM's format."""
        check_attestation_fields(public_key, user_data, nonce)
        now = aware(self._now())
        leaf = self.ca.issue_leaf(self.module_id, now)
        payload = cbor2.dumps(
            {  # the key order and types of real documents
                "module_id": self.module_id,
                "digest": "SHA384",
                "timestamp": int(now.timestamp() * 1000),
                "pcrs": dict(self._pcrs),
                "certificate": leaf.cert.public_bytes(serialization.Encoding.DER),
                "cabundle": self.ca.cabundle,
                "public_key": None if public_key is None else bytes(public_key),
                "user_data": None if user_data is None else bytes(user_data),
                "nonce": None if nonce is None else bytes(nonce),
            }
        )
        return cose_sign1(leaf, payload)

    def process_raw(self, request: bytes) -> bytes:
        """Answer a raw CBOR NSM request as the device would (lets DeviceNsm be tested end to end)."""
        try:
            if len(request) > NSM_REQUEST_MAX_SIZE:
                raise NsmError("InputTooLarge")
            try:
                message = cbor2.loads(request)
            except Exception as exc:
                raise NsmError("InvalidArgument") from exc
            body = message.get("Attestation") if isinstance(message, dict) and len(message) == 1 else None
            if not isinstance(body, dict):
                raise NsmError("InvalidOperation", "the simulator answers Attestation requests only")
            document = self.attest(
                public_key=body.get("public_key"), user_data=body.get("user_data"), nonce=body.get("nonce")
            )
            return cbor2.dumps({"Attestation": {"document": document}})
        except NsmError as exc:
            return cbor2.dumps({"Error": exc.code})
