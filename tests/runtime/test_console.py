"""The auditor console against three real services over mTLS: it refuses requests without its token, the
numbers it shows equal what the AuditLog APIs return, the search filters, and a tampered log shows as broken."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.console.app import AuditorConsole
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, spiffe
from tests.runtime.test_witness import _endpoints, _peer, _target, _trust, _work, mesh  # noqa: F401 (a fixture)


@pytest.fixture
async def console(mesh: dict[str, Any], pki: DevPki) -> Any:  # noqa: F811
    app = AuditorConsole(_endpoints(mesh), identity(pki, "auditor"), Trust(_trust(mesh)), "t0ken")
    runner = web.AppRunner(app.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _entries(server: Any, pki: DevPki) -> int:
    async with secure_channel(_target(server), identity(pki, "auditor"), timeout_seconds=5, peer=_peer(server)) as ch:
        head = await common_pb2_grpc.AuditLogStub(ch).GetAuditHead(common_pb2.GetAuditHeadRequest())
    return int(head.head.sequence)


async def test_the_console_needs_its_token(console: str) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: cookies on an IP
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.get(f"{console}/api/overview", headers=headers) as reply:
                assert reply.status == 401
        async with http.get(f"{console}/login?token=wrong", allow_redirects=False) as reply:
            assert reply.status == 401
        async with http.post(f"{console}/", headers={"Authorization": "Bearer t0ken"}) as reply:
            assert reply.status == 405
        async with http.get(f"{console}/login?token=t0ken") as reply:  # sets the cookie, then shows the page
            assert reply.status == 200 and "Audit logs" in await reply.text()


async def test_the_console_shows_what_the_apis_return_and_searches(console: str, mesh: dict[str, Any],  # noqa: F811
                                                                   pki: DevPki) -> None:
    await _work(mesh["wa"], pki, 4)
    auth = {"Authorization": "Bearer t0ken"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.get(f"{console}/api/overview") as reply:
            shown = {s["service"]: s for s in (await reply.json())["services"]}
        async with http.get(f"{console}/api/audit", params={"principal": spiffe("alice"),
                                                            "resource": "items/k1"}) as reply:
            found = (await reply.json())["entries"]
        async with http.get(f"{console}/audit", params={"since": "not a time"}) as reply:
            assert reply.status == 400
    assert all(s["ok"] for s in shown.values()), shown
    for name, server in mesh.items():
        assert shown[name]["entries"] <= await _entries(server, pki)  # the head moves on as the console reads
    assert shown["wa"]["entries"] >= 4
    assert [(e["service"], e["operation"], e["resource"]) for e in found] == [("wa", "Put", "items/k1")]


async def test_a_tampered_log_shows_as_broken(console: str, mesh: dict[str, Any], pki: DevPki) -> None:  # noqa: F811
    await _work(mesh["wa"], pki, 3)
    database = Path(str(mesh["wa"].config.audit.database).removeprefix("sqlite:///"))
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TRIGGER audit_entries_no_update")
        conn.execute("UPDATE audit_entries SET principal = 'spiffe://privmesh.local/ns/privmesh/sa/mallory' "
                     "WHERE chain = 'wa' AND sequence = 2")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer t0ken"}) as http:
        async with http.get(f"{console}/") as reply:
            page = await reply.text()
        async with http.get(f"{console}/api/overview") as reply:
            shown = {s["service"]: s for s in (await reply.json())["services"]}
    assert not shown["wa"]["ok"] and shown["wa"]["first_bad_entry"] == 2
    assert shown["wb"]["ok"] and shown["wc"]["ok"]
    assert "BROKEN" in page and "mallory" not in page


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system Chromium's path (scripts/dev/chromium.sh installs Debian's package where it is missing)."""
    found = subprocess.run([str(ROOT / "scripts/dev/chromium.sh")], capture_output=True, text=True, check=True)
    return found.stdout.strip()


async def test_the_pages_in_headless_chromium(console: str, mesh: dict[str, Any], pki: DevPki,  # noqa: F811
                                              chromium: str) -> None:
    """Debian's Chromium driven by playwright-core: the login, the numbers shown against the API's, a broken
    log shown as broken, the search; screenshots kept in test-artifacts/console (or $PRIVMESH_ARTIFACTS)."""
    shots = Path(os.environ.get("PRIVMESH_ARTIFACTS", ROOT / "test-artifacts")) / "console"
    shots.mkdir(parents=True, exist_ok=True)
    await _work(mesh["wa"], pki, 3)
    await _work(mesh["wb"], pki, 2)
    database = Path(str(mesh["wb"].config.audit.database).removeprefix("sqlite:///"))
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TRIGGER audit_entries_no_delete")
        conn.execute("DELETE FROM audit_entries WHERE chain = 'wb' AND sequence = 1")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer t0ken"}) as http, \
            http.get(f"{console}/api/overview") as reply:
        api = {s["service"]: s for s in (await reply.json())["services"]}
    process = await asyncio.create_subprocess_exec(
        "node", str(ROOT / "tests/runtime/console_browser.mjs"), console, "t0ken", chromium,
        str(shots), spiffe("alice"), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    shown = json.loads(out)
    assert shown["deniedStatus"] == 401 and shown["title"] == "privmesh · Audit logs"
    rows = {row[0]: row for row in shown["services"]}
    assert set(rows) == set(api)
    for name, row in rows.items():
        assert int(row[1]) == api[name]["entries"]
        assert row[6].startswith("BROKEN") == (not api[name]["ok"])
    assert rows["wb"][6].startswith("BROKEN") and rows["wa"][6].startswith("verified")
    assert shown["entries"] and all(spiffe("alice") == e[3] for e in shown["entries"])
    assert shown["count"] == f"{len(shown['entries'])} entries"
    assert (shots / "overview.png").stat().st_size > 0 and (shots / "audit.png").stat().st_size > 0
