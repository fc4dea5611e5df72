"""privmesh's confidential-computing manager for its own FLARE project: FLARE's CCManager, with the verdicts a
federation of separate organizations needs. Every site but the server (and any named exempt) must present fresh
evidence that its verifiers accept:

- at registration: a site without valid evidence is refused (FLARE's NotAuthenticated), not the whole system shut
  down as CCManager does;
- before each job is scheduled: the server asks every site of the job for a new token (each binds a new
  challenge) and blocks the job while one fails (FLARE keeps it queued and checks again);
- every refusal is written to FLARE's audit log (action `cc.refused`), which the coordinator folds into its audit.

CCManager's periodic all-to-all validation is off: the per-job check replaces it, and sites verify nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Sequence
from typing import Any

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import NotAuthenticated
from nvflare.apis.job_def import SERVER_SITE_NAME
from nvflare.app_opt.confidential_computing.cc_manager import (
    CC_CHANNEL,
    CC_INFO,
    CC_NAMESPACE,
    CC_TOKEN,
    CC_TOPIC_REQUEST_TOKEN,
    CCManager,
)
from nvflare.fuel.f3.cellnet.defs import MessageHeaderKey
from nvflare.fuel.f3.cellnet.defs import ReturnCode as F3ReturnCode
from nvflare.fuel.sec.audit import AuditService
from nvflare.private.defs import new_cell_message

from privmesh.fl.flare.nitro_authorizer import NitroAuthorizer

log = logging.getLogger("privmesh.fl.flare.cc")
REFUSED = "cc.refused"


class _AllBut(Container[str]):
    """Every site name except the exempt ones: sites are admitted at any time, so they cannot be listed."""

    def __init__(self, exempt: Sequence[str]) -> None:
        self.exempt = frozenset(exempt)

    def __contains__(self, site: object) -> bool:
        return site not in self.exempt


class AttestedSitesCCManager(CCManager):  # type: ignore[misc]
    def __init__(self, cc_issuers_conf: Sequence[dict[str, Any]] = (), cc_verifier_ids: Sequence[str] = (),
                 exempt_sites: Sequence[str] = (), get_token_request_timeout: float = 20.0) -> None:
        super().__init__(list(cc_issuers_conf), list(cc_verifier_ids),
                         get_token_request_timeout=get_token_request_timeout)
        self.cc_enabled_sites = _AllBut([SERVER_SITE_NAME, *exempt_sites])

    def _refusal(self, tokens: object) -> str:
        """Why a site's tokens fail ("" when every one is accepted and there is at least one)."""
        if not isinstance(tokens, list) or not tokens:
            return "NO_EVIDENCE"
        for token in tokens:
            verifier = self.cc_verifiers.get(token.get(CC_NAMESPACE, "")) if isinstance(token, dict) else None
            if verifier is None:
                return "NO_VERIFIER_FOR_NAMESPACE"
            value = token.get(CC_TOKEN, "")
            accepted, reasons = (verifier.judge(value) if isinstance(verifier, NitroAuthorizer)
                                 else (bool(verifier.verify(value)), ""))
            if not accepted:
                return reasons or "REJECTED"
        return ""

    def _refuse(self, site: str, reason: str, when: str) -> None:
        AuditService.add_event(user=site, action=REFUSED, msg=f"{when}: {reason}")
        log.warning("site refused: %s at %s (%s)", site, when, reason)

    def _validate_client_tokens(self, fl_ctx: FLContext) -> None:
        """At registration: the registering site's own evidence, or NotAuthenticated."""
        peer = fl_ctx.get_peer_context()
        site = peer.get_identity_name() if peer else "?"
        if site not in self.cc_enabled_sites:
            return
        info = peer.get_prop(CC_INFO) if peer else None
        reason = self._refusal(info.get(site) if isinstance(info, dict) and set(info) == {site} else None)
        if reason:
            self._refuse(site, reason, "registration")
            raise NotAuthenticated(f"site {site} is {REFUSED}")

    def _fresh_tokens(self, fl_ctx: FLContext, sites: set[str]) -> dict[str, Any]:
        """site -> the tokens it generated for this request (absent: it did not answer)."""
        engine = fl_ctx.get_engine()
        cell = engine.get_cell()
        found: dict[str, Any] = {}
        for client in engine.get_clients():
            if client.name not in sites:
                continue
            reply = cell.send_request(target=client.get_fqcn(), channel=CC_CHANNEL, topic=CC_TOPIC_REQUEST_TOKEN,
                                      request=new_cell_message({}, {"requester": self.site_name}),
                                      timeout=self.get_token_request_timeout, optional=True)
            payload = reply.payload if reply is not None else None
            if (reply is not None and reply.get_header(MessageHeaderKey.RETURN_CODE) == F3ReturnCode.OK
                    and isinstance(payload, dict) and payload.get("site_name") == client.name):
                found[client.name] = payload.get("cc_info")
        return found

    def _check_job(self, fl_ctx: FLContext) -> None:
        """Before a job is scheduled: fresh evidence from each of its sites, or the job is blocked."""
        sites = {s for s in fl_ctx.get_prop(FLContextKey.JOB_PARTICIPANTS, []) if s in self.cc_enabled_sites}
        tokens = self._fresh_tokens(fl_ctx, sites)
        refused = {site: self._refusal(tokens.get(site)) for site in sorted(sites)}
        refused = {site: reason for site, reason in refused.items() if reason}
        for site, reason in refused.items():
            self._refuse(site, reason, f"job {fl_ctx.get_prop(FLContextKey.CURRENT_JOB_ID, '?')}")
        if refused:
            fl_ctx.set_prop(FLContextKey.JOB_BLOCK_REASON, f"{REFUSED}: {', '.join(refused)}", sticky=False,
                            private=True)

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.BEFORE_CHECK_CLIENT_RESOURCES:
            self._check_job(fl_ctx)
        elif event_type == EventType.SYSTEM_START:
            self._register_cc_handlers(fl_ctx)  # answers token requests; no periodic all-to-all validation
        else:
            super().handle_event(event_type, fl_ctx)
