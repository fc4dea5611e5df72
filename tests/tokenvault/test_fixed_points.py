"""Card tokens never loop: a card number whose free digits FF1 leaves in place (a fixed point, found here by
searching the whole 10^6 domain under a key) gets a deliberately Luhn-invalid token at once, derive stays
injective and never returns its input over a whole domain, and drawn tokens of a shape with few free digits
run out with TOKEN_SPACE_EXHAUSTED instead of redrawing forever. The search makes these tests take seconds."""

from __future__ import annotations

import functools

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmesh.demo.records import _luhn_complete
from privmesh.runtime.errors import read_error
from privmesh.tokenvault import profiles
from privmesh.tokenvault.ff1 import FF1
from privmesh.tokenvault.keyring import context
from privmesh.tokenvault.keys import field_keys
from privmesh.tokenvault.profiles import FieldKeys
from privmesh.tokenvault.shapes import luhn_valid
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from tests.tokenvault.conftest import TENANT, VaultEnv, create_field, detokenize, tokenize

FF1_METHOD, RANDOM = pb.SHAPE_METHOD_FF1, pb.SHAPE_METHOD_RANDOM
BIN = "411111"
CARD_FF1 = pb.TokenProfile(card_number=pb.CardNumberProfile(keep_first_six=True, method=FF1_METHOD))


def fixed_points(keys: FieldKeys, tweak: bytes) -> list[str]:
    """Every 6-digit string that FF1 under the field's token key and tweak maps to itself (the free digits of
    a 13-digit card number with the first six kept), by enciphering the whole domain in one batch."""
    halves = [(a, b) for a in range(1000) for b in range(1000)]
    enciphered = FF1(keys.token_key, 10).encrypt(halves, 6, tweak)
    return [f"{a:03d}{b:03d}" for (a, b), out in zip(halves, enciphered, strict=True) if out == (a, b)]


def card(free: str) -> str:
    return _luhn_complete(BIN + free)


def card_profile(name: str = "tenants/t/fields/card") -> profiles.Profile:
    return profiles.build(CARD_FF1, name)


@pytest.fixture(scope="module")
def keyed_fixed_point() -> tuple[FieldKeys, list[str]]:
    """The first test key (secrets 0x00.., 0x01.., ...) whose FF1 permutation has a fixed point, and that
    points: about 63% of keys have one, so the search ends within a few keys."""
    for seed in range(64):
        keys = field_keys(bytes([seed]) * 32)
        found = fixed_points(keys, b"tenants/t/fields/card")
        if found:
            return keys, found
    raise AssertionError("no test key with a fixed point")


@pytest.mark.timeout(60)
def test_a_fixed_point_card_gets_a_flagged_token_at_once(keyed_fixed_point: tuple[FieldKeys, list[str]]) -> None:
    keys, points = keyed_fixed_point
    free = points[0]
    value = card(free)
    profile = card_profile()
    profile.check(value)
    token = profile.derive([value], keys)[0]
    assert token != value and len(token) == len(value) and token[:6] == BIN
    assert not luhn_valid(token)  # the documented flag: only fixed points get a Luhn-invalid token
    others = [card(f"{n:06d}") for n in range(0, 1_000_000, 9973) if f"{n:06d}" not in points]
    tokens = profile.derive([value, *others, value], keys)
    assert tokens[0] == tokens[-1] == token  # deterministic, in any batch
    assert all(luhn_valid(t) and t != v for t, v in zip(tokens[1:-1], others, strict=True))


@functools.cache
def whole_domain() -> list[str]:
    """Every 13-digit card number of BIN 411111: all 10^6 free-digit strings."""
    return [card(f"{n:06d}") for n in range(1_000_000)]


@pytest.mark.slow
@pytest.mark.timeout(900)
@settings(max_examples=1, deadline=None)  # 10^6 values a key: one random key a run
@given(st.binary(min_size=32, max_size=32))
def test_derive_is_injective_and_never_the_input_on_a_whole_domain(secret: bytes) -> None:
    keys = field_keys(secret)
    values = whole_domain()
    tokens = card_profile().derive(values, keys)
    assert len(set(tokens)) == len(values)
    assert not any(t == v for t, v in zip(tokens, values, strict=True))
    flagged = {v[6:12] for t, v in zip(tokens, values, strict=True) if not luhn_valid(t)}
    assert flagged == set(fixed_points(keys, b"tenants/t/fields/card"))


async def _field_secret(env: VaultEnv, field_id: str) -> FieldKeys:
    """The field's keys, as the vault derives them: its secret unwrapped by key-broker as the vault."""
    row = env.rows("SELECT tenant, secret_wrapped, secret_key FROM tv_fields WHERE field = ?", (field_id,))[0]
    tenant, wrapped, key = row[0], bytes(row[1]), row[2]
    secret = await env.vault_keys.decrypt(wrapped, context(tenant, field_id, "field-secret"), key=key)
    return field_keys(secret)


@pytest.mark.timeout(120)
async def test_tokenize_and_detokenize_of_a_fixed_point_card_terminate(env: VaultEnv) -> None:
    found: tuple[str, str] | None = None
    for attempt in range(12):  # each field has its own key: ~63% have a fixed point
        field_id = f"card{attempt}"
        await create_field(env.alice, field_id, CARD_FF1)
        points = fixed_points(await _field_secret(env, field_id), f"{TENANT}/fields/{field_id}".encode())
        if points:
            found = field_id, card(points[0])
            break
    assert found is not None
    field_id, value = found
    token = (await tokenize(env.alice, (field_id, value)))[0]
    assert token != value and token[:6] == BIN and not luhn_valid(token)
    assert await tokenize(env.alice, (field_id, value)) == [token]  # deterministic
    assert await detokenize(env.alice, (field_id, token)) == [value]


@pytest.mark.timeout(120)
async def test_drawn_tokens_of_a_tiny_shape_run_out_with_a_clear_error(env: VaultEnv) -> None:
    # 12 digits, the first six and the last four kept: one free digit and the fix digit, so 9 tokens.
    await create_field(env.alice, "short", pb.TokenProfile(card_number=pb.CardNumberProfile(
        keep_first_six=True, keep_last_four=True, method=RANDOM)))
    value = next(v for v in (f"{BIN}{d}{f}1111" for d in "0123456789" for f in "0123456789") if luhn_valid(v))
    issued = [(await tokenize(env.alice, ("short", value)))[0] for _ in range(9)]
    assert len(set(issued)) == 9 and value not in issued
    before = env.count()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tokenize(env.alice, ("short", value))
    error = read_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOKEN_SPACE_EXHAUSTED")
    assert env.count() == before
    assert await detokenize(env.alice, *(("short", t) for t in issued)) == [value] * 9
