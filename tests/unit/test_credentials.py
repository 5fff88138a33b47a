"""API keys: generation, hashing, constant-time matching, rotation."""

from __future__ import annotations

import hashlib

import pytest

from gamify.credentials import (
    KeyRing,
    generate_api_key,
    generate_password,
    hash_api_key,
    key_id,
    parse_key_hashes,
)


def test_keys_are_random_prefixed_and_url_safe() -> None:
    keys = {generate_api_key("acme-2027") for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith("gk_")
        assert len(key) >= 3 + 43  # 32 bytes of base64url
        assert all(c.isalnum() or c in "-_" for c in key)
        assert "acme" not in key


def test_hash_is_sha256_hex() -> None:
    assert hash_api_key("gk_x") == hashlib.sha256(b"gk_x").hexdigest()


def test_keyring_matches_every_active_key_for_rotation() -> None:
    old, new, other = (generate_api_key("p") for _ in range(3))
    ring = KeyRing([hash_api_key(old), hash_api_key(new).upper()])
    assert ring.match(old) == key_id(hash_api_key(old))
    assert ring.match(new) == hash_api_key(new)[:12]
    assert ring.match(other) is None
    assert ring.match("") is None
    assert len(ring) == 2


def test_empty_keyring_matches_nothing() -> None:
    assert KeyRing([]).match(generate_api_key("p")) is None


def test_keyring_refuses_what_is_not_a_hash_without_echoing_it() -> None:
    key = generate_api_key("p")
    with pytest.raises(ValueError) as err:
        KeyRing([key])
    assert key not in str(err.value)


def test_parse_key_hashes_ignores_blanks() -> None:
    a, b = hash_api_key("a"), hash_api_key("b")
    assert parse_key_hashes(f" {a} ,,{b.upper()}, ") == [a, b]
    assert parse_key_hashes("") == []


def test_passwords_are_long_and_url_safe() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(len(p) >= 40 and all(c.isalnum() or c in "-_" for c in p) for p in passwords)
