"""API bearer tokens: format, parsing and constant-time hash comparison."""

from __future__ import annotations

from proxy.identity.tokens import hash_secret, new_token, parse_token, secret_matches


def test_new_tokens_parse_back_to_their_id_and_are_unique() -> None:
    seen = set()
    for _ in range(200):
        token_id, token = new_token()
        parsed = parse_token(token)
        assert parsed is not None and parsed[0] == token_id
        assert token.startswith(f"ggt_{token_id}_")
        seen.add(token)
    assert len(seen) == 200


def test_malformed_tokens_do_not_parse() -> None:
    _, token = new_token()
    for bad in ("", "ggt_", token[:-1], token + "x", token.replace("ggt_", "ggx_"), "Bearer " + token):
        assert parse_token(bad) is None, bad


def test_only_the_right_secret_matches_its_hash() -> None:
    _, token = new_token()
    _, secret = parse_token(token) or ("", "")
    stored = hash_secret(secret)
    assert secret not in stored and len(stored) == 64
    assert secret_matches(secret, stored)
    assert not secret_matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"), stored)
