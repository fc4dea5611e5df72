"""Profiles and shapes on their own: card numbers stay Luhn-valid and never equal their input, shapes and
kept parts survive, masks hide what they should, invalid profiles are named field by field."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmesh.demo.records import _luhn_complete
from privmesh.tokenvault import profiles
from privmesh.tokenvault.keys import field_keys
from privmesh.tokenvault.masking import Mask
from privmesh.tokenvault.shapes import luhn_valid
from privmesh.tokenvault.store import new_entry_ids
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

KEYS = field_keys(secrets.token_bytes(32))
FF1, RANDOM, DETERMINISTIC = pb.SHAPE_METHOD_FF1, pb.SHAPE_METHOD_RANDOM, pb.SHAPE_METHOD_DETERMINISTIC
cards = st.integers(11, 18).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)).map(_luhn_complete)


def build(**kind: object) -> profiles.Profile:
    return profiles.build(pb.TokenProfile(**kind), "tenants/t/fields/f")  # type: ignore[arg-type]


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


@settings(max_examples=60, deadline=None)
@given(cards, st.booleans(), st.sampled_from([FF1, RANDOM, DETERMINISTIC]))
def test_card_tokens_are_luhn_valid_keep_their_parts_and_never_equal_the_input(card: str, keep_last: bool,
                                                                                method: int) -> None:
    profile = build(card_number=pb.CardNumberProfile(keep_first_six=True, keep_last_four=keep_last, method=method))
    if method == FF1 and len(card) - 6 - (4 if keep_last else 0) - 1 < 6:
        with pytest.raises(profiles.Problem) as problem:
            profile.check(card)
        assert problem.value.reason == "DOMAIN_TOO_SMALL"
        return
    profile.check(card)
    token = profile.derive([card], KEYS)[0] if profile.derived else profile.draw(card)
    assert token != card and len(token) == len(card) and luhn_valid(token)
    assert token[:6] == card[:6]
    if keep_last:
        assert token[-4:] == card[-4:]
    if method == FF1:
        assert profile.derive([card], KEYS)[0] == token


def test_card_separators_stay_and_invalid_cards_are_refused() -> None:
    profile = build(card_number=pb.CardNumberProfile(method=FF1))
    token = profile.derive(["4111 1111 1111 1111"], KEYS)[0]
    assert token[4] == token[9] == token[14] == " " and luhn_valid(digits(token))
    for bad in ("4111111111111112", "4111-1111", "4111x111111111111", "41111111111111111111"):
        with pytest.raises(profiles.Problem) as problem:
            profile.check(bad)
        assert problem.value.reason == "VALUE_SHAPE_MISMATCH"


def test_ssn_and_phone_keep_their_shape() -> None:
    ssn = build(ssn=pb.SsnProfile(method=FF1))
    for value in ("123-45-6789", "123456789"):
        token = ssn.derive([value], KEYS)[0]
        assert len(token) == len(value) and [c for c in token if not c.isdigit()] == [c for c in value
                                                                                        if not c.isdigit()]
        assert token != value
    kept = build(ssn=pb.SsnProfile(keep_last_four=True, method=DETERMINISTIC))
    assert kept.draw("123-45-6789").endswith("-6789")
    phone = build(phone_number=pb.PhoneNumberProfile(keep_country_code=True, keep_last_digits=2, method=FF1))
    token = phone.derive(["+44 20 7946 0958"], KEYS)[0]
    assert token.startswith("+44 ") and token.endswith("58") and len(token) == len("+44 20 7946 0958")
    assert phone.derive(["+1-201-555-0123"], KEYS)[0].startswith("+1-")
    with pytest.raises(profiles.Problem):
        phone.check("call me")


def test_email_local_part_is_replaced_and_domain_kept_or_replaced() -> None:
    kept = build(email=pb.EmailProfile(keep_domain=True, method=FF1))
    token = kept.derive(["ada.lovelace@example.org"], KEYS)[0]
    local, domain = token.split("@")
    assert domain == "example.org" and local != "ada.lovelace" and local[3] == "." and len(local) == 12
    replaced = build(email=pb.EmailProfile(method=DETERMINISTIC))
    assert replaced.draw("ada@example.org").endswith("@tokenized.invalid")
    assert len(replaced.draw("ada@example.org").split("@")[0]) == profiles.EMAIL_LOCAL_LENGTH
    # Equal local parts at two domains get different tokens when the domain is replaced.
    ff1 = build(email=pb.EmailProfile(method=FF1))
    assert ff1.derive(["john.doe@a.example"], KEYS) != ff1.derive(["john.doe@b.example"], KEYS)
    with pytest.raises(profiles.Problem) as problem:
        kept.check("not-an-email")
    assert problem.value.reason == "VALUE_SHAPE_MISMATCH"
    with pytest.raises(profiles.Problem) as problem:
        kept.check("ab@example.org")
    assert problem.value.reason == "DOMAIN_TOO_SMALL"


def test_format_preserving_alphabets_and_other_characters() -> None:
    strict = build(format_preserving=pb.FormatPreservingProfile(alphabet=pb.ALPHABET_RADIX_36))
    with pytest.raises(profiles.Problem) as problem:
        strict.check("ABC-defg")
    assert problem.value.reason == "VALUE_ALPHABET_MISMATCH"
    loose = build(format_preserving=pb.FormatPreservingProfile(alphabet=pb.ALPHABET_RADIX_10,
                                                               preserve_other_characters=True))
    token = loose.derive(["12-34-56"], KEYS)[0]
    assert token[2] == token[5] == "-" and token != "12-34-56"
    with pytest.raises(profiles.Problem) as problem:
        loose.check("12-34-5")
    assert problem.value.reason == "DOMAIN_TOO_SMALL"


def test_deterministic_and_random_opaque_tokens() -> None:
    det = build(deterministic=pb.DeterministicProfile(length=20, prefix="d_"))
    assert det.derive(["x"], KEYS) == det.derive(["x"], KEYS) != det.derive(["y"], KEYS)
    assert det.derive(["x"], KEYS) != det.derive(["x"], field_keys(secrets.token_bytes(32)))
    rnd = build(random=pb.RandomProfile(prefix="tok_"))
    assert isinstance(rnd, profiles.RandomProfile)
    ids = new_entry_ids(3)
    tokens = rnd.tokens_for(ids, KEYS)
    assert len(set(tokens)) == 3 and all(t.startswith("tok_") and len(t) == 4 + 22 for t in tokens)
    assert not any(i in t or bytes.fromhex(i).hex() in t for i in ids for t in tokens)  # the id is hidden
    assert rnd.entry_ids(tokens, KEYS) == dict(zip(tokens, ids, strict=True))
    assert rnd.entry_ids(tokens, field_keys(secrets.token_bytes(32))) != dict(zip(tokens, ids, strict=True))


@pytest.mark.parametrize("length", [16, 24, 64])
def test_random_tokens_cannot_be_forged_or_altered(length: int) -> None:
    rnd = build(random=pb.RandomProfile(length=length, prefix="t_"))
    assert isinstance(rnd, profiles.RandomProfile)
    entry_id = new_entry_ids(1)[0]
    token = rnd.tokens_for([entry_id], KEYS)[0]
    assert rnd.entry_ids([token], KEYS) == {token: entry_id}
    body = token[2:]
    # Lengths 16 and 64 end in a character that carries 2 bits: the next one spells the same bytes.
    respelled = "t_" + body[:-1] + (chr(ord(body[-1]) + 1) if length != 24 else "A" if body[-1] != "A" else "B")
    assert respelled != token and respelled not in rnd.entry_ids([respelled], KEYS)
    altered = {respelled, "t_" + body[:5] + ("B" if body[5] != "B" else "C") + body[6:],
               "t_" + body[1:] + "A", "x_" + body, "t_" + body[:-1], "t_" + body + "A", "t_" + "!" + body[1:]}
    found = rnd.entry_ids(sorted(altered), KEYS)
    # Altered tokens either are not in the format, or decrypt to other ids (which name no entry).
    assert entry_id not in found.values()


def test_masks() -> None:
    assert Mask().apply("123-45-6789") == "***-**-6789"
    assert Mask(keep_first=1, keep_last=0, preserve_separators=False).apply("a-bc") == "a***"
    assert Mask(keep_first=1, keep_last=1, keep_email_domain=True).apply("ada.l@example.org") == "a**.l@example.org"
    masking = build(masking=pb.MaskingProfile(keep_last=4, mask_character="#"))
    assert not masking.reversible and masking.draw("4111111111111111") == "############1111"


def test_invalid_profiles_name_each_problem() -> None:
    found = profiles.validate(pb.TokenProfile(random=pb.RandomProfile(length=8, prefix="bad prefix!")))
    assert {v.field for v in found} == {"field.profile.random.length", "field.profile.random.prefix"}
    found = profiles.validate(pb.TokenProfile(card_number=pb.CardNumberProfile(keep_first_six=True,
                                                                               keep_last_four=True, method=FF1)))
    assert [v.field for v in found] == ["field.profile.card_number.method"]
    assert profiles.validate(pb.TokenProfile(ssn=pb.SsnProfile(keep_last_four=True, method=FF1)))
    assert profiles.validate(pb.TokenProfile())[0].field == "field.profile"
    assert profiles.validate(pb.TokenProfile(ssn=pb.SsnProfile(keep_last_four=True, method=DETERMINISTIC))) == []
