"""FF1 against NIST's published sample vectors (SP 800-38G, FF1samples.pdf), and the batched rounds against
value-by-value encryption."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmesh.tokenvault.ff1 import FF1, NARROW_MIN_BATCH, RADIX_10, RADIX_36, RADIX_62, FF1Error, encrypt_strings

K128 = "2B7E151628AED2A6ABF7158809CF4F3C"
K192 = K128 + "EF4359D8D580AA4F"
K256 = K192 + "7F036D6F04FC6A94"
T2, T3 = "39383736353433323130", "3737373770717273373737"
P10, P36 = "0123456789", "0123456789abcdefghi"
NIST_SAMPLES = [  # (sample, key, tweak, plaintext, ciphertext)
    (1, K128, "", P10, "2433477484"), (2, K128, T2, P10, "6124200773"), (3, K128, T3, P36, "a9tv40mll9kdu509eum"),
    (4, K192, "", P10, "2830668132"), (5, K192, T2, P10, "2496655549"), (6, K192, T3, P36, "xbj3kv35jrawxv32ysr"),
    (7, K256, "", P10, "6657667009"), (8, K256, T2, P10, "1001623463"), (9, K256, T3, P36, "xs8a0azh2avyalyzuwd"),
]


@pytest.mark.parametrize(("sample", "key", "tweak", "plain", "cipher"), NIST_SAMPLES, ids=[f"sample{s[0]}"
                                                                                        for s in NIST_SAMPLES])
@pytest.mark.parametrize("copies", [1, NARROW_MIN_BATCH])  # the scalar rounds, and the numpy rounds of a batch
def test_nist_sample_vectors(sample: int, key: str, tweak: str, plain: str, cipher: str, copies: int) -> None:
    alphabet = RADIX_10 if plain == P10 else RADIX_36
    ff1 = FF1(bytes.fromhex(key), alphabet.radix)
    encrypted = encrypt_strings(ff1, alphabet, [plain] * copies, bytes.fromhex(tweak))
    assert encrypted == [cipher] * copies
    assert encrypt_strings(ff1, alphabet, encrypted, bytes.fromhex(tweak), decrypt=True) == [plain] * copies


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([RADIX_10, RADIX_36, RADIX_62]), st.data())
def test_batched_rounds_equal_value_by_value_and_invert(alphabet, data) -> None:  # type: ignore[no-untyped-def]
    ff1 = FF1(secrets.token_bytes(32), alphabet.radix)
    tweak = data.draw(st.binary(max_size=40))
    texts = data.draw(st.lists(st.text(alphabet.characters, min_size=6, max_size=40), min_size=1, max_size=24))
    batched = encrypt_strings(ff1, alphabet, texts, tweak)
    assert batched == [encrypt_strings(ff1, alphabet, [t], tweak)[0] for t in texts]
    assert [len(b) for b in batched] == [len(t) for t in texts]
    assert all(set(b) <= set(alphabet.characters) for b in batched)
    assert encrypt_strings(ff1, alphabet, batched, tweak, decrypt=True) == texts


def test_domain_below_one_million_is_refused() -> None:
    with pytest.raises(FF1Error):
        encrypt_strings(FF1(secrets.token_bytes(32), 10), RADIX_10, ["12345"], b"")
    assert encrypt_strings(FF1(secrets.token_bytes(32), 10), RADIX_10, ["123456"], b"") != [""]


def test_tweak_and_key_change_the_ciphertext() -> None:
    key = secrets.token_bytes(32)
    ff1 = FF1(key, 10)
    values = [f"{n:016d}" for n in range(50)]
    base = encrypt_strings(ff1, RADIX_10, values, b"tenants/a/fields/card")
    assert base != encrypt_strings(ff1, RADIX_10, values, b"tenants/b/fields/card")
    assert base != encrypt_strings(FF1(secrets.token_bytes(32), 10), RADIX_10, values, b"tenants/a/fields/card")
    assert len(set(base)) == len(values)  # a permutation: no two values share a ciphertext
