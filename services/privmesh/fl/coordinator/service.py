"""The coordinator's domain logic: federations, admission of participants into the SuperLink, runs and their
events, and encrypted models. Everything security-relevant is audited (admissions, refusals, runs, rounds, model
fetches; never weights or keys), and every mutation is all-or-nothing across the store and the SuperLink."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.fl.app.report import decode_arrays
from privmesh.fl.app.spec import RunSpec
from privmesh.fl.coordinator import federations
from privmesh.fl.coordinator.admission import MAX_DOCUMENT_BYTES, Admission, AttestationRefused
from privmesh.fl.coordinator.endorsed import check_audit_segment, endorsed_csr
from privmesh.fl.coordinator.fab import build_fab
from privmesh.fl.coordinator.keys import InvalidKey, parse_public_key
from privmesh.fl.coordinator.store import ACTIVE, Conflict, CoordinatorStore, StoredEnvelope, request_digest
from privmesh.fl.coordinator.superlink import SuperLink, SuperLinkError
from privmesh.fl.coordinator.vault import ModelVault
from privmesh.fl.v1 import fl_pb2, reporter_pb2
from privmesh.runtime.audit.log import AuditLog

if TYPE_CHECKING:  # FLARE is an optional extra: imported only where a FLARE server is configured
    from privmesh.fl.flare.server import FlareServer
from privmesh.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unavailable,
)

log = logging.getLogger("privmesh.fl")
TERMINAL = (fl_pb2.RUN_STATE_SUCCEEDED, fl_pb2.RUN_STATE_STOPPED, fl_pb2.RUN_STATE_FAILED)
MAX_MODEL_BYTES = 64 * 1024 * 1024


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


PARTICIPANT_NAME = "federations/{federation}/participants/{participant}"
FLARE_ACTION = re.compile(rb"\[A:([^\] ]+)")
FLARE_FOLD_SECONDS = 60.0  # and at the end of every FLARE run
FLARE_POLLING = {"check_status", "get_job_meta", "_logout", "_cert_login"}
RUN_NAME = "federations/{federation}/runs/{run}"
# PrivacySpent.unnoised_aggregate_seen_by with distributed noise: the ServerApp unmasks a sum already noised.
UNNOISED_SEEN_BY_NOBODY = "nobody"


def _key_of(name: str, field: str, template: str) -> list[str]:
    """The pieces of a resource name shaped as `template` (e.g. "federations/{federation}/runs/{run}"); a
    name of another kind, or with an empty segment, is INVALID_ARGUMENT naming `field`."""
    pieces, expected = name.split("/"), template.split("/")
    if len(pieces) != len(expected) or any(not p for p in pieces) or any(
            want != got for want, got in zip(expected[::2], pieces[::2], strict=True)):
        raise InvalidArgument.single(field, f"must be a {template} name")
    return pieces


def federation_of(name: str) -> str:
    return "/".join(name.split("/")[:2])


def flare_site_name(participant: str) -> str:
    """The FLARE site of "federations/{f}/participants/{p}": "{f}_{p}" (ids never hold '_', so it is unique)."""
    pieces = participant.split("/")
    return f"{pieces[1]}_{pieces[3]}"


@dataclass(frozen=True)
class CoordinatorOptions:
    default_model_key: str
    fleet_address: str  # what participants' SuperNodes dial
    root_certificates_pem: str  # verifies the SuperLink's TLS certificate
    monitor_interval: float = 1.0


class CoordinatorService:
    def __init__(self, store: CoordinatorStore, superlink: SuperLink, audit: AuditLog, vault: ModelVault,
                 admission: Admission, options: CoordinatorOptions, flare: FlareServer | None = None) -> None:
        self.store = store
        self.superlink = superlink
        self.flare = flare
        self.audit = audit
        self.vault = vault
        self.admission = admission
        self.options = options
        self._changed: dict[str, asyncio.Condition] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._folded_at = 0.0
        self._site_audit_lock = asyncio.Lock()

    # --- federations ---------------------------------------------------------------------------------------
    async def _earlier(self, request_id: str, digest: str) -> str | None:
        earlier = await asyncio.to_thread(self.store.earlier_request, request_id)
        if earlier is None:
            return None
        if earlier[0] != digest:
            raise AlreadyExists("REQUEST_ID_CONFLICT", "request_id was used for a different request")
        return earlier[1]

    async def create_federation(self, request: fl_pb2.CreateFederationRequest, creator: str) -> fl_pb2.Federation:
        digest = request_digest(request)
        earlier = await self._earlier(request.request_id, digest)
        if earlier is not None:
            return await self.get_federation(earlier)
        f = fl_pb2.Federation()
        f.CopyFrom(request.federation)
        federations.validate(request.federation_id, f)
        if f.admission.attestation_policy and not await self.admission.policy_exists(f.admission.attestation_policy):
            raise InvalidArgument.single("federation.admission.attestation_policy",
                                         "attestation-verifier knows no such policy", "ATTESTATION_POLICY_NOT_FOUND")
        f.name = f"federations/{request.federation_id}"
        f.model_key = f.model_key or self.options.default_model_key
        projected = federations.projected_epsilon(f)
        if projected is None:
            f.ClearField("projected_epsilon")
        else:
            f.projected_epsilon = projected
        if f.engine == fl_pb2.FL_ENGINE_FLARE:
            if self.flare is None:
                raise InvalidArgument.single("federation.engine", "this coordinator runs no FLARE server (set "
                                             "service.flare)", "ENGINE_FEATURE_UNSUPPORTED")
            p = self.flare.config.provisioner
            f.flare.CopyFrom(fl_pb2.FlareEndpoint(server_address=self.flare.address, project=p.project,
                                                  root_certificate_pem=p.root_certificate()))
        else:
            f.engine = fl_pb2.FL_ENGINE_FLOWER
            f.superlink.CopyFrom(fl_pb2.SuperLinkEndpoint(fleet_address=self.options.fleet_address,
                                                          root_certificates_pem=self.options.root_certificates_pem))
        f.creator = creator
        f.create_time.CopyFrom(_now())
        if await asyncio.to_thread(self.store.federation, f.name) is not None:
            raise AlreadyExists("FEDERATION_ALREADY_EXISTS", f"{f.name} already exists")
        details = {"engine": fl_pb2.FlEngine.Name(f.engine),
                   "strategy": f.strategy.WhichOneof("algorithm") or "", "num_rounds": str(f.num_rounds),
                   "min_participants": str(f.min_participants),
                   "secure_aggregation": str(f.HasField("secure_aggregation")).lower(),
                   "differential_privacy": str(f.HasField("differential_privacy")).lower(),
                   "require_attestation": str(f.admission.require_attestation).lower()}
        await self.audit.append("CreateFederation", resource=f.name, details=details)
        try:
            await asyncio.to_thread(self.store.create_federation, f, request.request_id, digest)
        except Conflict:
            raise AlreadyExists("FEDERATION_ALREADY_EXISTS", f"{f.name} already exists") from None
        return f

    async def get_federation(self, name: str, field: str = "name") -> fl_pb2.Federation:
        _key_of(name, field, "federations/{federation}")
        found = await asyncio.to_thread(self.store.federation, name)
        if found is None:
            raise NotFound("FEDERATION_NOT_FOUND", f"no federation named {name!r}")
        return found

    async def list_federations(self, after: str, limit: int) -> list[fl_pb2.Federation]:
        return await asyncio.to_thread(self.store.federations, after, limit)

    # --- participants --------------------------------------------------------------------------------------
    async def _refused(self, resource: str, reason: str, details: dict[str, str], error: ServiceError
                       ) -> ServiceError:
        """Audits a refused admission and returns the error to raise."""
        await self.audit.append("RegisterParticipant", resource=resource, outcome="DENIED",
                                details={"reason": reason, **details})
        return error

    async def register_participant(self, request: fl_pb2.RegisterParticipantRequest,
                                   registrant: str) -> fl_pb2.Participant:
        federation = await self.get_federation(request.parent, "parent")
        name = f"{request.parent}/participants/{request.participant_id}"
        if not federations.ID_PATTERN.match(request.participant_id):
            raise InvalidArgument.single("participant_id", "lower-case letters, digits and '-', 1..63 characters, "
                                         "starting with a letter")
        if len(request.display_name) > 200:
            raise InvalidArgument.single("display_name", "at most 200 characters")
        if len(request.attestation_document) > MAX_DOCUMENT_BYTES:
            raise InvalidArgument.single("attestation_document", f"larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            key = parse_public_key(request.public_key, request.public_key_format, request.curve)
        except InvalidKey as exc:
            raise await self._refused(name, "PUBLIC_KEY_INVALID", {}, InvalidArgument.single(
                "public_key", str(exc), "PUBLIC_KEY_INVALID")) from None
        digest = request_digest(request)
        earlier = await self._earlier(request.request_id, digest)
        if earlier is not None:
            return await self.participant(earlier)
        if await asyncio.to_thread(self.store.participant, name) is not None:
            raise AlreadyExists("PARTICIPANT_ALREADY_EXISTS", f"{name} already exists")
        fingerprint = {"public_key_fingerprint": key.fingerprint}
        if await asyncio.to_thread(self.store.fingerprint_taken, key.fingerprint):
            raise await self._refused(name, "PUBLIC_KEY_ALREADY_REGISTERED", fingerprint, AlreadyExists(
                "PUBLIC_KEY_ALREADY_REGISTERED", "this public key is already registered"))
        policy = federation.admission
        attestation = None
        if policy.require_attestation and not request.attestation_document:
            raise await self._refused(name, "ATTESTATION_REQUIRED", fingerprint, FailedPrecondition(
                "ATTESTATION_REQUIRED", "the federation requires an attestation document"))
        if request.attestation_document:
            if not policy.attestation_policy:
                raise InvalidArgument.single("attestation_document", "the federation names no attestation policy")
            try:
                attestation = await self.admission.verify(request.attestation_document, policy.attestation_policy,
                                                          key.digest)
            except AttestationRefused as refused:
                raise await self._refused(name, "ATTESTATION_REJECTED", {
                    **fingerprint, "document_sha256": refused.document_sha256, "refusals": ",".join(refused.reasons)},
                    PermissionDenied("ATTESTATION_REJECTED", "attestation-verifier rejected the document",
                                     {"refusals": ",".join(refused.reasons),
                                      "document_sha256": refused.document_sha256})) from None
            except PermissionDenied as mismatch:
                raise await self._refused(name, mismatch.reason, fingerprint, mismatch) from None
        flare_site = ""
        if federation.engine == fl_pb2.FL_ENGINE_FLARE:
            # FLARE knows sites by name: the node id is the coordinator's, for round reports.
            node_id, flare_site = secrets.randbits(62) + 1, flare_site_name(name)
        else:
            node_id = await self._register_flower_node(name, key.pem, fingerprint)
        participant = fl_pb2.Participant(
            name=name, display_name=request.display_name, public_key_pem=key.pem.decode(),
            public_key_fingerprint=key.fingerprint, curve=key.curve, node_id=node_id, registrant=registrant,
            create_time=_now(), flare_site=flare_site)
        if attestation is not None:
            participant.attestation.CopyFrom(attestation)
        try:
            await self.audit.append("RegisterParticipant", resource=name, details={
                **fingerprint, "node_id": str(node_id), "attested": str(attestation is not None).lower(),
                "document_sha256": attestation.document_sha256 if attestation else "", "flare_site": flare_site})
            await asyncio.to_thread(self.store.add_participant, participant, request.parent, request.request_id,
                                    digest)
        except BaseException as exc:
            if not flare_site:
                await self.superlink.unregister_node(node_id)  # all or nothing
            if isinstance(exc, Conflict):
                if exc.what == "public_key":
                    raise AlreadyExists("PUBLIC_KEY_ALREADY_REGISTERED", "this public key is already registered") \
                        from None
                raise AlreadyExists("PARTICIPANT_ALREADY_EXISTS", f"{name} already exists") from None
            raise
        return participant

    async def _register_flower_node(self, name: str, pem: bytes, fingerprint: dict[str, str]) -> int:
        try:
            return await self.superlink.register_node(pem)
        except SuperLinkError as exc:
            if exc.code == grpc.StatusCode.FAILED_PRECONDITION:  # Flower never forgets a key, even unregistered
                raise await self._refused(name, "PUBLIC_KEY_ALREADY_REGISTERED", fingerprint, AlreadyExists(
                    "PUBLIC_KEY_ALREADY_REGISTERED", "the SuperLink already holds this key (the keys of removed "
                    "participants cannot be reused)")) from None
            raise Unavailable("SUPERLINK_UNAVAILABLE", f"the SuperLink refused the key ({exc})") from None

    async def participant(self, name: str) -> fl_pb2.Participant:
        _key_of(name, "name", PARTICIPANT_NAME)
        found = await asyncio.to_thread(self.store.participant, name)
        if found is None:
            raise NotFound("PARTICIPANT_NOT_FOUND", f"no participant named {name!r}")
        return found

    async def list_participants(self, parent: str, after: str, limit: int) -> list[fl_pb2.Participant]:
        await self.get_federation(parent, "parent")
        found = await asyncio.to_thread(self.store.participants, parent, after, limit)
        if any(p.flare_site for p in found):
            return await self._flare_status(found)
        try:
            nodes = await self.superlink.node_status()
        except SuperLinkError:
            return found
        for p in found:
            status, seen = nodes.get(p.node_id, ("", ""))
            p.connected = status == "online"
            if seen:
                p.last_seen_time.FromJsonString(seen.replace("+00:00", "Z"))
        return found

    async def _flare_status(self, found: list[fl_pb2.Participant]) -> list[fl_pb2.Participant]:
        from privmesh.fl.flare.server import FlareError
        assert self.flare is not None
        try:
            sites = await self.flare.connected_sites()
        except FlareError:
            return found
        for p in found:
            p.connected = p.flare_site in sites
            if p.connected and sites[p.flare_site]:
                p.last_seen_time.FromNanoseconds(int(sites[p.flare_site] * 1e9))
        return found

    async def _flare_participant(self, name: str, caller: str) -> fl_pb2.Participant:
        """An admitted participant of a FLARE federation, for the principal that registered it only."""
        found = await self.participant(name)
        if not found.flare_site or self.flare is None:
            raise FailedPrecondition("STARTUP_KIT_NOT_APPLICABLE", "the participant's federation does not run on "
                                     "FLARE")
        if not hmac.compare_digest(caller.encode(), found.registrant.encode()):
            raise PermissionDenied("NOT_THE_REGISTRANT", "only the principal that registered the participant may "
                                   "act as its FLARE site")
        return found

    async def get_startup_kit(self, request: fl_pb2.GetStartupKitRequest,
                              caller: str) -> fl_pb2.GetStartupKitResponse:
        """The admitted participant's FLARE startup kit, its certificate for the participant's own endorsed key;
        audited by digests."""
        found = await self._flare_participant(request.name, caller)
        assert self.flare is not None
        csr = endorsed_csr(found.name, found.public_key_pem, request.certificate_signing_request,
                           request.csr_signature)
        kit = await asyncio.to_thread(self.flare.config.provisioner.startup_kit, found.flare_site, csr)
        digest = hashlib.sha256(kit).hexdigest()
        key_der = csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        await self.audit.append("GetStartupKit", resource=found.name, details={
            "flare_site": found.flare_site, "sha256": digest,
            "flare_key_fingerprint": hashlib.sha256(key_der).hexdigest()})
        return fl_pb2.GetStartupKitResponse(startup_kit=kit, sha256=digest, site=found.flare_site)

    async def report_site_audit(self, request: fl_pb2.ReportSiteAuditRequest,
                                caller: str) -> fl_pb2.ReportSiteAuditResponse:
        """Folds a signed segment of a site's FLARE audit log into the coordinator's audit chain: the events
        themselves (so evidence bundles carry them), their byte range, SHA-256 and the participant's signature.
        Segments follow each other without gaps or overlaps."""
        found = await self._flare_participant(request.name, caller)
        assert self.flare is not None
        check_audit_segment(found.name, found.public_key_pem, request.from_byte, request.events, request.signature)
        provisioner = self.flare.config.provisioner
        async with self._site_audit_lock:
            expected = await asyncio.to_thread(provisioner.site_audit_offset, found.flare_site)
            if request.from_byte != expected:
                raise FailedPrecondition("SITE_AUDIT_OFFSET_MISMATCH", f"the next segment starts at byte {expected}",
                                         {"next_byte": str(expected)})
            end = expected + len(request.events)
            actions = sorted({a.decode(errors="replace") for a in FLARE_ACTION.findall(request.events)})
            await self.audit.append("FlareSiteAuditLog", resource=found.name, details={
                "flare_site": found.flare_site, "file": "audit.log", "from_byte": str(expected), "to_byte": str(end),
                "lines": str(request.events.count(b"\n")), "sha256": hashlib.sha256(request.events).hexdigest(),
                "signature": base64.b64encode(request.signature).decode(), "actions": ",".join(actions)[:1000],
                "events": request.events.decode()})
            await asyncio.to_thread(provisioner.mark_site_audit, found.flare_site, end)
        return fl_pb2.ReportSiteAuditResponse(next_byte=end)

    async def remove_participant(self, name: str) -> None:
        _key_of(name, "name", PARTICIPANT_NAME)
        found = await asyncio.to_thread(self.store.participant, name)
        if found is None:
            return  # idempotent
        await self.audit.append("RemoveParticipant", resource=name,
                                details={"public_key_fingerprint": found.public_key_fingerprint,
                                         "node_id": str(found.node_id)})
        if found.flare_site:
            assert self.flare is not None
            await self._disable_site(found.flare_site)
            await asyncio.to_thread(self.store.remove_participant, name)
            # A participant registered again under this name starts a new site log.
            await asyncio.to_thread(self.flare.config.provisioner.mark_site_audit, found.flare_site, 0)
            return
        try:
            await self.superlink.unregister_node(found.node_id)
        except SuperLinkError as exc:
            raise Unavailable("SUPERLINK_UNAVAILABLE", f"the SuperLink could not unregister the key ({exc})") \
                from None
        await asyncio.to_thread(self.store.remove_participant, name)

    async def _disable_site(self, site: str) -> None:
        """FLARE refuses the site's kit from now on (the server persists its disabled sites)."""
        from privmesh.fl.flare.server import FlareError
        assert self.flare is not None
        try:
            await self.flare.disable_site(site)
        except FlareError as exc:
            raise Unavailable("FLARE_SERVER_UNAVAILABLE", f"the FLARE server could not disable the site ({exc})") \
                from None

    # --- runs ----------------------------------------------------------------------------------------------
    async def start_run(self, request: fl_pb2.StartRunRequest, starter: str) -> fl_pb2.Run:
        federation = await self.get_federation(request.parent, "parent")
        digest = request_digest(request)
        earlier = await self._earlier(request.request_id, digest)
        if earlier is not None:
            return await self.get_run(earlier)
        members = await asyncio.to_thread(self.store.participants, federation.name)
        if len(members) < federation.min_participants:
            raise FailedPrecondition("NOT_ENOUGH_PARTICIPANTS", f"{len(members)} participants are registered; the "
                                     f"federation needs {federation.min_participants}")
        if any(r.state in ACTIVE for _, r in await asyncio.to_thread(self.store.runs, federation.name, None, 20)):
            raise FailedPrecondition("RUN_ALREADY_ACTIVE", "the federation has a run that has not ended")
        run_id = secrets.token_hex(6)
        name = f"{federation.name}/runs/{run_id}"
        seed = federation.model.seed or secrets.randbelow(2**31 - 1) + 1
        spec = federations.run_spec(federation, name, seed, [p.node_id for p in members],
                                    {p.flare_site: p.node_id for p in members if p.flare_site})
        run = fl_pb2.Run(name=name, state=fl_pb2.RUN_STATE_PENDING, seed=seed, total_rounds=federation.num_rounds,
                         starter=starter, create_time=_now())
        details = {"engine": fl_pb2.FlEngine.Name(federation.engine), "participants": str(len(members)),
                   "num_rounds": str(federation.num_rounds), "secure_aggregation": str(spec.secagg is not None).lower(),
                   "differential_privacy": str(spec.dp is not None).lower()}
        if spec.dp is not None:
            details["dp_noise"] = "distributed" if spec.dp.distributed else "central"
        if federation.engine == fl_pb2.FL_ENGINE_FLARE:
            run.flare_job_id = await self._submit_flare_job(name, spec, details)
        else:
            fab, fab_hash = build_fab(spec)
            await self.audit.append("StartRun", resource=name, details={**details, "fab_sha256": fab_hash})
            try:
                run.flower_run_id = await self.superlink.start_run(fab, fab_hash)
            except SuperLinkError as exc:
                raise Unavailable("SUPERLINK_UNAVAILABLE", f"the SuperLink refused the run ({exc})") from None
        if spec.dp is not None:
            d = federation.differential_privacy
            server = ("fl-coordinator FLARE workflow" if federation.engine == fl_pb2.FL_ENGINE_FLARE
                      else "fl-coordinator ServerApp")
            seen_by = (UNNOISED_SEEN_BY_NOBODY if spec.dp.distributed else
                       f"{server}: the unmasked SecAgg+ sum of clipped updates, before central noise"
                       if federation.HasField("secure_aggregation") else
                       f"{server}: every clipped update and their sum, before central noise")
            run.privacy.CopyFrom(fl_pb2.PrivacySpent(
                epsilon=0.0, delta=d.delta, accountant=fl_pb2.DP_ACCOUNTANT_RDP, unnoised_aggregate_seen_by=seen_by,
                noise=fl_pb2.DP_NOISE_DISTRIBUTED if spec.dp.distributed else fl_pb2.DP_NOISE_CENTRAL))
            if d.HasField("target_epsilon"):
                run.privacy.target_epsilon = d.target_epsilon
        try:
            await asyncio.to_thread(self.store.create_run, run, federation.name, time.time_ns() // 1000,
                                    request.request_id, digest)
        except Conflict:
            await self._stop_engine_run(run)
            raise FailedPrecondition("RUN_ALREADY_ACTIVE", "the federation has a run that has not ended") from None
        return run

    async def _submit_flare_job(self, name: str, spec: RunSpec, details: dict[str, str]) -> str:
        from privmesh.fl.flare.job import write_job
        from privmesh.fl.flare.server import FlareError
        assert self.flare is not None
        with tempfile.TemporaryDirectory() as scratch:
            job = write_job(spec, Path(scratch) / "job")
            config = (job / "app" / "config" / "config_fed_server.json").read_bytes()
            await self.audit.append("StartRun", resource=name, details={
                **details, "flare_job_config_sha256": hashlib.sha256(config).hexdigest()})
            try:
                return await self.flare.submit(job)
            except FlareError as exc:
                raise Unavailable("FLARE_SERVER_UNAVAILABLE", f"the FLARE server refused the job ({exc})") from None

    async def _stop_engine_run(self, run: fl_pb2.Run) -> None:
        if run.flare_job_id:
            assert self.flare is not None
            await self.flare.abort(run.flare_job_id)
        else:
            await self.superlink.stop_run(run.flower_run_id)

    async def get_run(self, name: str) -> fl_pb2.Run:
        _key_of(name, "name", RUN_NAME)
        found = await asyncio.to_thread(self.store.run, name)
        if found is None:
            raise NotFound("RUN_NOT_FOUND", f"no run named {name!r}")
        return found

    async def list_runs(self, parent: str, before: int | None, limit: int, state: int) -> list[tuple[int, fl_pb2.Run]]:
        await self.get_federation(parent, "parent")
        return await asyncio.to_thread(self.store.runs, parent, before, limit, state)

    async def stop_run(self, name: str) -> fl_pb2.Run:
        run = await self.get_run(name)
        if run.state in TERMINAL or run.state == fl_pb2.RUN_STATE_STOPPING:
            return run
        await self.audit.append("StopRun", resource=name, details={"state": fl_pb2.RunState.Name(run.state)})
        if run.state == fl_pb2.RUN_STATE_PENDING:  # no round yet: nothing to wait for
            await self._stop_engine_run(run)
            return await self._finish(name, fl_pb2.RUN_END_REASON_STOPPED_BY_USER, "stopped before the first round")
        run = await asyncio.to_thread(self.store.update_run, name, lambda r: setattr(r, "state",
                                                                                    fl_pb2.RUN_STATE_STOPPING))
        await self._notify(name)
        return run

    # --- events --------------------------------------------------------------------------------------------
    def _condition(self, run: str) -> asyncio.Condition:
        return self._changed.setdefault(run, asyncio.Condition())

    async def _notify(self, run: str) -> None:
        condition = self._condition(run)
        async with condition:
            condition.notify_all()

    async def _event(self, run_name: str, change: Callable[[fl_pb2.Run], None] | None = None,
                     **event: object) -> fl_pb2.Run:
        def build(sequence: int) -> fl_pb2.RunEvent:
            return fl_pb2.RunEvent(sequence=sequence, time=_now(), run=run_name, **event)  # type: ignore[arg-type]

        _, run = await asyncio.to_thread(self.store.append_event, run_name, build, change)
        await self._notify(run_name)
        return run

    async def watch_run(self, name: str, after: int) -> AsyncIterator[fl_pb2.RunEvent]:
        await self.get_run(name)
        condition = self._condition(name)
        while True:
            async with condition:
                events = await asyncio.to_thread(self.store.events, name, after)
                if not events:
                    run = await self.get_run(name)
                    if run.state in TERMINAL and after >= run.last_event_sequence:
                        return
                    await condition.wait()
                    continue
            for event in events:
                yield event
                after = event.sequence
                if event.WhichOneof("event") in ("run_finished", "run_failed"):
                    return

    # --- reports from the ServerApp ------------------------------------------------------------------------
    async def _names_by_node(self, run_name: str) -> dict[int, str]:
        members = await asyncio.to_thread(self.store.participants, federation_of(run_name))
        return {p.node_id: p.name for p in members}

    async def report(self, request: reporter_pb2.ReportRunRequest) -> bool:
        """Applies a ServerApp report; returns whether the run should stop."""
        run = await self.get_run(request.run)
        if run.state in TERMINAL:
            return True
        which = request.WhichOneof("report")
        if which == "round_start":
            await self._round_started(run, request.round_start)
        elif which == "round_end":
            await self._round_ended(run, request.round_end)
        elif which == "run_end":
            end = request.run_end
            await self._finish(run.name, end.end_reason, end.message)
            return True
        return (await self.get_run(request.run)).state == fl_pb2.RUN_STATE_STOPPING

    async def _round_started(self, run: fl_pb2.Run, start: reporter_pb2.ReportedRoundStart) -> None:
        names = await self._names_by_node(run.name)
        seen = {p.participant for p in run.participants}
        for node_id in start.selected_node_ids:
            participant = names.get(node_id, f"node {node_id}")
            if participant in seen:
                continue

            def join(r: fl_pb2.Run, who: str = participant) -> None:
                r.participants.add(participant=who, join_time=_now(), active=True)
            await self._event(run.name, join, participant_joined=fl_pb2.ParticipantJoined(participant=participant,
                                                                                        node_id=node_id))

        def begin(r: fl_pb2.Run) -> None:
            if r.state == fl_pb2.RUN_STATE_PENDING:
                r.state = fl_pb2.RUN_STATE_RUNNING
                r.start_time.CopyFrom(_now())
            r.rounds.add(round=start.round, state=fl_pb2.ROUND_STATE_RUNNING, start_time=_now(),
                         participants_selected=len(start.selected_node_ids))
        await self.audit.append("RunRound", resource=run.name, details={
            "round": str(start.round), "event": "started", "participants": str(len(start.selected_node_ids))})
        await self._event(run.name, begin, round_started=fl_pb2.RoundStarted(
            round=start.round, participants_selected=len(start.selected_node_ids)))

    async def _round_ended(self, run: fl_pb2.Run, end: reporter_pb2.ReportedRoundEnd) -> None:
        names = await self._names_by_node(run.name)
        metrics = end.metrics
        completed = {names.get(n, f"node {n}") for n in end.completed_node_ids}
        dropped = {names.get(n, f"node {n}") for n in end.dropped_node_ids}

        def finish_round(r: fl_pb2.Run) -> None:
            kept = [m for m in r.rounds if m.round != metrics.round]
            del r.rounds[:]
            r.rounds.extend([*kept, metrics])
            if metrics.state == fl_pb2.ROUND_STATE_COMPLETED:
                r.completed_rounds = max(r.completed_rounds, metrics.round)
                if metrics.HasField("epsilon") and r.HasField("privacy"):
                    r.privacy.epsilon = metrics.epsilon
            for p in r.participants:
                if p.participant in completed:
                    p.rounds_completed += 1
                elif p.participant in dropped:
                    p.rounds_dropped += 1

        await self.audit.append("RunRound", resource=run.name, details={
            "round": str(metrics.round), "event": "finished", "state": fl_pb2.RoundState.Name(metrics.state),
            "completed": str(metrics.participants_completed), "dropped": str(metrics.participants_dropped),
            "epsilon": f"{metrics.epsilon:.6g}" if metrics.HasField("epsilon") else ""})
        await self._event(run.name, finish_round, round_finished=fl_pb2.RoundFinished(metrics=metrics))
        for participant in sorted(dropped):
            await self._event(run.name, participant_dropped=fl_pb2.ParticipantDropped(
                participant=participant, round=metrics.round, reason=fl_pb2.DROP_REASON_FAILED))

    async def _finish(self, name: str, reason: fl_pb2.RunEndReason, message: str) -> fl_pb2.Run:
        run = await self.get_run(name)
        if run.state in TERMINAL:
            return run
        if reason == fl_pb2.RUN_END_REASON_COMPLETED:
            state = fl_pb2.RUN_STATE_SUCCEEDED
        elif reason in (fl_pb2.RUN_END_REASON_STOPPED_BY_USER, fl_pb2.RUN_END_REASON_PRIVACY_BUDGET_EXHAUSTED):
            state = fl_pb2.RUN_STATE_STOPPED
        else:
            state = fl_pb2.RUN_STATE_FAILED

        def end(r: fl_pb2.Run) -> None:
            r.state, r.end_reason, r.end_message = state, reason, message[:500]
            r.end_time.CopyFrom(_now())
            for m in r.rounds:
                if m.state == fl_pb2.ROUND_STATE_RUNNING:
                    m.state = fl_pb2.ROUND_STATE_ABANDONED

        if run.flare_job_id:
            await self.fold_flare_audit()
        await self.audit.append("RunFinished", resource=name, outcome="SUCCESS" if state != fl_pb2.RUN_STATE_FAILED
                                else "FAILURE", details={"state": fl_pb2.RunState.Name(state),
                                                        "end_reason": fl_pb2.RunEndReason.Name(reason),
                                                        "completed_rounds": str(run.completed_rounds)})
        if state == fl_pb2.RUN_STATE_FAILED:
            return await self._event(name, end, run_failed=fl_pb2.RunFailed(end_reason=reason, message=message[:500]))
        finished = fl_pb2.RunFinished(state=state, end_reason=reason)
        if run.HasField("privacy"):
            finished.privacy.CopyFrom(run.privacy)
        if run.HasField("model"):
            finished.model.CopyFrom(run.model)
        return await self._event(name, end, run_finished=finished)

    async def upload_model(self, header: reporter_pb2.UploadedModelHeader, data: bytes) -> fl_pb2.StoredModel:
        run = await self.get_run(header.run)
        federation = await self.get_federation(federation_of(run.name))
        if len(data) != header.size_bytes or sum(t.size_bytes for t in header.tensors) != len(data):
            raise InvalidArgument.single("header.size_bytes", "does not match the chunks and tensors")
        decode_arrays(header.tensors, data)  # refuses anything that is not the declared NPY tensors
        context = {"federation": federation.name, "run": run.name, "round": str(header.round),
                   "plaintext_sha256": hashlib.sha256(data).hexdigest()}
        try:
            envelope = await self.vault.seal(federation.model_key, data, context)
        except Exception as exc:
            log.warning("model sealing failed", extra={"fields": {"run": run.name, "error": type(exc).__name__}})
            raise Unavailable("KEY_BROKER_UNAVAILABLE", "key-broker could not provide a data key") from None
        model = fl_pb2.StoredModel(
            name=f"{run.name}/model", round=header.round, encrypted_size_bytes=len(envelope),
            encrypted_sha256=hashlib.sha256(envelope).hexdigest(), create_time=_now(),
            encryption=fl_pb2.EncryptionInfo(format=fl_pb2.ENVELOPE_FORMAT_AWS_ENCRYPTION_SDK,
                                             key=federation.model_key, encryption_context=context))
        await self.audit.append("StoreModel", resource=model.name, details={
            "round": str(header.round), "encrypted_sha256": model.encrypted_sha256, "key": federation.model_key,
            "encrypted_size_bytes": str(len(envelope))})
        await asyncio.to_thread(self.store.put_model, run.name, model, list(header.tensors), envelope)
        await asyncio.to_thread(self.store.update_run, run.name, lambda r: r.model.CopyFrom(model))
        return model

    # --- models --------------------------------------------------------------------------------------------
    async def get_model(self, name: str, decrypted: bool) -> tuple[fl_pb2.ModelHeader, bytes]:
        if not name.endswith("/model"):
            raise InvalidArgument.single("name", "must be federations/{federation}/runs/{run}/model")
        run = await self.get_run(name.removesuffix("/model"))
        federation = await self.get_federation(federation_of(run.name))
        stored: StoredEnvelope | None = await asyncio.to_thread(self.store.model, run.name)
        if stored is None:
            raise FailedPrecondition("MODEL_NOT_AVAILABLE", "the run has no stored model")
        header = fl_pb2.ModelHeader(name=name, spec=federation.model, round=stored.model.round)
        await self.audit.append("GetModel", resource=name, details={
            "representation": "DECRYPTED" if decrypted else "ENCRYPTED", "round": str(stored.model.round),
            "encrypted_sha256": stored.model.encrypted_sha256})
        if not decrypted:
            payload = stored.envelope
            header.representation = fl_pb2.MODEL_REPRESENTATION_ENCRYPTED
            header.encryption.CopyFrom(stored.model.encryption)
        else:
            try:
                payload = await self.vault.open(stored.model.encryption.key, stored.envelope,
                                                dict(stored.model.encryption.encryption_context))
            except Exception as exc:
                log.warning("model decryption failed", extra={"fields": {"run": run.name,
                                                                         "error": type(exc).__name__}})
                raise Unavailable("KEY_BROKER_UNAVAILABLE", "key-broker could not unwrap the model's key") from None
            header.representation = fl_pb2.MODEL_REPRESENTATION_DECRYPTED
            header.tensors.extend(stored.tensors)
        header.size_bytes = len(payload)
        header.sha256 = hashlib.sha256(payload).hexdigest()
        return header, payload

    # --- supervision of runs -------------------------------------------------------------------------------
    def start_monitor(self) -> None:
        self._monitor = asyncio.create_task(self._watch_runs())

    async def stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None

    async def _watch_runs(self) -> None:
        while True:
            await asyncio.sleep(self.options.monitor_interval)
            try:
                for run in await asyncio.to_thread(self.store.active_runs):
                    await self._check(run)
                if time.monotonic() - self._folded_at > FLARE_FOLD_SECONDS:
                    await self.fold_flare_audit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run supervision failed")

    async def fold_flare_audit(self) -> None:
        """Commits FLARE's own audit log into the coordinator's hash-chained audit log (so evidence bundles cover
        it): one FlareAuditLog entry per new segment, with its byte range, SHA-256 and the actions it records
        (the coordinator's own status polling left out of the list, never out of the digest)."""
        if self.flare is None:
            return
        self._folded_at = time.monotonic()
        segment = await asyncio.to_thread(self.flare.audit_segment)
        if segment is None:
            return
        start, data = segment
        actions = sorted({a.decode(errors="replace") for a in FLARE_ACTION.findall(data)} - FLARE_POLLING)
        await self.audit.append("FlareAuditLog", resource=f"flare/{self.flare.config.provisioner.project}", details={
            "file": "audit.log", "from_byte": str(start), "to_byte": str(start + len(data)),
            "lines": str(data.count(b"\n")), "sha256": hashlib.sha256(data).hexdigest(),
            "actions": ",".join(actions)[:1000]})
        await asyncio.to_thread(self.flare.mark_folded, start + len(data))

    async def _engine_status(self, run: fl_pb2.Run) -> tuple[bool, str, bool] | None:
        """(finished, how, engine restarted) of the run on its engine; None while the engine is unreachable."""
        if run.flare_job_id:
            from privmesh.fl.flare.server import FlareError
            assert self.flare is not None
            try:
                job = await self.flare.job(run.flare_job_id)
            except FlareError:
                return None
            return job.finished, job.status, self.flare.restarts > 0
        try:
            flower = await self.superlink.run_status(run.flower_run_id)
        except SuperLinkError:
            return None  # restarting; checked again next time
        if run.state != fl_pb2.RUN_STATE_PENDING and run.create_time.ToSeconds() < self.superlink.restarted_at:
            # Its ServerApp died with the SuperLink's process group: the run cannot go on (Flower's record of it lags).
            return True, "the SuperLink restarted during the run", True
        if flower is None:
            return False, "", bool(self.superlink.restarts)
        return flower.status == "finished", flower.sub_status, bool(self.superlink.restarts)

    async def _check(self, run: fl_pb2.Run) -> None:
        status = await self._engine_status(run)
        if status is None:
            return
        if run.state == fl_pb2.RUN_STATE_PENDING:
            federation = await self.get_federation(federation_of(run.name))
            wait = federations.seconds(federation.participant_wait_timeout, federations.DEFAULT_TIMEOUT_SECONDS)
            if time.time() - run.create_time.ToSeconds() > wait:
                await self._stop_engine_run(run)
                await self._finish(run.name, fl_pb2.RUN_END_REASON_NOT_ENOUGH_PARTICIPANTS,
                                   f"fewer than {federation.min_participants} participants connected in time")
                return
        finished, how, restarted = status
        engine = "FLARE server" if run.flare_job_id else "SuperLink"
        if not finished:
            return
        await asyncio.sleep(0.5)  # the ServerApp's own end report wins when it is on its way
        if (await self.get_run(run.name)).state in TERMINAL:
            return
        if run.state == fl_pb2.RUN_STATE_STOPPING:
            await self._finish(run.name, fl_pb2.RUN_END_REASON_STOPPED_BY_USER, "stopped by StopRun")
        elif restarted:
            await self._finish(run.name, fl_pb2.RUN_END_REASON_SUPERLINK_FAILED,
                               f"the {engine} failed and the run could not continue")
        else:
            what = "FLARE job" if run.flare_job_id else "Flower run"
            await self._finish(run.name, fl_pb2.RUN_END_REASON_INTERNAL, f"the {what} ended ({how}) without a report")
