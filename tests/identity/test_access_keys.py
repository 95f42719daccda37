"""Access key ids and derived secrets."""

from __future__ import annotations

import re

import pytest

from proxy.identity.keys import derive_secret, is_temporary_key_id, new_access_key_id

SERVER_KEY = b"k" * 32


def test_long_lived_key_id_is_gg_and_18_base32_characters() -> None:
    key_id = new_access_key_id()
    assert re.fullmatch(r"GG[A-Z2-7]{18}", key_id)


def test_long_lived_key_ids_never_look_temporary() -> None:
    # With a uniformly random third character, about 1 in 32 ids would start "GGT".
    ids = [new_access_key_id() for _ in range(3000)]
    assert not any(is_temporary_key_id(i) for i in ids)


def test_temporary_key_id_starts_ggt_and_has_aws_length() -> None:
    key_id = new_access_key_id(temporary=True)
    assert key_id.startswith("GGT")
    assert re.fullmatch(r"GGT[A-Z2-7]{17}", key_id)
    assert is_temporary_key_id(key_id)


def test_key_ids_do_not_repeat() -> None:
    ids = {new_access_key_id() for _ in range(2000)}
    assert len(ids) == 2000


def test_derived_secret_is_stable_and_40_characters() -> None:
    first = derive_secret(SERVER_KEY, "GGAAAAAAAAAAAAAAAAAA")
    assert first == derive_secret(SERVER_KEY, "GGAAAAAAAAAAAAAAAAAA")
    assert len(first) == 40
    assert re.fullmatch(r"[A-Za-z0-9+/]{40}", first)


def test_derived_secret_depends_on_server_key() -> None:
    key_id = "GGAAAAAAAAAAAAAAAAAA"
    assert derive_secret(SERVER_KEY, key_id) != derive_secret(b"j" * 32, key_id)


def test_derived_secret_depends_on_key_id() -> None:
    assert derive_secret(SERVER_KEY, "GGAAAAAAAAAAAAAAAAAA") != derive_secret(
        SERVER_KEY, "GGAAAAAAAAAAAAAAAAAB"
    )


def test_derived_secret_refuses_an_empty_server_key() -> None:
    with pytest.raises(ValueError, match="server key"):
        derive_secret(b"", "GGAAAAAAAAAAAAAAAAAA")
