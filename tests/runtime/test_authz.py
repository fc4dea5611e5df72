"""Authorization in the runtime: the resource pattern grammar (by segment, views only by name), the declarations
read from the contracts, and their enforcement around handlers that check nothing themselves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from pydantic import BaseModel

from privmesh.dpgateway.v1 import dpgateway_pb2 as dp
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.runtime.access import Declaration, DeclarationError, declaration
from privmesh.runtime.authz import Authorizer, PolicyDocument, PolicyError, Rule
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.patterns import PatternError, ResourcePattern
from privmesh.runtime.pki import DevPki
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition
from tests.conftest import identity, server_config, spiffe

GET_MODEL = "privmesh.fl.v1.FLCoordinator/GetModel"
MODEL = "federations/f1/runs/r1/model"


@pytest.mark.parametrize(("pattern", "resource", "matches"), [
    ("datasets/patients", "datasets/patients", True),
    ("datasets/patients", "datasets/patients2", False),
    ("datasets/*", "datasets/patients", True),
    ("datasets/*", "datasets/a/b", False),  # "*" never crosses "/"
    ("tenants/acme/fields/ssn-*", "tenants/acme/fields/ssn-us", True),
    ("tenants/acme/fields/ssn-*", "tenants/acme/fields/ssn-us/x", False),
    ("federations/*/model", MODEL, False),  # fnmatch's "*" would have crossed three segments
    ("federations/*/runs/*/model", MODEL, True),
    ("federations/f1/**", "federations/f1", True),
    ("federations/f1/**", MODEL, True),
    ("federations/f1/**", "federations/f10/runs/r1", False),
    ("**", MODEL, True),
    ("*", "datasets", True),
    ("*", "datasets/patients", False),
    ("a/**/z", "a/z", True),
    ("a/**/z", "a/b/c/z", True),
    ("a/**/z", "a/b/c/y", False),
    # A view only by name: no wildcard, no "**", no pattern without it grants it.
    ("**", f"{MODEL}:decrypted", False),
    ("*", "x:decrypted", False),
    ("federations/*/runs/*/model", f"{MODEL}:decrypted", False),
    ("federations/f1/**", f"{MODEL}:decrypted", False),
    ("federations/*/runs/*/model:decrypted", f"{MODEL}:decrypted", True),
    ("federations/*/runs/*/model:decrypted", MODEL, False),
    ("datasets/*:analysts", "datasets/hiv:plaintext", False),
    ("datasets/*", "datasets/a:b", False),  # "*" never crosses ":"
])
def test_patterns_match_by_segment_and_views_only_by_name(pattern: str, resource: str, matches: bool) -> None:
    assert ResourcePattern.parse(pattern).matches(resource) is matches


@pytest.mark.parametrize("pattern", ["", "a**", "**b/c", "x:*", "x:", "a:b:c", "x:Decrypted", "a/***"])
def test_patterns_outside_the_grammar_are_refused(pattern: str, tmp_path: Path) -> None:
    with pytest.raises(PatternError):
        ResourcePattern.parse(pattern)
    path = tmp_path / "policy.yaml"
    path.write_text(f"rules: [{{name: r, principals: ['*'], methods: ['*'], resources: ['{pattern}']}}]")
    with pytest.raises(PolicyError, match="resources"):
        Authorizer.from_file(path)


def _authorizer(*resources: str) -> Authorizer:
    rule = Rule(name="r", principals=(spiffe("bob"),), methods=(GET_MODEL,), **({"resources": resources}
                                                                                 if resources else {}))
    return Authorizer(PolicyDocument(rules=(rule,)))


@pytest.mark.parametrize("resources", [(), ("**",), ("federations/f1/**",), ("federations/*/runs/*/*",)])
def test_the_decrypted_model_is_never_granted_by_a_wildcard_or_the_default(resources: tuple[str, ...]) -> None:
    authorizer = _authorizer(*resources)
    assert authorizer.allows(spiffe("bob"), GET_MODEL, MODEL)
    assert not authorizer.allows(spiffe("bob"), GET_MODEL, f"{MODEL}:decrypted")
    named = _authorizer(*resources, "federations/*/runs/*/model:decrypted")
    assert named.allows(spiffe("bob"), GET_MODEL, f"{MODEL}:decrypted")


def test_declarations_expand_templates_conditions_and_repeated_fields() -> None:
    from privmesh.fl.v1 import fl_pb2
    from privmesh.tokenvault.v1 import tokenvault_pb2 as tv

    get_model = declaration(GET_MODEL)
    assert get_model.request_resources(fl_pb2.GetModelRequest(name=MODEL), "me") == [MODEL]
    assert get_model.request_resources(fl_pb2.GetModelRequest(
        name=MODEL, representation=fl_pb2.MODEL_REPRESENTATION_DECRYPTED), "me") == [MODEL, f"{MODEL}:decrypted"]
    detokenize = declaration("privmesh.tokenvault.v1.TokenVault/Detokenize")
    request = tv.DetokenizeRequest(parent="tenants/t", items=[tv.TokenRef(field="a"), tv.TokenRef(field="b")],
                                   view=tv.DETOKENIZE_VIEW_VALUE)
    assert detokenize.request_resources(request, "me") == [
        "tenants/t/fields/a", "tenants/t/fields/b", "tenants/t/fields/a:plaintext", "tenants/t/fields/b:plaintext"]
    budget = declaration("privmesh.dpgateway.v1.DPGateway/GetBudget")
    assert budget.request_resources(dp.GetBudgetRequest(dataset="datasets/d", analyst="me"), "me") == ["datasets/d"]
    assert budget.request_resources(dp.GetBudgetRequest(dataset="datasets/d", analyst="you"), "me") == [
        "datasets/d", "datasets/d:analysts"]
    ledger = declaration("privmesh.dpgateway.v1.DPGateway/ListLedger")
    assert ledger.request_resources(dp.ListLedgerRequest(), "me") == []  # optional: the items are filtered
    assert ledger.item_resources(dp.LedgerEntry(dataset="datasets/d", analyst="you"), "me") == [
        "datasets/d", "datasets/d:analysts"]


def test_a_method_without_a_declaration_is_refused() -> None:
    with pytest.raises(DeclarationError, match="declares no"):
        Declaration.of(health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"])
    with pytest.raises(DeclarationError, match="no such"):
        declaration("privmesh.dpgateway.v1.DPGateway/Nope")


# --- enforcement around handlers that check nothing ---------------------------------------------------------------

class Settings(BaseModel):
    pass


class Careless(dpgateway_pb2_grpc.DPGatewayServicer):
    """Answers without a single check of its own: the runtime must enforce the contract's declaration."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def GetDataset(self, request: dp.GetDatasetRequest, context: Any) -> dp.GetDatasetResponse:
        self.calls.append(request.name)
        return dp.GetDatasetResponse(dataset=dp.Dataset(name=request.name))

    async def ListDatasets(self, request: dp.ListDatasetsRequest, context: Any) -> dp.ListDatasetsResponse:
        return dp.ListDatasetsResponse(datasets=[dp.Dataset(name="datasets/public"), dp.Dataset(name="datasets/hiv")])

    async def QuerySql(self, request: dp.QuerySqlRequest, context: Any) -> dp.QuerySqlResponse:
        return dp.QuerySqlResponse()  # never checks the dataset it would have resolved from the SQL


def careless_definition(servicer: Careless) -> ServiceDefinition:
    async def build(runtime: Runtime, settings: Settings) -> Sequence[Registration]:
        return [Registration("privmesh.dpgateway.v1.DPGateway",
                             lambda s: dpgateway_pb2_grpc.add_DPGatewayServicer_to_server(servicer, s))]

    return ServiceDefinition("careless", "careless.privmesh.dev", Settings, build)


async def test_the_runtime_enforces_declarations_a_handler_ignores(start_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   pki: DevPki) -> None:
    rules = [{"name": "public", "principals": [spiffe("bob")], "methods": ["privmesh.dpgateway.v1.DPGateway/*"],
              "resources": ["datasets/public"]}]
    servicer = Careless()
    server = await start_server(careless_definition(servicer), server_config(tmp_path, pki, rules))
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "bob"), peer=spiffe("server")) as channel:
        stub = dpgateway_pb2_grpc.DPGatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetDataset(dp.GetDatasetRequest(name="datasets/hiv"))
        assert read_error(caught.value).code == grpc.StatusCode.PERMISSION_DENIED and servicer.calls == []
        await stub.GetDataset(dp.GetDatasetRequest(name="datasets/public"))
        assert servicer.calls == ["datasets/public"]
        listed = await stub.ListDatasets(dp.ListDatasetsRequest())
        assert [d.name for d in listed.datasets] == ["datasets/public"]  # the runtime dropped the other
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.QuerySql(dp.QuerySqlRequest(sql="SELECT COUNT(*) FROM hiv"))
        error = read_error(caught.value)
        assert error.code == grpc.StatusCode.INTERNAL and error.reason == "AUTHORIZATION_NOT_APPLIED"


async def test_a_server_with_an_undeclared_method_does_not_start(start_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                 pki: DevPki) -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    async def build(runtime: Runtime, settings: Settings) -> Sequence[Registration]:
        return [Registration("privmesh.testing.v1.Undeclared", lambda s: s.add_registered_method_handlers(
            "privmesh.testing.v1.Undeclared", {"Do": handler}))]

    definition = ServiceDefinition("undeclared", "undeclared.privmesh.dev", Settings, build)
    with pytest.raises(DeclarationError, match="Undeclared/Do"):
        await start_server(definition, server_config(tmp_path, pki, []))
