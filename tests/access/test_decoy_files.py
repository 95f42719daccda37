"""Decoy files parse as the formats they claim to be."""

from __future__ import annotations

import itertools
import json
import os
import struct

import pytest

from proxy.decoys.forge import forge, gguf, safetensors

MiB = 1024 * 1024


def test_a_safetensors_decoy_has_a_valid_header_whose_offsets_cover_the_payload_exactly() -> None:
    data = safetensors(4 * MiB, os.urandom)
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0
    header = json.loads(data[8 : 8 + length])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert "model.layers.0.self_attn.q_proj.weight" in tensors
    spans = sorted(tuple(t["data_offsets"]) for t in tensors.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    for t in tensors.values():
        count = 1
        for dim in t["shape"]:
            count *= dim
        assert t["dtype"] == "BF16" and t["data_offsets"][1] - t["data_offsets"][0] == count * 2
    assert len(data) == 8 + length + spans[-1][1]
    assert 3 * MiB < len(data) <= 5 * MiB


def test_a_gguf_decoy_starts_with_a_valid_v3_header() -> None:
    data = gguf(MiB, os.urandom, name="llama-3-8b")
    magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", data[:24])
    assert (magic, version, n_kv) == (b"GGUF", 3, 3)
    assert n_tensors == 16
    (key_len,) = struct.unpack("<Q", data[24:32])
    assert data[32 : 32 + key_len] == b"general.architecture"


@pytest.mark.parametrize(
    ("key", "kind"), [("m/x.gguf", "gguf"), ("m/model-00001-of-00030.safetensors", "safetensors")]
)
def test_the_format_follows_the_key(key: str, kind: str) -> None:
    assert forge(key, 64 * 1024, os.urandom)[0] == kind
