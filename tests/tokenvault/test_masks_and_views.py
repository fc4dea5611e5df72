"""token-vault's masked view and masking profile never return the value (issue 25), and the plaintext view
needs both the field's detokenize policy and the service policy's ":plaintext" view, named."""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from privmesh.runtime.errors import read_error
from privmesh.tokenvault.masking import Mask, Unmaskable
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from tests.conftest import spiffe
from tests.tokenvault.conftest import TENANT, VaultEnv, create_field, detokenize, reader_policy, tokenize

SHORT = ["4921", "123", "12-34", "7", "ab", "9-9"]


@given(st.text(st.characters(blacklist_characters="*"), min_size=1, max_size=40), st.integers(0, 50),
       st.integers(0, 50), st.booleans(), st.booleans())
def test_a_mask_never_equals_the_value_and_hides_at_least_half(value: str, first: int, last: int,
                                                               separators: bool, email: bool) -> None:
    mask = Mask(first, last, "*", separators, email)
    try:
        masked = mask.apply(value)
    except Unmaskable:
        return
    assert masked != value and len(masked) == len(value)
    local = value[:value.rindex("@")] if email and "@" in value else value
    maskable = sum(1 for c in local if c.isalnum() or not separators) or len(local)
    hidden = masked[:len(local)].count("*")
    assert hidden >= math.ceil(maskable / 2)


def test_short_values_lose_their_leading_characters_first() -> None:
    assert [Mask().apply(v) for v in SHORT] == ["**21", "**3", "**-34", "*", "*b", "*-9"]
    assert Mask(keep_first=2, keep_last=2).apply("123456") == "1***56"
    assert Mask().apply("123-45-6789") == "***-**-6789"  # long enough: unchanged
    assert Mask(keep_email_domain=True).apply("al@example.org") == "*l@example.org"
    assert Mask().apply("--") == "**"  # no letter or digit: masked whole
    with pytest.raises(Unmaskable):
        Mask().apply("***")


async def test_masked_detokenize_of_short_values_is_never_the_value(env: VaultEnv) -> None:
    await create_field(env.alice, "pin", pb.TokenProfile(random=pb.RandomProfile()))
    tokens = await tokenize(env.alice, *[("pin", v) for v in SHORT])
    masked = await detokenize(env.bob, *[("pin", t) for t in tokens], view=pb.DETOKENIZE_VIEW_MASKED)
    assert masked == ["**21", "**3", "**-34", "*", "*b", "*-9"]
    assert not set(masked) & set(SHORT)


async def test_masking_profile_tokens_never_equal_the_value(env: VaultEnv) -> None:
    await create_field(env.alice, "display", pb.TokenProfile(masking=pb.MaskingProfile(keep_last=4)))
    assert await tokenize(env.alice, ("display", "7391"), ("display", "4111111111111111")) == [
        "**91", "************1111"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tokenize(env.alice, ("display", "****"))
    error = read_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in error.violations] == [("items[0].value", "VALUE_UNMASKABLE")]


async def test_plaintext_needs_the_named_view_as_well_as_the_field_policy(env: VaultEnv) -> None:
    # The field's policy gives bob VALUE; the service policy gives bob no ":plaintext" view.
    await create_field(env.alice, "mrn", pb.TokenProfile(random=pb.RandomProfile()),
                       detokenize_policy=reader_policy(([spiffe("alice"), spiffe("bob")], pb.DETOKENIZE_VIEW_VALUE)))
    [token] = await tokenize(env.alice, ("mrn", "MRN-0012345"))
    reply = await env.bob.Detokenize(pb.DetokenizeRequest(parent=TENANT, items=[pb.TokenRef(field="mrn", token=token)]))
    assert [(r.value, r.view) for r in reply.results] == [("***-***2345", pb.DETOKENIZE_VIEW_MASKED)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await detokenize(env.bob, ("mrn", token), view=pb.DETOKENIZE_VIEW_VALUE)
    assert read_error(caught.value).code == grpc.StatusCode.PERMISSION_DENIED
    assert await detokenize(env.alice, ("mrn", token)) == ["MRN-0012345"]  # alice's rule names the view
