"""dp-gateway authorization by resource (issue 25): the ledger and budgets of a dataset the caller's rules do not
cover, and other analysts' entries without the ":analysts" view, stay hidden, filtered before paging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from privmesh.dpgateway.server import DEFINITION
from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe
from tests.dpgateway.conftest import ADMIN, ANALYST, OTHER, SERVICE, count_query, patients_dataset, rho

PUBLIC, HIV = "datasets/public_stats", "datasets/hiv_registry"
RULES: list[dict[str, Any]] = [
    {"name": "admin", "principals": [spiffe(ADMIN)], "methods": [f"{SERVICE}/*"]},
    {"name": "admin-ledger", "principals": [spiffe(ADMIN)], "methods": [f"{SERVICE}/ListLedger"],
     "resources": ["datasets/*:analysts"]},
    {"name": "public-only", "principals": [spiffe(ANALYST)],
     "methods": [f"{SERVICE}/ListLedger", f"{SERVICE}/GetBudget", f"{SERVICE}/Query"], "resources": [PUBLIC]},
    {"name": "colleague", "principals": [spiffe(OTHER)], "methods": [f"{SERVICE}/Query"]},
]


@pytest.fixture
async def gateway(pki: DevPki, carol: DevPki, start_server, tmp_path: Path, patients_csv: Path):  # type: ignore[no-untyped-def]
    settings = {"database": f"sqlite:///{tmp_path / 'dpgateway.db'}", "cache_dir": str(tmp_path / "cache")}
    server = await start_server(DEFINITION, server_config(tmp_path, pki, RULES, settings))
    target = f"127.0.0.1:{server.port}"
    server_id = spiffe("server")
    async with secure_channel(target, identity(pki, ADMIN), peer=server_id) as admin_ch, \
            secure_channel(target, identity(pki, ANALYST), peer=server_id) as bob_ch, \
            secure_channel(target, identity(pki, OTHER), peer=server_id) as carol_ch:
        admin, bob, colleague = (dpgateway_pb2_grpc.DPGatewayStub(c) for c in (admin_ch, bob_ch, carol_ch))
        for name in (PUBLIC, HIV):
            await admin.RegisterDataset(pb.RegisterDatasetRequest(dataset_id=name.split("/")[1],
                                                                  dataset=patients_dataset(str(patients_csv))))
            for analyst in (ANALYST, OTHER):
                await admin.SetBudget(pb.SetBudgetRequest(dataset=name, analyst=spiffe(analyst),
                                                          cap=pb.PrivacyLoss(rho=5.0)))
        await colleague.Query(pb.QueryRequest(query=count_query(HIV), privacy=rho(0.1)))
        await colleague.Query(pb.QueryRequest(query=count_query(PUBLIC), privacy=rho(0.1)))
        await bob.Query(pb.QueryRequest(query=count_query(PUBLIC), privacy=rho(0.1)))
        yield admin, bob


async def _denied(call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert read_error(caught.value).code == grpc.StatusCode.PERMISSION_DENIED


async def test_list_ledger_shows_only_the_covered_dataset_and_the_callers_own_entries(gateway: Any) -> None:
    admin, bob = gateway
    everything = (await admin.ListLedger(pb.ListLedgerRequest(page_size=1000))).entries
    assert {e.dataset for e in everything} == {PUBLIC, HIV} and len(everything) == 7
    seen = (await bob.ListLedger(pb.ListLedgerRequest(page_size=1000))).entries
    assert [(e.dataset, e.analyst, e.kind) for e in seen] == [
        (PUBLIC, spiffe(ANALYST), pb.LEDGER_ENTRY_KIND_CAP_SET), (PUBLIC, spiffe(ANALYST), pb.LEDGER_ENTRY_KIND_SPEND)]
    text = b"".join(e.SerializeToString() for e in seen)
    assert b"hiv_registry" not in text and spiffe(OTHER).encode() not in text
    await _denied(bob.ListLedger(pb.ListLedgerRequest(dataset=HIV)))
    await _denied(bob.ListLedger(pb.ListLedgerRequest(dataset=PUBLIC, analyst=spiffe(OTHER))))


async def test_list_ledger_pages_over_visible_entries_only(gateway: Any) -> None:
    _, bob = gateway
    pages, token = [], ""
    while True:
        page = await bob.ListLedger(pb.ListLedgerRequest(page_size=1, page_token=token))
        assert len(page.entries) == 1  # filtered before paging: no empty page, no page of someone else's
        pages.append(page.entries[0])
        token = page.next_page_token
        if not token:
            break
    assert [e.analyst for e in pages] == [spiffe(ANALYST)] * 2


async def test_get_budget_needs_the_dataset_and_the_analysts_view(gateway: Any) -> None:
    admin, bob = gateway
    own = (await bob.GetBudget(pb.GetBudgetRequest(dataset=PUBLIC))).budget
    assert own.analyst == spiffe(ANALYST)
    await _denied(bob.GetBudget(pb.GetBudgetRequest(dataset=HIV)))
    await _denied(bob.GetBudget(pb.GetBudgetRequest(dataset=PUBLIC, analyst=spiffe(OTHER))))
    # The administrator may call SetBudget on every dataset, and has the ":analysts" view for ListLedger only:
    # neither grants it for GetBudget.
    await _denied(admin.GetBudget(pb.GetBudgetRequest(dataset=PUBLIC, analyst=spiffe(OTHER))))
