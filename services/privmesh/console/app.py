"""`privmesh console`: a read-only web page for auditors, on loopback, that shows every service's audit
trail and its verification state (chain, Merkle tree, witnesses) with a search by principal, resource and
time, and each service's own state (inventory.PAGES: keys, token fields, budgets, federations, attestation,
models). It reads only through the services' gRPC APIs, as the auditor identity, and verifies the audit logs
against pinned audit keys, exactly as `privmesh evidence verify` does.

Access needs the console's token (printed at start; `Authorization: Bearer <token>`, or `/login?token=`,
which sets an HttpOnly cookie); every other request is refused. Nothing on the page can change anything.
"""

from __future__ import annotations

import datetime as dt
import hmac
import html
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from privmesh.console.inventory import PAGES, cell, inventory, spending
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import ClientIdentity

COOKIE = "privmesh_console"
MAX_ROWS = 500


@dataclass(frozen=True)
class Row:
    service: str
    sequence: int
    time: str
    principal: str
    operation: str
    resource: str
    outcome: str


class AuditorConsole:
    def __init__(self, endpoints: Mapping[str, tuple[str, str]], identity: ClientIdentity, trust: Trust,
                 token: str | None = None) -> None:
        self.endpoints = dict(endpoints)  # service -> (target, SPIFFE ID)
        self.identity = identity
        self.trust = trust
        self.token = token or secrets.token_urlsafe(32)

    async def snapshot(self) -> tuple[list[dict[str, Any]], list[Row]]:
        """Each service's verification state, and every entry (newest first), read through the APIs."""
        bundle = await export_bundle(self.endpoints, self.identity)
        verdicts = {v.service: v for v in verify_bundle(bundle, self.trust, self.endpoints)}
        services, rows = [], []
        for section in bundle["services"]:
            verdict = verdicts[section["service"]]
            tree = section.get("tree", {}).get("checkpoints", [])
            services.append({"service": section["service"], "entries": len(section["entries"]),
                             "key_id": verdict.key_id, "ok": verdict.ok, "tree_checkpoints": len(tree),
                             "tree_size": _size(tree[-1]) if tree else 0,
                             "witnesses": _cosigners(tree[-1]) if tree else [],
                             "finding": verdict.finding.message if verdict.finding else "",
                             "first_bad_entry": verdict.finding.sequence if verdict.finding else 0})
            rows += [Row(section["service"], int(e.get("sequence", 0)), e.get("time", ""), e.get("principal", ""),
                         e.get("operation", ""), e.get("resource", ""), e.get("outcome", ""))
                     for e in section["entries"]]
        rows.sort(key=lambda r: r.time, reverse=True)
        return services, rows

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        if request.path == "/login":
            if hmac.compare_digest(request.query.get("token", ""), self.token):
                redirect = web.HTTPFound("/")
                redirect.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
                raise redirect
            raise web.HTTPUnauthorized(text="bad token")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not (hmac.compare_digest(bearer, self.token) or hmac.compare_digest(request.cookies.get(COOKIE, ""),
                                                                               self.token)):
            raise web.HTTPUnauthorized(text="this console needs its token: /login?token=...")
        response: web.StreamResponse = await handler(request)
        response.headers.update({"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
        return response

    def app(self) -> web.Application:
        application = web.Application(middlewares=[self._authenticate])
        application.router.add_get("/", self._overview)
        application.router.add_get("/audit", self._audit)
        application.router.add_get("/api/overview", self._api_overview)
        application.router.add_get("/api/audit", self._api_audit)
        application.router.add_get("/state/{page}", self._state)
        application.router.add_get("/api/state/{page}", self._api_state)
        return application

    def _page_name(self, request: web.Request) -> str:
        page = request.match_info["page"]
        if page not in PAGES:
            raise web.HTTPNotFound(text=f"no page {page!r}")
        return page

    async def _api_state(self, request: web.Request) -> web.Response:
        sections = await inventory(self.endpoints, self.identity, self._page_name(request))
        return web.json_response({"sections": sections})

    async def _state(self, request: web.Request) -> web.Response:
        page = self._page_name(request)
        parts = []
        for section in await inventory(self.endpoints, self.identity, page):
            items = section["items"]
            columns = COLUMNS.get(section["method"]) or sorted({k for item in items for k in item})[:10]
            header = "".join(f"<th>{_e(c)}</th>" for c in columns)
            rows = "".join("<tr>" + "".join(f"<td>{_e(_shown(item.get(c, '')))}</td>" for c in columns) + "</tr>"
                           for item in items)
            note = f"<p class='error'>{_e(section['error'])}</p>" if section["error"] else \
                f"<p class='count'>{len(items)} items</p>"
            parts.append(f"<h2 id='{_e(section['method'])}'>{_e(section['service'])}: {_e(section['title'])}</h2>"
                         f"{note}<table data-method='{_e(section['method'])}'><tr>{header}</tr>{rows}</table>")
            if section["method"] == "ListLedger":
                parts.append(_chart(spending(items)))
        return _page(PAGES[page], "".join(parts))

    async def _api_overview(self, request: web.Request) -> web.Response:
        services, _ = await self.snapshot()
        return web.json_response({"services": services})

    def _search(self, rows: list[Row], query: Mapping[str, str]) -> list[Row]:
        principal, resource = query.get("principal", ""), query.get("resource", "")
        since, until = query.get("since", ""), query.get("until", "")
        for name, value in (("since", since), ("until", until)):
            if value:
                try:
                    dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise web.HTTPBadRequest(text=f"{name}: not an ISO 8601 time") from None
        return [r for r in rows if (not principal or principal in r.principal)
                and (not resource or r.resource.startswith(resource))
                and (not since or r.time >= since) and (not until or r.time <= until)][:MAX_ROWS]

    async def _api_audit(self, request: web.Request) -> web.Response:
        _, rows = await self.snapshot()
        return web.json_response({"entries": [r.__dict__ for r in self._search(rows, request.query)]})

    async def _overview(self, request: web.Request) -> web.Response:
        services, _ = await self.snapshot()
        body = "".join(
            f"<tr class='{'ok' if s['ok'] else 'broken'}'><td>{_e(s['service'])}</td><td>{s['entries']}</td>"
            f"<td>{s['tree_checkpoints']}</td><td>{s['tree_size']}</td><td>{_e(', '.join(s['witnesses']))}</td>"
            f"<td><code>{_e(s['key_id'][:16])}</code></td>"
            f"<td>{'verified: chain, tree, witnesses' if s['ok'] else 'BROKEN: ' + _e(s['finding'])}</td></tr>"
            for s in services)
        return _page("Audit logs", "<table id='services'><tr><th>service</th><th>entries</th><th>tree checkpoints"
                                   "</th><th>tree size</th><th>cosigned by</th><th>audit key</th><th>verification"
                                   "</th></tr>" + body + "</table>")

    async def _audit(self, request: web.Request) -> web.Response:
        _, rows = await self.snapshot()
        found = self._search(rows, request.query)
        q = request.query
        form = ("<form method='get' action='/audit'>"
                + "".join(f"<label>{n} <input name='{n}' value='{_e(q.get(n, ''))}'></label> "
                          for n in ("principal", "resource", "since", "until"))
                + "<button>search</button></form>")
        body = "".join(f"<tr><td>{_e(r.service)}</td><td>{r.sequence}</td><td>{_e(r.time)}</td>"
                       f"<td>{_e(r.principal)}</td><td>{_e(r.operation)}</td><td>{_e(r.resource)}</td>"
                       f"<td>{_e(r.outcome)}</td></tr>" for r in found)
        return _page("Audit trail", form + f"<p id='count'>{len(found)} entries</p><table id='entries'><tr>"
                     "<th>service</th><th>#</th><th>time</th><th>principal</th><th>operation</th><th>resource</th>"
                     "<th>outcome</th></tr>" + body + "</table>")


# The columns each table shows (others: the first ten keys of its items).
COLUMNS = {
    "ListKeys": ("name", "alias", "state", "keySpec", "primaryVersion", "rotationPeriod", "nextRotationTime",
                 "policy"),
    "ListFields": ("name", "key", "mayDetokenize", "defaultTtl", "subjectKeyShredding"),
    "ListDatasets": ("name", "description", "privacyUnitColumn"),
    "ListLedger": ("sequence", "time", "kind", "dataset", "analyst", "state", "charged", "cap", "remaining"),
    "GetBudget": ("dataset", "analyst", "cap", "spent", "reserved"),
    "ListFederations": ("name", "displayName", "numRounds", "runs"),
    "ListPolicies": ("name", "description", "allowDebug", "requireNonce", "updateTime"),
    "ListVerificationResults": ("verifyTime", "kind", "policy", "verdict", "refusalReasons", "moduleId", "principal",
                                "tokenMinted"),
}


def _shown(value: Any) -> str:
    """A cell: runs as "name: state rounds", losses as "rho=…", the rest as text or compact JSON (cut at 200)."""
    if isinstance(value, list) and value and isinstance(value[0], dict) and "state" in value[0]:
        return "; ".join(f"{r.get('name', '')}: {r.get('state', '').removeprefix('RUN_STATE_')} "
                         f"{r.get('completedRounds', 0)}/{r.get('totalRounds', 0)}" for r in value)
    if isinstance(value, dict) and not value:
        return ""
    if isinstance(value, dict) and value and all(isinstance(v, int | float) for v in value.values()):
        return ", ".join(f"{k}={v:g}" for k, v in sorted(value.items()))
    return cell(value)[:200]


def _size(note: str) -> int:
    try:
        return notes.parse_checkpoint(notes.parse_note(note).text).size
    except notes.NoteError:
        return 0


def _cosigners(note: str) -> list[str]:
    """The services named by the witness signature lines of a checkpoint (verify checks them; this only shows)."""
    try:
        signatures = notes.parse_note(note).signatures
    except notes.NoteError:
        return []
    return sorted({s.name.rsplit("/", 1)[1] for s in signatures if "/witness/" in s.name})


def _chart(series: Mapping[str, list[tuple[str, float]]]) -> str:
    """Cumulative privacy spending (rho) over time per analyst and dataset, as an inline SVG."""
    if not series:
        return "<p id='spending'>no privacy budget spent yet</p>"
    times = sorted({t for points in series.values() for t, _ in points})
    top = max(v for points in series.values() for _, v in points) or 1.0
    width, height, colors = 600, 200, ("#c33", "#36c", "#393", "#c90", "#939")
    lines, legend = [], []
    for i, (name, points) in enumerate(sorted(series.items())):
        xy = " ".join(f"{20 + (width - 40) * times.index(t) / max(len(times) - 1, 1):.1f},"
                      f"{height - 20 - (height - 40) * v / top:.1f}" for t, v in points)
        color = colors[i % len(colors)]
        lines.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{xy}'/>")
        legend.append(f"<li style='color:{color}'>{_e(name)}: {points[-1][1]:g} rho</li>")
    return (f"<h3>spending over time</h3><svg id='spending' width='{width}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'><rect width='100%' height='100%' fill='#fafafa'/>{''.join(lines)}"
            f"</svg><ul>{''.join(legend)}</ul>")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _nav() -> str:
    links = [("/", "audit logs"), ("/audit", "audit trail"), *((f"/state/{p}", t.lower()) for p, t in PAGES.items())]
    return "<nav>" + " · ".join(f"<a href='{href}'>{_e(text)}</a>" for href, text in links) + "</nav>"


def _page(title: str, content: str) -> web.Response:
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:.3em .6em;font-size:90%}tr.broken{background:#fdd}tr.ok td:last-child{color:#060}")
    return web.Response(text=f"<!doctype html><html><head><meta charset='utf-8'><title>privmesh · {_e(title)}"
                             f"</title><style>{style}</style></head><body>{_nav()}<h1>{_e(title)}</h1>{content}</body></html>",
                        content_type="text/html")
