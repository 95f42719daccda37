"""Decoy weight files (pure): a valid safetensors or GGUF header with plausible tensor names, dtypes,
shapes and offsets, then random bytes for the tensors, all in about `size` bytes.

Real shards weigh gigabytes and S3 stores nothing sparsely, so a decoy is a small but complete model
file: its header parses (a thief's `safetensors`/`gguf` tooling opens it) and its tensors add up to the
payload that follows. What it lacks is only size.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable

# The tensors of one transformer block, as (name, rows-per-hidden, columns-per-hidden) multiples.
_BLOCK = (
    ("self_attn.q_proj.weight", 1, 1),
    ("self_attn.k_proj.weight", 1, 1),
    ("self_attn.v_proj.weight", 1, 1),
    ("self_attn.o_proj.weight", 1, 1),
    ("mlp.gate_proj.weight", 4, 1),
    ("mlp.up_proj.weight", 4, 1),
    ("mlp.down_proj.weight", 1, 4),
)
_BYTES_PER_BLOCK_PER_HIDDEN2 = sum(r * c for _, r, c in _BLOCK) * 2  # 16-bit weights
LAYERS = 2
GGUF_ALIGNMENT = 32
_GGUF_F16 = 1
_GGUF_STRING = 8
_GGUF_UINT32 = 4


def tensors(size: int, layers: int = LAYERS) -> list[tuple[str, tuple[int, int]]]:
    """(name, shape) of `layers` blocks whose 16-bit weights take about `size` bytes."""
    hidden = max(8, int(math.sqrt(size / (layers * _BYTES_PER_BLOCK_PER_HIDDEN2))) // 8 * 8)
    out = []
    for layer in range(layers):
        for name, rows, cols in _BLOCK:
            out.append((f"model.layers.{layer}.{name}", (rows * hidden, cols * hidden)))
        out.append((f"model.layers.{layer}.input_layernorm.weight", (hidden, 1)))
    return out


def safetensors(size: int, noise: Callable[[int], bytes]) -> bytes:
    """A safetensors file: 8-byte little-endian header length, JSON header (padded to 8), tensors."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (rows, cols) in tensors(size):
        shape = [rows] if cols == 1 else [rows, cols]
        length = rows * cols * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + noise(offset)


def gguf(size: int, noise: Callable[[int], bytes], name: str = "llama") -> bytes:
    """A GGUF v3 file: magic, version, counts, metadata, tensor infos, aligned F16 tensor data."""
    infos, offset = [], 0
    for tensor, (rows, cols) in tensors(size):
        dims = [cols, rows] if cols != 1 else [rows]  # GGUF lists the fastest-varying dimension first
        infos.append(
            _string(tensor.replace("model.layers.", "blk."))
            + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", _GGUF_F16, offset)
        )
        length = rows * cols * 2
        offset += length + (-length % GGUF_ALIGNMENT)
    metadata = [
        _string("general.architecture") + struct.pack("<I", _GGUF_STRING) + _string("llama"),
        _string("general.name") + struct.pack("<I", _GGUF_STRING) + _string(name),
        _string("general.alignment") + struct.pack("<II", _GGUF_UINT32, GGUF_ALIGNMENT),
    ]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(metadata)) + b"".join(metadata) + b"".join(infos)
    head += b"\0" * (-len(head) % GGUF_ALIGNMENT)
    return head + noise(offset)


def forge(key: str, size: int, noise: Callable[[int], bytes]) -> tuple[str, bytes]:
    """(format, bytes) of a decoy for `key`: GGUF for `.gguf`, safetensors for anything else."""
    if key.endswith(".gguf"):
        return "gguf", gguf(size, noise, name=key.rsplit("/", 1)[-1].removesuffix(".gguf"))
    return "safetensors", safetensors(size, noise)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data
