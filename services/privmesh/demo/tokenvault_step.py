"""Step 1 of the scenario: patient records (synthetic, seeded) are tokenized by token-vault: names, SSNs,
emails, phone and card numbers; the vault's data keys come from key-broker.

The operator creates a key-broker key whose policy lets token-vault generate and unwrap data keys, and the
vault's fields (deterministic names and emails so tokenized tables still join, FF1 SSNs and phones that
keep their shape, card numbers that keep the first six and last four digits and stay Luhn-valid). The demo
client tokenizes the records in batches, writes the tokenized table for dp-gateway (step 2), and may only
see masks when it detokenizes; the operator gets the values back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from privmesh.demo import records
from privmesh.demo.context import CALL_TIMEOUT, DemoContext, expect
from privmesh.keybroker.policy import ADMIN_OPERATIONS, AUDIT_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.runtime.client import secure_channel
from privmesh.sdk.keybroker.client import SERVICES as KEYBROKER_SERVICES
from privmesh.sdk.keybroker.client import KeyBrokerClient, allow
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc

TENANT = "tenants/hospitals"
KEY_ALIAS = "patient-records"
PATIENTS = 600  # enough for dp-gateway's step to give useful answers
BATCH_PATIENTS = 200  # 1000 values per Tokenize request, the vault's default maximum batch
VAULT_OPERATIONS = (kb.KEY_OPERATION_GENERATE_DATA_KEY, kb.KEY_OPERATION_DECRYPT, kb.KEY_OPERATION_RE_ENCRYPT_FROM,
                    kb.KEY_OPERATION_RE_ENCRYPT_TO, kb.KEY_OPERATION_ROTATE)
FF1, DETERMINISTIC = pb.SHAPE_METHOD_FF1, pb.SHAPE_METHOD_DETERMINISTIC
SHREDDED_FIELD = "ssn"  # a key-broker key per patient (crypto-shredding); one field keeps the demo quick
PROFILES = {
    "name": pb.TokenProfile(deterministic=pb.DeterministicProfile(prefix="name_")),
    "ssn": pb.TokenProfile(ssn=pb.SsnProfile(method=FF1)),
    "email": pb.TokenProfile(email=pb.EmailProfile(method=DETERMINISTIC, keep_domain=True)),
    "phone": pb.TokenProfile(phone_number=pb.PhoneNumberProfile(keep_country_code=True, method=FF1)),
    "card_number": pb.TokenProfile(card_number=pb.CardNumberProfile(keep_first_six=True, keep_last_four=True,
                                                                    method=DETERMINISTIC)),
}


def _tokenized(patient: records.Patient, tokens: Sequence[str]) -> records.Patient:
    """The patient with each PROFILES field replaced by its token (all of them are str fields of Patient)."""
    changes: dict[str, Any] = dict(zip(PROFILES, tokens, strict=True))  # field names are data here, not code
    return dataclasses.replace(patient, **changes)


async def _vault_key(ctx: DemoContext) -> str:
    """The key-broker key for patient records, created once (a re-run on the same state finds it)."""
    async with secure_channel(ctx.targets["key-broker"], ctx.layout.identity("admin"), KEYBROKER_SERVICES,
                              timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["key-broker"]) as ch:
        broker = KeyBrokerClient(ch)
        name = f"aliases/{KEY_ALIAS}"
        try:
            await broker.get_key(name)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            policy = kb.KeyPolicy(statements=[
                allow([ctx.layout.pki.spiffe_id("admin")], ADMIN_OPERATIONS, "operator"),
                allow([ctx.layout.pki.spiffe_id("auditor")], AUDIT_OPERATIONS, "auditor-reads"),
                allow([ctx.layout.pki.spiffe_id("token-vault")], VAULT_OPERATIONS, "token-vault")])
            # Data keys may be reused for 5 minutes: the vault encrypts a batch under one key, within these limits.
            caching = kb.DataKeyCaching(max_age=Duration(seconds=300), max_messages=1_000_000)
            await broker.create_key(alias=KEY_ALIAS, description="token-vault: patient records", policy=policy,
                                    caching=caching)
        return name


def _field(key: str, profile: pb.TokenProfile, ctx: DemoContext, shredding: bool) -> pb.Field:
    rules = [pb.DetokenizeRule(principals=[ctx.layout.pki.spiffe_id("admin")], view=pb.DETOKENIZE_VIEW_VALUE),
             pb.DetokenizeRule(principals=[ctx.layout.pki.spiffe_id("demo-client")], view=pb.DETOKENIZE_VIEW_MASKED)]
    return pb.Field(profile=profile, key=key, description="patient records (demo)", subject_key_shredding=shredding,
                    detokenize_policy=pb.DetokenizePolicy(rules=rules))


async def tokenvault_step(ctx: DemoContext) -> None:
    key = await _vault_key(ctx)
    target = ctx.targets["token-vault"]
    services = [pb.DESCRIPTOR.services_by_name["TokenVault"]]
    async with secure_channel(target, ctx.layout.identity("admin"), services,
                              timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["token-vault"]) as admin_channel:
        admin = tokenvault_pb2_grpc.TokenVaultStub(admin_channel)
        for field_id, profile in PROFILES.items():
            try:
                await admin.CreateField(pb.CreateFieldRequest(parent=TENANT, field_id=field_id,
                                                              field=_field(key, profile, ctx,
                                                                           field_id == SHREDDED_FIELD)))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
        ctx.console.print(f"   operator created key {key} in key-broker and fields {', '.join(PROFILES)} "
                          f"in {TENANT}")
        patients = records.patients(PATIENTS)
        items = [pb.TokenizeItem(field=field_id, value=getattr(p, field_id), subject_id=p.patient_id)
                 for p in patients for field_id in PROFILES]
        async with secure_channel(target, ctx.layout.identity("demo-client"), services,
                                  timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["token-vault"]) as client_channel:
            client = tokenvault_pb2_grpc.TokenVaultStub(client_channel)
            step = BATCH_PATIENTS * len(PROFILES)
            tokens: list[str] = []
            for start in range(0, len(items), step):
                reply = await client.Tokenize(pb.TokenizeRequest(parent=TENANT, items=items[start:start + step]))
                tokens.extend(r.token for r in reply.results)
            again = await client.Tokenize(pb.TokenizeRequest(parent=TENANT, items=items[:step]))
            expect([r.token for r in again.results] == tokens[:step], "tokenizing again gave other tokens (no joins)")
            expect(all(t != i.value for t, i in zip(tokens, items, strict=True)), "a token equals its value")
            tokenized = [_tokenized(p, tokens[n * len(PROFILES):(n + 1) * len(PROFILES)])
                         for n, p in enumerate(patients)]
            first, token_row = patients[0], tokenized[0]
            expect(token_row.card_number[:6] == first.card_number[:6]
                   and token_row.card_number[-4:] == first.card_number[-4:], "the card token lost its first 6/last 4")
            expect(len(token_row.ssn) == 11 and token_row.ssn[3] == "-", "the SSN token lost its shape")
            expect(token_row.email.endswith(first.email.split("@")[1]), "the email token lost its domain")
            ctx.console.print(f"   demo-client tokenized {len(items)} values of {PATIENTS} patients in batches of "
                              f"{step}, e.g. SSN {first.ssn} -> {token_row.ssn}, card …{first.card_number[-4:]} -> "
                              f"{token_row.card_number[:6]}…{token_row.card_number[-4:]}")
            masked = await client.Detokenize(pb.DetokenizeRequest(
                parent=TENANT, items=[pb.TokenRef(field="ssn", token=token_row.ssn)], purpose="demo"))
            expect(masked.results[0].view == pb.DETOKENIZE_VIEW_MASKED, "the demo client saw an unmasked value")
            ctx.console.print(f"   demo-client may only see masks: {masked.results[0].value}")
        back = await admin.Detokenize(pb.DetokenizeRequest(
            parent=TENANT, items=[pb.TokenRef(field=f, token=getattr(token_row, f)) for f in PROFILES],
            view=pb.DETOKENIZE_VIEW_VALUE, purpose="demo: operator check"))
        expect([r.value for r in back.results] == [getattr(first, f) for f in PROFILES],
               "the operator did not get the original values back")
        ctx.console.print("   the operator detokenized one record back to its values (audited)")
    path = records.write_csv(ctx.work_dir / "patients_tokenized.csv", tokenized)
    ctx.facts["tokenized_csv"] = str(path)
    ctx.console.print(f"   tokenized records written to {path}")
