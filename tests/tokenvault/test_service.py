"""The token vault over real mTLS with the real key broker: every profile round-trips, deterministic
tokens join, batches are all-or-nothing with per-item errors, request_ids make retries safe, detokenize
policies decide per principal and field, and audit records hold no values or tokens."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from privmesh.runtime.db import Database
from privmesh.runtime.errors import read_error
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from tests.conftest import spiffe
from tests.tokenvault.conftest import TENANT, VaultEnv, create_field, detokenize, field, reader_policy, tokenize

FF1, DETERMINISTIC = pb.SHAPE_METHOD_FF1, pb.SHAPE_METHOD_DETERMINISTIC
PROFILES = {
    "name": pb.TokenProfile(random=pb.RandomProfile(prefix="tok_")),
    "patient": pb.TokenProfile(deterministic=pb.DeterministicProfile(prefix="p_")),
    "account": pb.TokenProfile(format_preserving=pb.FormatPreservingProfile(alphabet=pb.ALPHABET_RADIX_62)),
    "card": pb.TokenProfile(card_number=pb.CardNumberProfile(keep_first_six=True, keep_last_four=True,
                                                             method=DETERMINISTIC)),
    "ssn": pb.TokenProfile(ssn=pb.SsnProfile(method=FF1)),
    "phone": pb.TokenProfile(phone_number=pb.PhoneNumberProfile(keep_country_code=True, method=FF1)),
    "email": pb.TokenProfile(email=pb.EmailProfile(keep_domain=True, method=FF1)),
    "display": pb.TokenProfile(masking=pb.MaskingProfile(keep_last=4)),
}
VALUES = {"name": "Ada Lovelace", "patient": "P000042", "account": "Acct9xZ2Q", "card": "4111111111111111",
          "ssn": "123-45-6789", "phone": "+1-201-555-0123", "email": "ada.lovelace@example.org",
          "display": "4111111111111111"}


async def create_all(env: VaultEnv) -> None:
    for field_id, profile in PROFILES.items():
        await create_field(env.alice, field_id, profile)


async def expect_error(call: object) -> tuple[grpc.StatusCode, object]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    details = read_error(caught.value)
    assert details.domain == "tokenvault.privmesh.dev"
    return details.code, details


def operations(env: VaultEnv) -> list[str]:
    return [op for _, op, _, _, _ in env.audit()]


async def test_every_profile_round_trips_and_masking_is_irreversible(env: VaultEnv) -> None:
    await create_all(env)
    tokens = await tokenize(env.alice, *VALUES.items())
    by_field = dict(zip(VALUES, tokens, strict=True))
    assert all(by_field[f] != VALUES[f] for f in VALUES)
    assert by_field["name"].startswith("tok_") and by_field["patient"].startswith("p_")
    assert by_field["card"][:6] == "411111" and by_field["card"][-4:] == "1111"
    assert by_field["email"].endswith("@example.org") and by_field["phone"].startswith("+1-")
    assert by_field["display"] == "************1111"
    reversible = [f for f in VALUES if f != "display"]
    assert await detokenize(env.alice, *[(f, by_field[f]) for f in reversible]) == [VALUES[f] for f in reversible]
    assert env.count() == len(reversible)  # nothing is stored for the masking field
    code, details = await expect_error(detokenize(env.alice, ("display", by_field["display"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "FIELD_NOT_REVERSIBLE"  # type: ignore[attr-defined]
    # The database holds neither values nor (for keyed look-ups) plaintext-derived indices.
    dump = repr(env.rows("SELECT * FROM tv_entries")) + repr(env.rows("SELECT * FROM tv_data_keys"))
    assert not any(v in dump or v.encode().hex() in dump for v in VALUES.values())


async def test_deterministic_tokens_join_and_tenants_do_not_share_them(env: VaultEnv) -> None:
    await create_all(env)
    first = await tokenize(env.alice, ("patient", "P1"), ("ssn", "123456789"), ("card", "4111111111111111"))
    again = await tokenize(env.alice, ("patient", "P1"), ("ssn", "123456789"), ("card", "4111111111111111"))
    assert first == again
    assert env.count() == 3  # the repeat found its entries: no duplicates
    random_twice = await tokenize(env.alice, ("name", "Ada"), ("name", "Ada"))
    assert random_twice[0] != random_twice[1]
    other = pb.CreateFieldRequest(parent="tenants/globex", field_id="patient",
                                  field=pb.Field(profile=PROFILES["patient"], key="aliases/vault"))
    await env.alice.CreateField(other)
    reply = await env.alice.Tokenize(pb.TokenizeRequest(parent="tenants/globex",
                                                        items=[pb.TokenizeItem(field="patient", value="P1")]))
    assert reply.results[0].token != first[0]


async def test_bad_items_are_reported_by_index_and_nothing_is_written(env: VaultEnv) -> None:
    await create_all(env)
    await create_field(env.alice, "short", pb.TokenProfile(random=pb.RandomProfile()), max_value_length=8,
                       require_subject_id=True, max_ttl=Duration(seconds=60))
    audit_before = len(env.audit())
    items = [pb.TokenizeItem(field="ssn", value="123-45-6789"),  # fine
             pb.TokenizeItem(field="short", value="far too long", subject_id="s"),
             pb.TokenizeItem(field="account", value="abc-def-ghi"),
             pb.TokenizeItem(field="account", value="abc"),
             pb.TokenizeItem(field="ssn", value="12-345-6789"),
             pb.TokenizeItem(field="name", value=""),
             pb.TokenizeItem(field="short", value="ok"),
             pb.TokenizeItem(field="short", value="ok", subject_id="s", ttl=Duration(seconds=61)),
             pb.TokenizeItem(field="nope", value="x")]
    code, details = await expect_error(env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=items)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in details.violations] == [  # type: ignore[attr-defined]
        ("items[1].value", "VALUE_TOO_LONG"), ("items[2].value", "VALUE_ALPHABET_MISMATCH"),
        ("items[3].value", "DOMAIN_TOO_SMALL"), ("items[4].value", "VALUE_SHAPE_MISMATCH"),
        ("items[5].value", "VALUE_EMPTY"), ("items[6].subject_id", "SUBJECT_ID_REQUIRED"),
        ("items[7].ttl", "TTL_TOO_LONG")]
    assert details.reason == "VALUE_TOO_LONG"  # type: ignore[attr-defined]
    assert all("123" not in v.description and "too long" not in v.description
               for v in details.violations)  # type: ignore[attr-defined]
    # Only unknown fields left: NOT_FOUND with the items' indices.
    code, details = await expect_error(env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=[
        pb.TokenizeItem(field="ssn", value="123-45-6789"), pb.TokenizeItem(field="nope", value="x"),
        pb.TokenizeItem(field="NOPE", value="x")])))
    assert code == grpc.StatusCode.NOT_FOUND and details.reason == "FIELD_NOT_FOUND"  # type: ignore[attr-defined]
    assert details.metadata["indices"] == "1,2"  # type: ignore[attr-defined]
    assert env.count() == 0 and env.count("tv_requests") == 0
    assert len(env.audit()) == audit_before
    too_many = [pb.TokenizeItem(field="name", value="x")] * 1001
    code, details = await expect_error(env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=too_many)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "BATCH_TOO_LARGE"  # type: ignore[attr-defined]
    assert details.metadata["max_items"] == "1000"  # type: ignore[attr-defined]
    assert env.count() == 0


async def test_unknown_tokens_are_not_found_by_index_and_nothing_is_audited(env: VaultEnv) -> None:
    await create_all(env)
    [token] = await tokenize(env.alice, ("ssn", "123-45-6789"))
    audit_before = len(env.audit())
    code, details = await expect_error(detokenize(env.alice, ("ssn", token), ("ssn", "000-00-0000"),
                                                  ("name", "tok_unknown")))
    assert code == grpc.StatusCode.NOT_FOUND and details.reason == "TOKEN_NOT_FOUND"  # type: ignore[attr-defined]
    assert details.metadata["indices"] == "1,2"  # type: ignore[attr-defined]
    assert len(env.audit()) == audit_before
    code, details = await expect_error(detokenize(env.alice, ("ssn", "x" * 257)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.violations[0].field == "items[0].token"  # type: ignore[attr-defined]


async def test_request_id_makes_tokenize_retries_safe(env: VaultEnv) -> None:
    await create_all(env)
    items = [("name", "Ada"), ("card", "4111111111111111")]
    first = await tokenize(env.alice, *items, request_id="8a4c2d7e-0000-4000-8000-000000000001")
    retry = await tokenize(env.alice, *items, request_id="8a4c2d7e-0000-4000-8000-000000000001")
    assert retry == first and env.count() == 2  # the random token too: no second write
    code, details = await expect_error(tokenize(env.alice, ("name", "Bob"),
                                                request_id="8a4c2d7e-0000-4000-8000-000000000001"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "REQUEST_ID_CONFLICT"  # type: ignore[attr-defined]
    assert env.count() == 2


async def test_detokenize_policy_per_principal_and_field_with_audit(env: VaultEnv) -> None:
    await create_all(env)
    await create_field(env.alice, "secret", pb.TokenProfile(random=pb.RandomProfile()),
                       detokenize_policy=reader_policy(([spiffe("alice")], pb.DETOKENIZE_VIEW_VALUE)))
    ssn, secret = await tokenize(env.alice, ("ssn", "123-45-6789"), ("secret", "s3cr3t-value"))
    masked = await env.bob.Detokenize(pb.DetokenizeRequest(parent=TENANT, items=[pb.TokenRef(field="ssn", token=ssn)],
                                                           purpose="billing"))
    assert [(r.value, r.view) for r in masked.results] == [("***-**-6789", pb.DETOKENIZE_VIEW_MASKED)]
    # The service policy grants bob no ":plaintext" view: refused before the field's own policy is read.
    code, details = await expect_error(detokenize(env.bob, ("ssn", ssn), view=pb.DETOKENIZE_VIEW_VALUE))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "PERMISSION_DENIED_BY_POLICY"  # type: ignore[attr-defined]
    code, details = await expect_error(detokenize(env.bob, ("ssn", ssn), ("secret", secret)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details.metadata["fields"] == "secret"  # type: ignore[attr-defined]
    assert await detokenize(env.alice, ("ssn", ssn), view=pb.DETOKENIZE_VIEW_MASKED) == ["***-**-6789"]
    assert await detokenize(env.alice, ("secret", secret)) == ["s3cr3t-value"]
    records = [(who, outcome, d) for who, op, _, outcome, d in env.audit() if op == "Detokenize"]
    assert [(who, outcome, d.get("fields") or d["reason"], d.get("count")) for who, outcome, d in records] == [
        (spiffe("bob"), "SUCCESS", "ssn", "1"), (spiffe("bob"), "DENIED", "PERMISSION_DENIED_BY_POLICY", None),
        (spiffe("bob"), "DENIED", "secret,ssn", "2"), (spiffe("alice"), "SUCCESS", "ssn", "1"),
        (spiffe("alice"), "SUCCESS", "secret", "1")]
    assert records[0][2]["purpose"] == "billing"
    text = env.audit_text()
    assert not any(secretish in text for secretish in (ssn, secret, "123-45-6789", "s3cr3t-value", "6789"))


async def test_a_repeated_detokenize_is_audited_as_a_replay(env: VaultEnv) -> None:
    await create_all(env)
    [token] = await tokenize(env.alice, ("name", "Ada"))
    request = pb.DetokenizeRequest(parent=TENANT, items=[pb.TokenRef(field="name", token=token)],
                                   request_id="d2f1e1a0-0000-4000-8000-000000000002")
    first = await env.alice.Detokenize(request)
    again = await env.alice.Detokenize(request)
    assert first == again and first.results[0].value == "Ada"
    disclosures = [details for _, op, _, outcome, details in env.audit() if op == "Detokenize"]
    assert [d.get("replay") for d in disclosures] == [None, "true"]  # the plaintext was shown twice


async def test_ttl_expiry_and_deterministic_expiry_keeps_the_later(env: VaultEnv) -> None:
    await create_all(env)
    short = pb.TokenizeItem(field="patient", value="P7", ttl=Duration(nanos=300_000_000))
    reply = await env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=[short]))
    token = reply.results[0].token
    assert reply.results[0].HasField("expire_time")
    longer = pb.TokenizeItem(field="patient", value="P7", ttl=Duration(seconds=3600))
    again = await env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=[longer]))
    assert again.results[0].token == token
    assert again.results[0].expire_time.ToSeconds() > reply.results[0].expire_time.ToSeconds() + 3000
    brief = await env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=[
        pb.TokenizeItem(field="name", value="gone soon", ttl=Duration(nanos=200_000_000)),
        pb.TokenizeItem(field="name", value="stays")]))
    assert brief.results[0].HasField("expire_time") and not brief.results[1].HasField("expire_time")
    await asyncio.sleep(0.4)
    kept = await detokenize(env.alice, ("patient", token), ("name", brief.results[1].token))
    assert kept == ["P7", "stays"]  # P7's entry was extended
    code, details = await expect_error(detokenize(env.alice, ("name", brief.results[0].token)))
    assert code == grpc.StatusCode.NOT_FOUND and details.reason == "TOKEN_NOT_FOUND"  # type: ignore[attr-defined]
    code, details = await expect_error(env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=[
        pb.TokenizeItem(field="name", value="x", ttl=Duration(seconds=-1))])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "TTL_INVALID"  # type: ignore[attr-defined]


async def test_delete_tokens_and_forget_subject_with_key_shredding(env: VaultEnv) -> None:
    await create_field(env.alice, "ssn", PROFILES["ssn"], subject_key_shredding=True)
    await create_field(env.alice, "name", PROFILES["name"])
    items = [pb.TokenizeItem(field="ssn", value="123-45-6789", subject_id="patient-1"),
             pb.TokenizeItem(field="ssn", value="123-45-6789", subject_id="patient-2"),
             pb.TokenizeItem(field="name", value="Ada", subject_id="patient-1"),
             pb.TokenizeItem(field="name", value="Bea", subject_id="patient-2")]
    shared, shared_again, ada, bea = await tokenize(env.alice, *items)
    assert shared == shared_again and env.count() == 4
    subject_keys = env.rows("SELECT COUNT(*) FROM tv_data_keys WHERE field = 'ssn'")[0][0]
    assert subject_keys == 2  # one data key per subject in the shredding field
    forgot = await env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT, subject_id="patient-1"))
    assert forgot.deleted_count == 2 and dict(forgot.deleted_by_field) == {"ssn": 1, "name": 1}
    # The subject's KEK waits out key-broker's deletion period (7 days by default): scheduled, not destroyed.
    [deletion] = forgot.subject_key_deletions
    assert not forgot.subject_key_destroyed and deletion.field == "ssn"
    assert deletion.deletion_time.ToSeconds() - forgot.forget_time.ToSeconds() in range(7 * 86400 - 60, 7 * 86400 + 1)
    assert env.rows("SELECT COUNT(*) FROM tv_data_keys WHERE field = 'ssn'")[0][0] == 1
    # The shared deterministic token stays detokenizable through the other subject's entry.
    assert await detokenize(env.alice, ("ssn", shared), ("name", bea)) == ["123-45-6789", "Bea"]
    code, _ = await expect_error(detokenize(env.alice, ("name", ada)))
    assert code == grpc.StatusCode.NOT_FOUND
    again = await env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT, subject_id="patient-1"))
    assert again.deleted_count == 0 and not again.subject_key_destroyed
    deleted = await env.alice.DeleteTokens(pb.DeleteTokensRequest(parent=TENANT, items=[
        pb.TokenRef(field="name", token=bea), pb.TokenRef(field="name", token=ada)]))
    assert deleted.deleted_count == 1 and env.count() == 1
    records = [(op, d) for _, op, _, _, d in env.audit() if op in ("ForgetSubject", "SubjectForgotten",
                                                                   "DeleteTokens")]
    assert [op for op, _ in records] == ["ForgetSubject", "SubjectForgotten", "ForgetSubject", "SubjectForgotten",
                                         "DeleteTokens"]
    assert records[1][1]["count"] == "2" and records[4][1]["count"] == "2"
    assert "patient-1" not in env.audit_text() and bea not in env.audit_text()
    code, details = await expect_error(env.alice.ForgetSubject(pb.ForgetSubjectRequest(parent=TENANT)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.violations[0].field == "subject_id"  # type: ignore[attr-defined]


async def test_field_management(env: VaultEnv) -> None:
    created = await create_field(env.alice, "ssn", PROFILES["ssn"], description="v1")
    assert created.name == f"{TENANT}/fields/ssn" and created.etag
    code, details = await expect_error(create_field(env.alice, "ssn", PROFILES["ssn"]))
    assert code == grpc.StatusCode.ALREADY_EXISTS and details.reason == "FIELD_ALREADY_EXISTS"  # type: ignore[attr-defined]
    code, details = await expect_error(create_field(env.alice, "bad", pb.TokenProfile(
        card_number=pb.CardNumberProfile(keep_first_six=True, keep_last_four=True, method=FF1))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "PROFILE_INVALID"  # type: ignore[attr-defined]
    assert details.violations[0].field == "field.profile.card_number.method"  # type: ignore[attr-defined]
    update = pb.UpdateFieldRequest(field=pb.Field(name=created.name, description="v2"),
                                   update_mask={"paths": ["description"]}, etag=created.etag)
    updated = (await env.alice.UpdateField(update)).field
    assert updated.description == "v2" and updated.etag != created.etag and updated.profile == created.profile
    code, details = await expect_error(env.alice.UpdateField(update))  # stale etag
    assert code == grpc.StatusCode.ABORTED and details.reason == "ETAG_MISMATCH"  # type: ignore[attr-defined]
    code, details = await expect_error(env.alice.UpdateField(pb.UpdateFieldRequest(
        field=pb.Field(name=created.name), update_mask={"paths": ["profile"]})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "FIELD_IMMUTABLE"  # type: ignore[attr-defined]
    await create_field(env.alice, "name", PROFILES["name"])
    listed = await env.alice.ListFields(pb.ListFieldsRequest(parent=TENANT, page_size=1))
    assert [f.name for f in listed.fields] == [f"{TENANT}/fields/name"] and listed.next_page_token
    await tokenize(env.alice, ("ssn", "123-45-6789"))
    code, details = await expect_error(env.alice.DeleteField(pb.DeleteFieldRequest(name=created.name)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details.reason == "FIELD_HAS_TOKENS"  # type: ignore[attr-defined]
    assert env.count() == 1
    deleted = await env.alice.DeleteField(pb.DeleteFieldRequest(name=created.name, force=True))
    assert deleted.deleted_count == 1 and env.count() == 0 and env.count("tv_data_keys") == 0


async def test_runtime_policy_limits_principals_to_their_resources(env: VaultEnv) -> None:
    await create_all(env)
    code, _ = await expect_error(env.bob.CreateField(pb.CreateFieldRequest(parent=TENANT, field_id="x",
                                                                           field=pb.Field(profile=PROFILES["name"]))))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await expect_error(env.bob.Tokenize(pb.TokenizeRequest(parent="tenants/globex", items=[
        pb.TokenizeItem(field="name", value="x")])))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert env.count() == 0


async def test_key_broker_refusal_fails_closed(env: VaultEnv) -> None:
    code, details = await expect_error(env.alice.CreateField(pb.CreateFieldRequest(
        parent=TENANT, field_id="ssn", field=pb.Field(profile=PROFILES["ssn"], key="aliases/unknown"))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details.reason == "KEY_BROKER_REFUSED"  # type: ignore[attr-defined]
    assert env.count("tv_fields") == 0


async def test_an_expired_deterministic_entry_is_replaced_when_tokenized_again(env: VaultEnv) -> None:
    await create_all(env)
    short = pb.TokenizeItem(field="card", value="4111111111111111", ttl=Duration(nanos=200_000_000))
    [first] = (await env.alice.Tokenize(pb.TokenizeRequest(parent=TENANT, items=[short]))).results
    await asyncio.sleep(0.3)
    code, _ = await expect_error(detokenize(env.alice, ("card", first.token)))
    assert code == grpc.StatusCode.NOT_FOUND
    [again] = await tokenize(env.alice, ("card", "4111111111111111"))
    assert env.count() == 1  # the expired entry was replaced, not kept beside the new one
    assert await detokenize(env.alice, ("card", again)) == ["4111111111111111"]


async def test_random_tokens_name_their_entry_and_resist_forgery(env: VaultEnv) -> None:
    await create_all(env)
    await create_field(env.alice, "alias", PROFILES["name"])  # same prefix, another field key
    ada, bea = await tokenize(env.alice, ("name", "Ada"), ("name", "Bea"))
    assert env.rows("SELECT token FROM tv_entries WHERE field = 'name'") == [("",), ("",)]  # nothing to index
    assert await detokenize(env.alice, ("name", ada), ("name", bea)) == ["Ada", "Bea"]
    body = ada[4:]
    flipped = body[:7] + ("A" if body[7] != "A" else "B") + body[8:]
    respelled = body[:-1] + chr(ord(body[-1]) + 1)  # the same bytes, non-canonically spelt
    before = env.count()
    code, details = await expect_error(detokenize(env.alice, ("name", ada), ("name", "tok_" + flipped),
                                                  ("name", "tok_" + respelled), ("alias", ada)))
    assert code == grpc.StatusCode.NOT_FOUND and details.metadata["indices"] == "1,2,3"  # type: ignore[attr-defined]
    globex = pb.CreateFieldRequest(parent="tenants/globex", field_id="name", field=field(PROFILES["name"]))
    await env.alice.CreateField(globex)
    code, _ = await expect_error(env.alice.Detokenize(pb.DetokenizeRequest(
        parent="tenants/globex", items=[pb.TokenRef(field="name", token=ada)], purpose="test")))
    assert code == grpc.StatusCode.NOT_FOUND
    deleted = await env.alice.DeleteTokens(pb.DeleteTokensRequest(parent=TENANT, items=[
        pb.TokenRef(field="alias", token=ada), pb.TokenRef(field="name", token="tok_" + flipped)]))
    assert deleted.deleted_count == 0 and env.count() == before


async def test_random_tokens_drawn_before_migration_4_still_work(env: VaultEnv) -> None:
    """Rows written by the earlier format hold their drawn token; it is found through the token index."""
    await create_all(env)
    await tokenize(env.alice, ("name", "Ada"))  # a call each: Ada's entry id sorts first
    [bea] = await tokenize(env.alice, ("name", "Bea"))
    old_ada, old_bea = "tok_" + secrets.token_urlsafe(16), "tok_" + secrets.token_urlsafe(16)
    db = Database(env.database)
    try:
        with db.transaction() as cur:
            for old in (old_ada, old_bea):
                cur.execute("UPDATE tv_entries SET token = ? WHERE id IN (SELECT id FROM tv_entries WHERE field = "
                            "'name' AND token = '' ORDER BY id LIMIT 1)", (old,))
    finally:
        db.close()
    assert await detokenize(env.alice, ("name", old_bea), ("name", old_ada), ("name", bea)) == ["Bea", "Ada", "Bea"]
    deleted = await env.alice.DeleteTokens(pb.DeleteTokensRequest(parent=TENANT, items=[
        pb.TokenRef(field="name", token=old_ada), pb.TokenRef(field="name", token=bea)]))
    assert deleted.deleted_count == 2 and env.count() == 0
    code, _ = await expect_error(detokenize(env.alice, ("name", old_ada)))
    assert code == grpc.StatusCode.NOT_FOUND
